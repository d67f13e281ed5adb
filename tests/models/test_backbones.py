"""Modern timm backbones as the encoder: CNNs (NCHW maps), Swin and MambaOut (channels-last NHWC maps), plain ViTs
(a DPT pyramid of four blocks; DINOv2-style register tokens), at input sizes that are not multiples of the stride,
for the TSN (forward, backward, all tasks at once = one at a time) and the baselines; local pretrained weights, the
fast offline refusal, backbone options and layer-wise learning-rate decay. Random weights (``pretrained=False``),
tiny inputs, narrow decoders, shallow transformers: no download, a few seconds each.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import timm
import torch
import torch.nn.functional as F

from error_model import assert_close_float32, network_reductions
from tsn.errors import TsnError
from tsn.models import backbone as backbone_module
from tsn.models import create_model
from tsn.models.backbone import (
    check_pretrained_reachable,
    create_encoder,
    encoder_feature_info,
    encoder_input_multiple,
    encoder_layer_ids,
    encoder_output_format,
)
from tsn.models.pyramid import ViTPyramid, pyramid_blocks

TASKS = ("semseg", "normals", "edges")
TINY_VIT = {"depth": 4, "embed_dim": 64, "num_heads": 2}  # timm's ViT takes its width and depth as arguments

# id -> (timm backbone, its options, feature format timm declares, input multiple it needs, narrowest decoder)
BACKBONES: dict[str, tuple[str, dict[str, Any], str, tuple[int, int], tuple[int, ...]]] = {
    "resnet10t": ("resnet10t", {}, "NCHW", (1, 1), (64, 32, 32, 16, 16)),
    "convnext_atto": ("convnext_atto", {}, "NCHW", (1, 1), (32, 16, 16, 16)),
    # timm's own feature class, no output_fmt
    "mobilenetv3_small_050": ("mobilenetv3_small_050", {}, "NCHW", (1, 1), (32, 16, 16, 16, 16)),
    # window attention on 4x4 patches; two blocks per stage instead of (2, 2, 6, 2)
    "swin": ("swin_tiny_patch4_window7_224", {"depths": (1, 1, 1, 1), "embed_dim": 48}, "NHWC", (4, 4),
             (32, 16, 16, 16)),
    "mambaout_femto": ("mambaout_femto", {}, "NHWC", (1, 1), (32, 16, 16, 16)),
    # plain ViTs: the pyramid makes their one stride four (4/8/16/32 for patch 16, 3.5/7/14/28 for patch 14)
    "vit": ("vit_tiny_patch16_224", TINY_VIT, "NCHW", (16, 16), (32, 16, 16, 16)),
    "dinov2_reg": ("vit_small_patch14_reg4_dinov2", TINY_VIT, "NCHW", (14, 14), (32, 16, 16, 16)),
}
SIZES = [(64, 64), (100, 75), (64, 65), (67, 90)]  # the smallest is 2x the stride; three are not multiples of 32 or 4


def _model(arch: str, key: str, tasks: tuple[str, ...] = TASKS) -> torch.nn.Module:
    backbone, options, _, _, channels = BACKBONES[key]
    model = create_model("tsn_r10t_synthetic", arch=arch, backbone=backbone, backbone_options=options, tasks=tasks,
                         decoder_channels=channels)
    model.key = key
    return model


@pytest.fixture(scope="module", params=sorted(BACKBONES))
def tsn(request: pytest.FixtureRequest) -> torch.nn.Module:
    torch.manual_seed(0)
    return _model("tsn", request.param)


def test_feature_format_and_input_multiple_come_from_timm(tsn) -> None:
    _, _, output_format, multiple, _ = BACKBONES[tsn.key]
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
            assert_close_float32(output, alone[task], reduction=reduction, what=f"{tsn.key} {task}")


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


@pytest.mark.parametrize("key", ["swin", "vit"])
def test_float32_speed_options_keep_the_outputs(key: str) -> None:
    """channels_last inputs and the fused decoder blocks on a channels-last (NHWC) and a ViT encoder."""
    from tsn.inference.speed import SpeedOptions, optimize, prepare

    torch.manual_seed(0)
    model = _model("tsn", key).eval()
    image = torch.randn(1, 3, 67, 90, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = model(image)
    options = SpeedOptions(channels_last=True, fused=True)
    fast = optimize(model, options)
    with torch.no_grad():
        outputs = fast(prepare(image, options))
    for task, output in outputs.items():
        assert_close_float32(output, reference[task], reduction=network_reductions(model), what=f"{key} {task}")


@pytest.mark.parametrize("backbone", ["swin", "mambaout_femto", "dinov2_reg"])
@pytest.mark.parametrize("arch", ["single_task", "multi_head"])
def test_baselines_take_channels_last_and_vit_backbones_at_odd_sizes(arch: str, backbone: str) -> None:
    tasks = TASKS[:1] if arch == "single_task" else TASKS[:2]
    model = _model(arch, backbone, tasks).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 100, 75), list(tasks))
    assert {task: tuple(out.shape) for task, out in outputs.items()} == {
        task: (1, model.task_specs[task].channels, 100, 75) for task in tasks
    }


# ------------------------------------------------------------------------------------------------ ViT pyramid
def test_plain_vit_gets_a_four_level_pyramid_from_evenly_spaced_blocks() -> None:
    assert pyramid_blocks(12) == (2, 5, 8, 11)  # DPT's blocks for ViT-B
    assert pyramid_blocks(24) == (5, 11, 17, 23) and pyramid_blocks(2) == (0, 0, 1, 1)
    for key, patch in (("vit", 16), ("dinov2_reg", 14)):
        backbone, options = BACKBONES[key][:2]
        encoder = create_encoder(backbone, options=options)
        assert isinstance(encoder, ViTPyramid) and encoder.blocks == (0, 1, 2, 3)
        info = encoder_feature_info(encoder)
        assert info.reduction() == [patch / 4, patch / 2, patch, 2 * patch]
        assert info.channels() == [8, 16, 32, 64]  # the embedding width / 8, 4, 2, 1 (DPT's for ViT-B)
        # Prefix tokens (class, 4 registers) are dropped by timm: the maps are the patch grid, resampled.
        maps = encoder(torch.randn(1, 3, 5 * patch, 3 * patch))
        assert [tuple(m.shape[-2:]) for m in maps] == [(20, 12), (10, 6), (5, 3), (3, 2)]
    assert not isinstance(create_encoder("swin_tiny_patch4_window7_224", options=BACKBONES["swin"][1]), ViTPyramid)


@pytest.mark.parametrize("key", ["vit", "dinov2_reg"])
def test_patch_padding_is_cropped_back_at_odd_sizes(key: str) -> None:
    """At a size that is not a multiple of the patch, the output is the top-left of the padded image's output:
    the padding is at the bottom and right only, and the crop keeps every pixel where it was."""
    torch.manual_seed(0)
    model = _model("tsn", key).eval()
    multiple = model.input_multiple
    for height, width in ((67, 90), (60, 71)):
        image = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(height))
        padded = F.pad(image, (0, -width % multiple[1], 0, -height % multiple[0]))
        with torch.no_grad():
            odd, whole = model(image, "semseg"), model(padded, "semseg")
        assert odd.shape[-2:] == (height, width) and whole.shape[-2:] == padded.shape[-2:]
        torch.testing.assert_close(odd, whole[..., :height, :width], rtol=0, atol=0)


def test_a_preset_with_fixed_decoder_widths_on_another_backbone_says_what_to_pass() -> None:
    with pytest.raises(TsnError, match=r"5 widths but the encoder gives 4 .*decoder_channels=\[32, 32, 16, 16\]"):
        create_model("tsn_r10t_synthetic", backbone="convnext_atto")
    model = create_model("tsn_r10t_synthetic", backbone="convnext_atto", decoder_channels=None)
    assert len(model.decoder.laterals) == 4


# ------------------------------------------------------------------------------------------------ weights
def _same_weights(encoder: torch.nn.Module, reference: dict[str, torch.Tensor], prefix: str = "") -> int:
    """How many encoder tensors equal the reference model's tensor of the same name (without ``prefix``)."""
    same = 0
    for name, value in encoder.state_dict().items():
        key = name.removeprefix(prefix)
        if key in reference:
            assert torch.equal(value, reference[key]), name
            same += 1
    return same


@pytest.mark.parametrize(("backbone", "options", "prefix"), [
    ("resnet10t", {}, ""),
    ("vit_tiny_patch16_224", TINY_VIT, "vit.model."),
])
def test_pretrained_file_loads_a_local_state_dict(tmp_path, backbone: str, options: dict, prefix: str) -> None:
    torch.manual_seed(1)
    full = timm.create_model(backbone, **options)
    torch.save(full.state_dict(), tmp_path / "weights.pth")
    torch.manual_seed(2)  # a different random initialisation: only the file can make the weights equal
    model = create_model("tsn_r10t_synthetic", backbone=backbone, backbone_options=options, decoder_channels=None,
                         pretrained_file=str(tmp_path / "weights.pth"))
    same = _same_weights(model.encoder, full.state_dict(), prefix)
    assert same >= 0.9 * len([k for k in model.encoder.state_dict() if not k.startswith(("project", "resample"))])
    with pytest.raises(TsnError, match=r"model\.pretrained_file .* is not a file"):
        create_encoder(backbone, pretrained_file=str(tmp_path / "missing.pth"))


def test_no_network_and_no_cached_weights_is_one_line_in_a_second(monkeypatch, tmp_path) -> None:
    import huggingface_hub

    probed: list[str] = []
    monkeypatch.setattr(backbone_module, "can_reach", lambda host, *args, **kwargs: probed.append(host) or False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *args, **kwargs: None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(timm, "create_model", lambda *args, **kwargs: pytest.fail("timm must not be asked"))
    start = time.perf_counter()
    with pytest.raises(TsnError, match=r"not in the local cache and huggingface\.co cannot be reached"):
        create_model("tsn_dinov2s_pascal", pretrained=True)
    assert time.perf_counter() - start < 1.0 and probed == ["huggingface.co"]
    # Cached weights: no probe at all, timm loads them from the cache.
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *args, **kwargs: str(tmp_path / "w"))
    check_pretrained_reachable("convnext_tiny.fb_in1k")
    assert probed == ["huggingface.co"]


# ------------------------------------------------------------------------------------------------ recipes
def test_backbone_options_reach_timm_and_bad_ones_are_one_line() -> None:
    encoder = create_encoder("convnext_atto", options={"drop_path_rate": 0.1})
    rates = [m.drop_prob for m in encoder.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.1)
    with pytest.raises(TsnError, match=r"does not take model\.backbone_options"):
        create_encoder("resnet10t", options={"no_such_option": 1})
    with pytest.raises(TsnError, match="features_only is set by tsn"):
        create_model("tsn_r10t_synthetic", backbone_options={"features_only": False})


@pytest.mark.parametrize("key", ["vit", "convnext_atto", "swin"])
def test_layer_decay_gives_each_encoder_block_its_own_rate(key: str) -> None:
    from tsn.training.optim import _parameter_groups

    model = _model("tsn", key)
    ids, layers = encoder_layer_ids(model.encoder)
    names = [name for name, _ in model.encoder.named_parameters()]
    assert ids[names[0]] == 0 and max(ids.values()) == layers - 1
    depths = [ids[name] for name in names if ".blocks." in name or name.startswith(("blocks", "vit.model.blocks"))]
    assert depths == sorted(depths) and len(set(depths)) >= 4  # one id per block, in the order they run
    groups = _parameter_groups(model, lr=1e-3, encoder_lr=1e-4, layer_decay=0.5)
    encoder_groups = [g for g in groups if g["name"].startswith("encoder.")]
    assert encoder_groups[-1]["lr"] == pytest.approx(1e-4)  # the deepest block trains at the encoder's rate
    assert encoder_groups[0]["lr"] == pytest.approx(1e-4 * 0.5 ** (layers - 1))
    assert groups[-1]["name"] == "decoder" and groups[-1]["lr"] == 1e-3
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # every parameter, once


# ------------------------------------------------------------------------------------------------ train CLI
# (ONNX export of these backbones: tests/perf/test_onnx_export_patch.py)
def test_train_takes_a_local_weights_file_and_the_recipe_options(capsys) -> None:
    from tsn.cli import main

    assert main(["train", "--config", "tsn_dinov2s_pascal", "--pretrained-file", "/data/dinov2_vits14.pth",
                 "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "pretrained_file: /data/dinov2_vits14.pth" in printed and "layer_decay: 0.75" in printed
    assert "drop_path_rate: 0.1" in printed
