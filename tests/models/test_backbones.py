"""Modern timm backbones as the encoder: CNNs (NCHW maps), Swin and MambaOut (channels-last NHWC maps), at input
sizes that are not multiples of the stride, for the TSN (forward, backward, all tasks at once = one at a time) and
the baselines. Random weights (``pretrained=False``), tiny inputs, narrow decoders: no download, a few seconds each.
"""

from __future__ import annotations

import pytest
import torch

from error_model import assert_close_float32, network_reductions
from tsn.models import create_model
from tsn.models.backbone import encoder_input_multiple, encoder_output_format

TASKS = ("semseg", "normals", "edges")

# backbone -> (feature format timm declares, input multiple it needs, narrowest decoder: one width per level)
BACKBONES = {
    "resnet10t": ("NCHW", (1, 1), (64, 32, 32, 16, 16)),
    "convnext_atto": ("NCHW", (1, 1), (32, 16, 16, 16)),
    "mobilenetv3_small_050": ("NCHW", (1, 1), (32, 16, 16, 16, 16)),  # timm's own feature class, no output_fmt
    "swin_tiny_patch4_window7_224": ("NHWC", (4, 4), (32, 16, 16, 16)),  # window attention on 4x4 patches
    "mambaout_femto": ("NHWC", (1, 1), (32, 16, 16, 16)),
}
SIZES = [(64, 64), (100, 75), (64, 65), (67, 90)]  # the smallest is 2x the stride; three are not multiples of 32 or 4


def _model(arch: str, backbone: str, tasks: tuple[str, ...] = TASKS) -> torch.nn.Module:
    channels = BACKBONES[backbone][2]
    return create_model("tsn_r10t_synthetic", arch=arch, backbone=backbone, tasks=tasks, decoder_channels=channels)


@pytest.fixture(scope="module", params=sorted(BACKBONES))
def tsn(request: pytest.FixtureRequest) -> torch.nn.Module:
    torch.manual_seed(0)
    return _model("tsn", request.param)


def test_feature_format_and_input_multiple_come_from_timm(tsn) -> None:
    output_format, multiple, _ = BACKBONES[tsn.config.backbone]
    assert encoder_output_format(tsn.encoder) == output_format
    assert encoder_input_multiple(tsn.encoder) == multiple == tsn.input_multiple


def test_tsn_all_tasks_at_once_equal_one_at_a_time_at_any_size(tsn) -> None:
    tsn.eval()
    reduction = network_reductions(tsn)
    for height, width in SIZES:
        image = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height * width))
        with torch.no_grad():
            together, alone = tsn(image), tsn.forward_per_task(image)
        assert list(together) == list(TASKS)
        for task, output in together.items():
            assert output.shape == (2, tsn.task_specs[task].channels, height, width)
            assert torch.isfinite(output).all()
            assert_close_float32(output, alone[task], reduction=reduction, what=f"{tsn.config.backbone} {task}")


def test_tsn_gradients_reach_the_whole_encoder(tsn) -> None:
    tsn.train()
    tsn.zero_grad()
    image = torch.randn(1, 3, 64, 65, generator=torch.Generator().manual_seed(1))
    sum(output.square().mean() for output in tsn(image).values()).backward()  # type: ignore[union-attr]
    # Every parameter is on the gradient's path (some get exact zeros: timm zero-initialises the last norm of
    # each residual block, which blocks the branch until it learns), and the stem, the farthest, gets a signal.
    parameters = list(tsn.encoder.named_parameters())
    missing = [name for name, p in parameters if p.grad is None]
    assert not missing, f"{tsn.config.backbone}: no gradient for {missing[:5]}"
    stem_name, stem = parameters[0]
    assert stem.grad is not None and stem.grad.abs().sum() > 0, f"{tsn.config.backbone}: zero gradient at {stem_name}"


@pytest.mark.parametrize("backbone", ["swin_tiny_patch4_window7_224", "mambaout_femto"])
@pytest.mark.parametrize("arch", ["single_task", "multi_head"])
def test_baselines_take_channels_last_backbones_at_odd_sizes(arch: str, backbone: str) -> None:
    tasks = TASKS[:1] if arch == "single_task" else TASKS[:2]
    model = _model(arch, backbone, tasks).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 100, 75), list(tasks))
    assert {task: tuple(out.shape) for task, out in outputs.items()} == {
        task: (1, model.task_specs[task].channels, 100, 75) for task in tasks
    }
