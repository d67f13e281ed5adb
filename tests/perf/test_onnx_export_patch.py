"""ONNX export of a TSN on a backbone that pads its input to whole patches: a DINOv2-style ViT with register
tokens (patch 14) and a Swin (patch 4, 7 x 7 shifted windows). One file runs in onnxruntime at any size, whole
patches / windows or not, within the float32 error model of PyTorch; Swin V2's window blocks are refused.

The models are tiny (random weights, a few blocks of width 32, a narrow decoder) so that the one export of each,
shared by the module, stays short on a 2-core VM.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch

from error_model import assert_close_float32, network_reductions
from tsn.errors import TsnError
from tsn.inference.export import _probe_sizes, _trace_size, _traceable_swin, export_onnx
from tsn.models import create_model
from tsn.models.backbone import create_encoder

# id -> (timm backbone, its options, decoder widths, attention blocks, tokens one attends to: a window's, or None
# for every patch plus the class token and 4 registers)
FAMILIES: dict[str, tuple[str, dict[str, Any], tuple[int, ...], int, int | None]] = {
    "dinov2_reg": ("vit_small_patch14_reg4_dinov2", {"depth": 3, "embed_dim": 32, "num_heads": 2},
                   (32, 16, 16, 16), 3, None),
    # two stages; the second's second block is the shifted one (its attention mask is made for each size)
    "swin": ("swin_tiny_patch4_window7_224", {"depths": (1, 2), "embed_dim": 32, "num_heads": (2, 2)},
             (16, 16), 3, 7 * 7),
}
TASKS = ("semseg", "normals", "edges")


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    backbone, options, decoder, _, _ = FAMILIES[request.param]
    torch.manual_seed(0)
    model = create_model("tsn_r10t_synthetic", backbone=backbone, backbone_options=options, tasks=TASKS,
                         decoder_channels=decoder).eval()
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    report = export_onnx(model, path, verify_size=64)
    return request.param, model, path, report


def test_trace_and_probe_sizes_are_not_whole_patches() -> None:
    """The trace pads (a size that is whole patches pads nothing, which the tracer could take for a fact); the
    probes cover a padded odd size and the same size padded to whole patches."""
    assert _trace_size((1, 1)) == (64, 64)
    for patch in (4, 14, 16):
        height, width = _trace_size((patch, patch))
        assert height % patch and width % patch and height != width and min(height, width) > 7 * 32
    assert _probe_sizes(64, (14, 14)) == [(64, 64), (65, 67), (70, 70)]
    assert _probe_sizes(64, (1, 1)) == [(64, 64), (65, 67)]


def test_swin_rewritten_for_export_is_timm_swin_bit_for_bit() -> None:
    """The export's rewrite of timm's window attention and patch merging computes the same values: equal outputs
    at grids that need window padding and odd patch merging (17 x 18 patches) and that do not (14 x 14)."""
    backbone, options = FAMILIES["swin"][:2]
    torch.manual_seed(0)
    encoder = create_encoder(backbone, options=options).eval()
    rewritten = copy.deepcopy(encoder)
    _traceable_swin(rewritten)
    assert any(type(m).__name__ == "SwinTransformerBlock" and "_attn" in vars(m) for m in rewritten.modules())
    for height, width in ((68, 72), (56, 56), (36, 100)):  # whole patches of 4: encode pads to them
        image = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height + width))
        with torch.no_grad():
            for timm_map, our_map in zip(encoder(image), rewritten(image), strict=True):
                assert torch.equal(timm_map, our_map)


def test_export_verified_every_task(exported) -> None:
    _, model, _, report = exported
    assert report.inputs == ["image", "task"] and report.outputs == ["output"]
    assert set(report.max_abs_diff) == set(model.tasks) and max(report.max_abs_diff.values()) <= 1e-4


@pytest.mark.parametrize("height, width", [(65, 67), (84, 56), (33, 100), (100, 75)])
def test_any_size_runs_in_onnxruntime_as_in_pytorch(exported, height: int, width: int) -> None:
    """Sizes that are whole patches of 14 and 4 (84 x 56) and not (the others, padded by the model and cropped
    back; the Swin's second stage needs window padding at every size here): every task in one mixed batch,
    within the float32 error model (both sides float32: sides=2). Attention adds two reductions per block: over
    the head width and over the tokens it attends to (all of them for the ViT, a 7 x 7 window for the Swin)."""
    key, model, path, _ = exported
    _, _, _, blocks, window = FAMILIES[key]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(height * 1000 + width))
    with torch.no_grad():
        expected = model(image)
    tasks = np.arange(len(expected), dtype=np.int64)
    (output,) = session.run(None, {"image": image.repeat(len(tasks), 1, 1, 1).numpy(), "task": tasks})
    widest = max(spec.channels for spec in model.task_specs.values())
    assert output.shape == (len(tasks), widest, height, width)
    patch = model.input_multiple[0]
    tokens = window or math.ceil(height / patch) * math.ceil(width / patch) + 5
    reduction = network_reductions(model) + [height * width] + [tokens, 64] * blocks  # 64: widest stage
    for index, (task, reference) in enumerate(expected.items()):
        channels = reference.shape[1]
        assert_close_float32(output[index : index + 1, :channels], reference, reduction=reduction,
                             what=f"{key} {task} {height}x{width}")
        assert not output[index, channels:].any()


def test_swin_v2_windows_are_refused_in_one_line(tmp_path) -> None:
    model = create_model("tsn_r10t_synthetic", backbone="swinv2_cr_tiny_ns_224", decoder_channels=None,
                         backbone_options={"depths": (1, 1, 1, 1), "embed_dim": 48})
    start = time.perf_counter()
    with pytest.raises(TsnError, match=r"shifted-window attention blocks \(SwinTransformerV2CrBlock\)") as error:
        export_onnx(model, tmp_path / "swinv2.onnx")
    assert len(str(error.value).splitlines()) == 1
    assert time.perf_counter() - start < 1.0 and not (tmp_path / "swinv2.onnx").exists()
