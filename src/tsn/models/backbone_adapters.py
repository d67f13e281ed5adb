"""Backbone adapters: the code that one family of timm backbones needs, looked up instead of hard-wired.

Most timm backbones work as they are (:func:`tsn.models.backbone.create_encoder`). Some need something of their
own; each such need is one :class:`BackboneAdapter`, registered by name, that says from the ``features_only``
model itself whether it applies (timm's ``feature_info``, its module classes, ``pretrained_cfg``), never from a
list of model names. Four are built in, applied in this order:

* ``vit_pyramid``: a plain ViT (every level at one stride) is wrapped in :class:`~tsn.models.pyramid.ViTPyramid`,
  four levels at 1/4 to 2 patch sizes;
* ``patch_grid``: a timm patch embedding that needs whole patches (Swin, ViT with ``dynamic_img_size``) makes the
  input a multiple of its patch size;
* ``window_grid``: window and grid attention whose window must divide the feature map (timm's MaxViT / MaxxViT
  family) makes the input a multiple of each stage's reduction times its window;
* ``swin_export``: timm's Swin blocks are rewritten for ``torch.export`` on the export's copy of a model
  (:mod:`tsn.models.swin_export`), and shifted-window blocks it cannot rewrite (Swin V2) are refused.

An input multiple is met by padding the image at the bottom and right and cropping the outputs back
(:func:`tsn.models.backbone.encode`, :func:`~tsn.models.backbone.crop`), so every pixel keeps its own prediction
at every size. A user's adapter is a subclass with a ``name``, registered with :func:`register_backbone_adapter`
(docs/extending.md); adapters registered later apply after the built-in ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, TypeVar

from torch import nn

from tsn.errors import TsnError
from tsn.utils.registry import Registry

__all__ = [
    "BackboneAdapter",
    "BACKBONE_ADAPTERS",
    "register_backbone_adapter",
    "get_backbone_adapter",
    "matching_adapters",
    "adapt_encoder",
    "adapters_input_multiple",
    "export_refusal",
    "prepare_for_export",
]


class BackboneAdapter:
    """What one family of backbones needs; every method but :meth:`matches` defaults to "nothing".

    ``encoder`` is the timm ``features_only`` model at :meth:`adapt`, and the model's encoder (after every
    adapter's :meth:`adapt`) at the other methods.
    """

    name: ClassVar[str] = ""
    """The adapter's registry name (a Python identifier)."""

    def matches(self, encoder: nn.Module) -> bool:
        """Whether the adapter applies to ``encoder``."""
        raise NotImplementedError

    def adapt(self, encoder: nn.Module) -> nn.Module:
        """The encoder the models use: ``encoder`` itself, or a module wrapping it that returns the feature maps
        and carries a timm ``feature_info``."""
        return encoder

    def input_multiple(self, encoder: nn.Module) -> tuple[int, int]:
        """Height and width multiples the encoder's input must have (the image is padded to them)."""
        return 1, 1

    def export_refusal(self, encoder: nn.Module) -> str | None:
        """Why a model with this encoder cannot be exported to ONNX (None: it can), checked before any work."""
        return None

    def prepare_export(self, model: nn.Module) -> None:
        """Rewrite the export's own copy of a model, in place, so that ``torch.export`` traces it."""


BACKBONE_ADAPTERS: Registry[BackboneAdapter] = Registry(
    "backbone adapter", "register one with tsn.register_backbone_adapter in a plugin: tsn --plugin MODULE"
)
"""Every backbone adapter by name, in the order they apply."""

_A = TypeVar("_A", bound="BackboneAdapter | type[BackboneAdapter]")


def register_backbone_adapter(adapter: _A) -> _A:
    """Register a :class:`BackboneAdapter` (an instance, or a subclass, which is instantiated without arguments:
    then usable as a class decorator) under its ``name``; returns what it was given. A name already taken, or
    something that is not an adapter, is refused in one line."""
    instance = adapter() if isinstance(adapter, type) and issubclass(adapter, BackboneAdapter) else adapter
    if not isinstance(instance, BackboneAdapter):
        raise TsnError(f"register_backbone_adapter takes a tsn.models.backbone_adapters.BackboneAdapter (a subclass "
                       f"or an instance), got {adapter!r}")
    if type(instance).matches is BackboneAdapter.matches:
        raise TsnError(f"backbone adapter {type(instance).__name__} must define matches(encoder)")
    BACKBONE_ADAPTERS.register(instance.name, instance)
    return adapter


def get_backbone_adapter(name: str) -> BackboneAdapter:
    """The adapter registered as ``name`` (one-line :class:`TsnError` listing the known ones otherwise)."""
    return BACKBONE_ADAPTERS.lookup(name)


def matching_adapters(encoder: nn.Module) -> list[BackboneAdapter]:
    """The registered adapters that apply to ``encoder``, in registration order."""
    return [adapter for adapter in BACKBONE_ADAPTERS.values() if adapter.matches(encoder)]


def adapt_encoder(encoder: nn.Module) -> nn.Module:
    """``encoder`` after the :meth:`~BackboneAdapter.adapt` of every adapter that applies (each sees the result
    of the ones before)."""
    for adapter in list(BACKBONE_ADAPTERS.values()):
        if adapter.matches(encoder):
            encoder = adapter.adapt(encoder)
    return encoder


def adapters_input_multiple(encoder: nn.Module) -> tuple[int, int]:
    """The least common multiple of the input multiples of every adapter that applies; (1, 1) when none does."""
    height, width = 1, 1
    for adapter in matching_adapters(encoder):
        multiple = adapter.input_multiple(encoder)
        height, width = math.lcm(height, int(multiple[0])), math.lcm(width, int(multiple[1]))
    return height, width


def export_refusal(encoder: nn.Module) -> str | None:
    """The first reason an applying adapter gives why ``encoder`` cannot be exported; None when none does."""
    return next((reason for adapter in matching_adapters(encoder) if (reason := adapter.export_refusal(encoder))),
                None)


def prepare_for_export(model: nn.Module) -> None:
    """Every applying adapter's :meth:`~BackboneAdapter.prepare_export` on the export's copy of ``model``."""
    encoder = model.get_submodule("encoder")
    for adapter in matching_adapters(encoder):
        adapter.prepare_export(model)


# ------------------------------------------------------------------------------------------- built-in adapters


@register_backbone_adapter
class ViTPyramidAdapter(BackboneAdapter):
    """Plain ViTs get a four-level DPT-style pyramid (:mod:`tsn.models.pyramid`)."""

    name = "vit_pyramid"

    def matches(self, encoder: nn.Module) -> bool:
        from tsn.models.pyramid import is_plain_vit

        return is_plain_vit(encoder)

    def adapt(self, encoder: nn.Module) -> nn.Module:
        from tsn.models.pyramid import ViTPyramid

        return ViTPyramid(encoder)


def _patch_embeds(encoder: nn.Module) -> list[nn.Module]:
    """timm patch embeddings that need whole patches (built for a size, without ``dynamic_img_pad``)."""
    from timm.layers import PatchEmbed

    return [module for module in encoder.modules()
            if isinstance(module, PatchEmbed) and module.img_size is not None and not module.dynamic_img_pad]


@register_backbone_adapter
class PatchGridAdapter(BackboneAdapter):
    """A patch embedding takes whole patches: the input is a multiple of the patch size."""

    name = "patch_grid"

    def matches(self, encoder: nn.Module) -> bool:
        return bool(_patch_embeds(encoder))

    def input_multiple(self, encoder: nn.Module) -> tuple[int, int]:
        height, width = 1, 1
        for module in _patch_embeds(encoder):
            patch = getattr(module, "patch_size")  # noqa: B009 - nn.Module's typed __getattr__ says Tensor | Module
            height, width = math.lcm(height, int(patch[0])), math.lcm(width, int(patch[1]))
        return height, width


def _partition_size(module: nn.Module) -> tuple[int, int] | None:
    """The window (or grid) of a timm window / grid attention module whose window must divide its map (timm's
    ``maxxvit`` partition attention keeps it in ``partition_size``); None for other modules."""
    size = getattr(module, "partition_size", None)
    if isinstance(size, Sequence) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        return int(size[0]), int(size[1])
    return None


def _level_reductions(encoder: nn.Module) -> list[tuple[str, int]]:
    """``(module name, reduction)`` of each feature level timm describes, with the names both as timm gives them
    (``stages.0``) and as its feature wrappers flatten them (``stages_0``)."""
    info = getattr(encoder, "feature_info", None)
    levels = []
    for level in getattr(info, "info", None) or []:
        name, reduction = str(level.get("module", "")), level.get("reduction")
        if name and isinstance(reduction, int):
            levels += [(name, reduction), (name.replace(".", "_"), reduction)]
    return levels


@register_backbone_adapter
class WindowGridAdapter(BackboneAdapter):
    """Window / grid attention whose window must divide the feature map (MaxViT): the input is a multiple of
    each such module's window times the reduction of the stage it works in (the stage's level in timm's
    ``feature_info``; the deepest reduction for a module outside every level, which can only pad more)."""

    name = "window_grid"

    def matches(self, encoder: nn.Module) -> bool:
        return any(_partition_size(module) is not None for module in encoder.modules())

    def input_multiple(self, encoder: nn.Module) -> tuple[int, int]:
        levels = _level_reductions(encoder)
        deepest = max((reduction for _, reduction in levels), default=1)
        height, width = 1, 1
        for name, module in encoder.named_modules():
            window = _partition_size(module)
            if window is None:
                continue
            reduction = next((r for level, r in levels if name == level or name.startswith(f"{level}.")), deepest)
            height, width = math.lcm(height, reduction * window[0]), math.lcm(width, reduction * window[1])
        return height, width


@register_backbone_adapter
class SwinExportAdapter(BackboneAdapter):
    """Shifted-window attention: timm's Swin blocks are rewritten for ``torch.export``; others are refused."""

    name = "swin_export"

    def matches(self, encoder: nn.Module) -> bool:
        return any(hasattr(module, "window_size") and hasattr(module, "shift_size") for module in encoder.modules())

    def export_refusal(self, encoder: nn.Module) -> str | None:
        from tsn.models.swin_export import untraceable_windows

        unsupported = untraceable_windows(encoder)
        if not unsupported:
            return None
        return (f"shifted-window attention blocks ({unsupported}) whose padding to whole windows torch.export "
                "cannot trace for a dynamic image size (docs/backbones.md); only timm's Swin (swin_*) blocks are "
                "rewritten for export: export a Swin, ConvNeXt, MambaOut, ResNet or plain ViT / DINOv2 backbone, "
                "or serve this one with PyTorch")

    def prepare_export(self, model: nn.Module) -> None:
        from tsn.models.swin_export import traceable_swin

        traceable_swin(model)
