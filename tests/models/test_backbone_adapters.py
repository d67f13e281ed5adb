"""Backbone adapters (tsn.models.backbone_adapters): which built-in adapter applies to which backbone, windowed
backbones (MaxViT) padded to whole windows at any size, and a user's adapter combined with the built-in ones.

timm's ``test_maxvit`` (random weights, 1 M parameters, windows of 5 at strides 4 to 32) stands for the MaxViT
family: its window and grid attention need feature maps that are whole windows, so timm alone fails at 97 x 131.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from tsn.errors import TsnError
from tsn.models import create_model
from tsn.models.backbone import create_encoder, encoder_feature_info, encoder_input_multiple
from tsn.models.backbone_adapters import (
    BACKBONE_ADAPTERS,
    BackboneAdapter,
    get_backbone_adapter,
    matching_adapters,
    register_backbone_adapter,
)

MAXVIT = "test_maxvit"
TASKS = ("semseg", "normals")


@pytest.fixture
def adapters_restored() -> Iterator[None]:
    saved = dict(BACKBONE_ADAPTERS)
    yield
    BACKBONE_ADAPTERS.clear()
    BACKBONE_ADAPTERS.update(saved)


def test_built_in_adapters_in_order() -> None:
    assert list(BACKBONE_ADAPTERS)[:4] == ["vit_pyramid", "patch_grid", "window_grid", "swin_export"]
    assert get_backbone_adapter("window_grid").name == "window_grid"
    with pytest.raises(TsnError, match="unknown backbone adapter 'maxvit'; known: vit_pyramid, patch_grid"):
        get_backbone_adapter("maxvit")


@pytest.mark.parametrize(
    "backbone, options, names",
    [
        ("resnet10t", {}, []),
        ("vit_tiny_patch16_224", {"depth": 4, "embed_dim": 32, "num_heads": 2}, ["patch_grid"]),  # in the pyramid
        ("swin_tiny_patch4_window7_224", {"depths": (1, 1, 1, 1), "embed_dim": 24}, ["patch_grid", "swin_export"]),
        (MAXVIT, {}, ["window_grid"]),
    ],
)
def test_which_adapters_apply(backbone: str, options: dict, names: list[str]) -> None:
    encoder = create_encoder(backbone, options=options)
    assert [adapter.name for adapter in matching_adapters(encoder)] == names


def test_a_maxvit_tsn_runs_at_97_by_131() -> None:
    """The window multiple is a stage's reduction times its window (32 x 5 = 160 for the deepest stage); the image
    is padded at the bottom and right, and the outputs are the top-left of the padded image's, pixel for pixel."""
    encoder = timm.create_model(MAXVIT, pretrained=False, features_only=True)
    with pytest.raises(RuntimeError):  # what the adapter is for: timm's MaxViT alone refuses the size
        encoder(torch.randn(1, 3, 97, 131))

    torch.manual_seed(0)
    model = create_model("tsn_r10t_synthetic", backbone=MAXVIT, tasks=TASKS, decoder_channels=(32, 16, 16, 16, 16))
    model.eval()
    assert model.input_multiple == (160, 160)
    image = torch.randn(1, 3, 97, 131, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outputs = model(image)
        odd, whole = model(image, "semseg"), model(F.pad(image, (0, 160 - 131, 0, 160 - 97)), "semseg")
    assert {task: tuple(out.shape) for task, out in outputs.items()} == {"semseg": (1, 7, 97, 131),
                                                                         "normals": (1, 3, 97, 131)}
    assert all(torch.isfinite(out).all() for out in outputs.values())
    torch.testing.assert_close(odd, whole[..., :97, :131], rtol=0, atol=0)


def test_window_multiples_follow_each_stage(adapters_restored: None) -> None:
    """Windows that differ by stage: each stage asks for its own reduction x window, combined by lcm."""
    encoder = timm.create_model(MAXVIT, pretrained=False, features_only=True)
    for name, module in encoder.named_modules():
        if name.startswith("stages_0.") and hasattr(module, "partition_size"):
            module.partition_size = (3, 3)  # stage 0 works at stride 4: multiple 12; the deepest asks 32 x 5
    assert encoder_input_multiple(encoder) == (480, 480)


def test_a_users_adapter_combines_with_the_built_in_ones(adapters_restored: None) -> None:
    calls: list[str] = []

    @register_backbone_adapter
    class TwentyFour(BackboneAdapter):
        name = "twenty_four"

        def matches(self, encoder: nn.Module) -> bool:
            return max(encoder_feature_info(encoder).reduction()) == 32

        def adapt(self, encoder: nn.Module) -> nn.Module:
            calls.append(type(encoder).__name__)
            return encoder

        def input_multiple(self, encoder: nn.Module) -> tuple[int, int]:
            return 24, 1

    model = create_model("tsn_r10t_synthetic", backbone=MAXVIT, tasks=TASKS, decoder_channels=(32, 16, 16, 16, 16))
    assert calls == ["FeatureListNet"] and model.input_multiple == (480, 160)  # lcm(160, 24), lcm(160, 1)
    assert create_model("tsn_r10t_synthetic", tasks=TASKS).input_multiple == (24, 1)  # resnet10t: only the user's
    with pytest.raises(TsnError, match="backbone adapter 'twenty_four' is already registered"):
        register_backbone_adapter(TwentyFour())
