"""Encoder: any timm backbone created with ``features_only=True``, and the U-Net decoder shared by all models.

The decoder takes NCHW feature maps of any size. CNNs give those for any input size; transformers and MambaOut
may give channels-last (NHWC) maps, which :func:`encode` converts, reading the format timm declares on the
feature model (``output_fmt``). What a family of backbones needs besides is a backbone adapter
(:mod:`tsn.models.backbone_adapters`): plain ViTs, whose levels share one stride, get a pyramid; backbones that
need whole patches (a patch embedding) or whole windows (MaxViT) make :func:`encode` pad the input to the size
they take, and the models crop their outputs back. Pretrained weights come through timm, from its cache, the
hub or a local file, and an offline machine is told so at once (:func:`check_pretrained_reachable`);
:func:`encoder_layer_ids` gives the block depths for layer-wise learning-rate decay (docs/backbones.md).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from tsn.errors import TsnError
from tsn.models.backbone_adapters import adapt_encoder, adapters_input_multiple
from tsn.models.model_config import PAPER_DECODER_CHANNELS, ModelConfig

if TYPE_CHECKING:  # timm is imported lazily at run time (see create_encoder)
    from timm.models import FeatureInfo

__all__ = [
    "build_encoder",
    "create_encoder",
    "check_pretrained_reachable",
    "can_reach",
    "encoder_feature_info",
    "encoder_layer_ids",
    "encoder_input_multiple",
    "encoder_output_format",
    "encode",
    "padded_size",
    "crop",
    "default_decoder_channels",
    "UNetDecoder",
    "upsample",
    "BlockFactory",
]

BlockFactory = Callable[[int, int, int], nn.Module]
"""``(kernel_size, in_channels, out_channels) -> block``; a block is called as ``block(x, style)``."""


def create_encoder(
    backbone: str,
    pretrained: bool = False,
    *,
    pretrained_file: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> nn.Module:
    """A timm ``features_only`` model returning NCHW or NHWC feature maps, shallow to deep.

    For ``resnet18`` these are the paper's five stages (64, 64, 128, 256, 512 channels at strides 2 to 32):
    conv1+bn1+relu, maxpool+layer1, layer2, layer3, layer4. The backbone adapters that apply then adapt it
    (:func:`tsn.models.backbone_adapters.adapt_encoder`): a plain ViT (every level at one stride) is wrapped in
    :class:`tsn.models.pyramid.ViTPyramid`, which gives it four levels at 1/4 to 2 patch sizes.

    Backbones that are built for one input size (Swin, ViT) are asked for ``dynamic_img_size=True``, timm's switch
    for any input size (attention masks / position embeddings made for the input at each call); the others do not
    take that argument (timm raises TypeError naming it) and take any size anyway.

    ``pretrained_file`` loads the backbone's weights from a local file (timm's ``pretrained_cfg_overlay``: a
    checkpoint of the full timm model, e.g. its ``state_dict()`` saved with ``torch.save`` or a ``.safetensors``
    file), for machines without network; ``pretrained`` alone goes through timm's download, after
    :func:`check_pretrained_reachable` has made sure it can succeed. ``options`` are passed to
    ``timm.create_model`` (``drop_path_rate=0.1``...).
    """
    import timm

    kwargs: dict[str, Any] = dict(options or {})
    if pretrained_file is not None:
        path = Path(pretrained_file).expanduser()
        if not path.is_file():
            raise TsnError(f"model.pretrained_file {str(path)!r} is not a file; give the path of the backbone's "
                           "weights (a timm state_dict saved with torch.save, or a .safetensors file)")
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        pretrained = True
    elif pretrained:
        check_pretrained_reachable(backbone)
    try:
        try:
            encoder = timm.create_model(
                backbone, pretrained=pretrained, features_only=True, dynamic_img_size=True, **kwargs
            )
        except TypeError as error:
            if "dynamic_img_size" not in str(error):
                raise
            encoder = timm.create_model(backbone, pretrained=pretrained, features_only=True, **kwargs)
    except TypeError as error:  # an option the backbone does not take
        raise TsnError(f"backbone {backbone!r} does not take model.backbone_options {sorted(kwargs)}: "
                       f"{error}") from None
    except RuntimeError as error:  # timm's message for an unknown name, or weights that do not fit
        raise TsnError(f"cannot build backbone {backbone!r}: {_first_line(error)}") from None
    except Exception as error:  # pragma: no cover - download failures and the like
        raise TsnError(f"cannot build backbone {backbone!r} (pretrained={pretrained}): {_first_line(error)}") from None
    output_format = encoder_output_format(encoder)
    if output_format not in ("NCHW", "NHWC"):
        raise TsnError(f"backbone {backbone!r} gives {output_format} token sequences, not feature maps; use a "
                       "backbone whose timm features_only model gives NCHW or NHWC maps (docs/backbones.md)")
    return adapt_encoder(encoder)


def build_encoder(config: ModelConfig) -> nn.Module:
    """The encoder a model config describes (backbone, pretrained weights or file, backbone options)."""
    return create_encoder(
        config.backbone, config.pretrained, pretrained_file=config.pretrained_file, options=config.backbone_options
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


WEIGHTS_HOST_TIMEOUT = 3.0
"""Seconds :func:`check_pretrained_reachable` waits for a connection to the weights' host."""


def can_reach(host: str, port: int = 443, timeout: float = WEIGHTS_HOST_TIMEOUT) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds (tests replace this probe).

    The probe runs in a daemon thread so that a name lookup that hangs (no timeout of its own) is cut off too.
    """
    opened: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                opened.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, name="tsn-weights-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(opened)


def check_pretrained_reachable(backbone: str) -> None:
    """A one-line :class:`TsnError` in seconds when timm could not get ``backbone``'s pretrained weights: not in
    the local Hugging Face (or torch hub) cache, and their host cannot be reached (or ``HF_HUB_OFFLINE`` is set).

    Without this, timm's download retries for about a minute before failing with a traceback.
    """
    import timm
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(backbone)
    except RuntimeError:
        cfg = None
    if cfg is None:
        if timm.is_model(backbone.partition(".")[0]):
            raise TsnError(f"timm has no pretrained weights for backbone {backbone!r}; use model.pretrained=false, "
                           "or model.pretrained_file=PATH for weights of your own")
        return  # an unknown name: create_encoder's own one-line error follows
    if cfg.file:
        return
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        filenames = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        if any(isinstance(try_to_load_from_cache(cfg.hf_hub_id, name), str) for name in filenames):
            return
        host = urlparse(str(constants.ENDPOINT)).hostname or "huggingface.co"
        offline = bool(constants.HF_HUB_OFFLINE)
    elif isinstance(cfg.url, str) and cfg.url:
        if (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name).is_file():
            return
        host, offline = urlparse(cfg.url).hostname or "", False
    else:
        return
    if offline or not can_reach(host):
        reason = "HF_HUB_OFFLINE is set" if offline else f"{host} cannot be reached"
        raise TsnError(f"the pretrained weights of backbone {backbone!r} are not in the local cache and {reason}; "
                       "copy the weights file here and set model.pretrained_file=PATH (tsn train --pretrained-file), "
                       "or train without them (model.pretrained=false)")


def encoder_layer_ids(encoder: nn.Module) -> tuple[dict[str, int], int]:
    """Depth of each encoder parameter for layer-wise learning-rate decay: ``({name: layer id}, number of layers)``,
    0 for the stem, one id per block up to the last (timm's ``group_matcher(coarse=False)``, as in timm's own
    ``param_groups_layer_decay``).

    timm's ``features_only`` wrappers do not keep ``group_matcher``: a feature getter (ViT) holds the timm model,
    whose names are the wrapper's without the prefix; for the other wrappers the architecture named in their
    ``pretrained_cfg`` is built once without weights, and the wrapper's names, whose nested sequences timm
    flattened (``stages.0`` -> ``stages_0``), are matched to its names. Parameters that match nothing (the ViT
    pyramid's own layers) get the top id; a backbone without a ``group_matcher`` gets one id per top-level child,
    in order.
    """
    from timm.models import group_parameters

    named = dict(encoder.named_parameters())
    inner, prefix = encoder, ""
    while not hasattr(inner, "group_matcher"):
        child = next((name for name in ("vit", "model") if isinstance(getattr(inner, name, None), nn.Module)), None)
        if child is None:
            break
        inner, prefix = getattr(inner, child), f"{prefix}{child}."
    reference: nn.Module | None = inner
    if hasattr(inner, "group_matcher"):
        to_reference = {name: name[len(prefix):] for name in named if name.startswith(prefix)}
    else:
        reference, to_reference = _reference_model(encoder), {}
        if reference is not None:
            known = dict(reference.named_parameters())
            to_reference = {name: ref for name in named if (ref := _unflattened(name, known)) is not None}
    if reference is None or not hasattr(reference, "group_matcher"):
        children = [name for name, _ in encoder.named_children()]
        ids = {name: children.index(name.split(".")[0]) for name in named}
        return ids, len(children)
    matcher = cast(Callable[..., Any], reference.group_matcher)
    layer_map = group_parameters(reference, matcher(coarse=False), reverse=True)
    matched = {name: layer_map[to_reference[name]] for name in named if to_reference.get(name) in layer_map}
    top = max(matched.values(), default=0)  # the deepest layer the encoder keeps (timm drops the head)
    return {name: matched.get(name, top) for name in named}, top + 1


def _reference_model(encoder: nn.Module) -> nn.Module | None:
    """The full timm model of a features_only wrapper's architecture, for its parameter names: built on the meta
    device (shapes only, no memory, no initialisation), on the CPU if the architecture needs real tensors."""
    import timm

    architecture = getattr(encoder, "pretrained_cfg", {}).get("architecture")
    if not architecture:
        return None
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                return timm.create_model(architecture, pretrained=False)
        except Exception:  # an architecture that computes at init (not on meta), or needs arguments
            continue
    return None


def _unflattened(name: str, known: Mapping[str, Any]) -> str | None:
    """``stages_0.blocks.1.weight`` -> ``stages.0.blocks.1.weight`` if the full model has that name."""
    if name in known:
        return name
    head, dot, tail = name.partition(".")
    for position, char in enumerate(head):
        if char == "_":
            candidate = f"{head[:position]}.{head[position + 1:]}{dot}{tail}"
            if candidate in known:
                return candidate
    return None


def encoder_feature_info(encoder: nn.Module) -> FeatureInfo:
    """timm's description (``channels()``, ``reduction()``) of the feature maps of a :func:`create_encoder` model."""
    # nn.Module's attribute lookup is typed ``Tensor | Module``; timm's features_only models set a FeatureInfo.
    return cast("FeatureInfo", encoder.feature_info)


def encoder_output_format(encoder: nn.Module) -> str:
    """``"NCHW"`` or ``"NHWC"`` (or a token format): the layout timm declares for a features_only model's maps.

    timm's feature wrappers (FeatureListNet, FeatureGetterNet, FeatureHookNet) carry ``output_fmt``, taken from the
    backbone (Swin and MambaOut: NHWC); the hand-written feature classes of some CNN families (EfficientNet,
    MobileNetV3) have none and give NCHW, timm's default format.
    """
    from timm.layers import Format

    return Format(getattr(encoder, "output_fmt", Format.NCHW)).value


def encoder_input_multiple(encoder: nn.Module) -> tuple[int, int]:
    """Height and width multiples the encoder's input must have: 1 for CNNs; the least common multiple of what the
    backbone adapters that apply ask for (:mod:`tsn.models.backbone_adapters`): the patch size of a timm patch
    embedding that needs whole patches (Swin, ViT with ``dynamic_img_size``), a stage's reduction times its
    window for window attention whose window must divide the map (MaxViT)."""
    return adapters_input_multiple(encoder)


def encode(encoder: nn.Module, image: torch.Tensor, multiple: Sequence[int]) -> list[torch.Tensor]:
    """The encoder's NCHW feature maps of ``image``, zero-padded at the bottom and right to the ``multiple``
    (:func:`encoder_input_multiple`: whole patches or windows) the encoder needs; decode at :func:`padded_size` and
    :func:`crop` back.

    Zero after the input normalisation is the dataset's mean colour; padding only the far sides keeps the image's
    pixel grid where it is, so the cropped output gives each pixel its own prediction. No multiple, no padding:
    the shapes are not even read, which keeps ``torch.export``'s symbolic sizes free.
    """
    if tuple(multiple) != (1, 1):
        height, width = padded_size(image.shape[-2:], multiple)
        image = F.pad(image, (0, width - image.shape[-1], 0, height - image.shape[-2]))
    features = list(encoder(image))
    if encoder_output_format(encoder) == "NHWC":
        from timm.layers import Format, nhwc_to

        features = [nhwc_to(feature, Format.NCHW) for feature in features]
    return features


def padded_size(size: Sequence[int], multiple: Sequence[int]) -> Sequence[int]:
    """``size`` (height, width) rounded up to the ``multiple``; ``size`` itself when the multiple is 1.

    Rounded up as ``(size + multiple - 1) // multiple``, floor division of non-negative numbers only: the ONNX
    exporter writes a traced ``//`` as ONNX's integer Div, which truncates, so ``-(-size // multiple)`` rounded
    down in onnxruntime (a 64 x 64 image padded to 56 x 56 for patch 14).
    """
    if tuple(multiple) == (1, 1):
        return size
    return tuple((length + step - 1) // step * step for length, step in zip(size, multiple, strict=True))


def crop(output: torch.Tensor, size: Sequence[int], multiple: Sequence[int]) -> torch.Tensor:
    """The top-left ``size`` of a map decoded at the :func:`padded_size`: the image's own pixels.

    Under ``torch.export`` (ONNX export) the same pixels are gathered instead of sliced: a slice is a view whose
    strides make the exporter guard that the padded and cropped sizes differ (or are equal), a fact of the traced
    size that then fixes which sizes the graph accepts; a gather copies the same values and has no strides to
    reason about. Eager runs keep the view.
    """
    if tuple(multiple) == (1, 1):
        return output
    if torch.compiler.is_exporting():
        rows = torch.arange(size[0], device=output.device)
        columns = torch.arange(size[1], device=output.device)
        return output.index_select(-2, rows).index_select(-1, columns)
    return output[..., : size[0], : size[1]]


def default_decoder_channels(encoder_channels: Sequence[int]) -> tuple[int, ...]:
    """The paper's widths for a five-level encoder; otherwise the encoder's own widths, deep to shallow, then 64."""
    if len(encoder_channels) == len(PAPER_DECODER_CHANNELS):
        return PAPER_DECODER_CHANNELS
    return tuple(encoder_channels[-2::-1]) + (64,)


def upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True`` (the authors' ``Upsample(scale_factor=2)`` for sizes / 32).

    In channels_last training the gradient usually arrives as a channel slice of a concatenation (``torch.cat``'s
    backward), which is not channels_last-contiguous: the backward kernel then converts it to NCHW and runs its slow
    path. A hook hands it a channels_last copy instead: the same gradient (bit-identical on this project's Xeon;
    elsewhere the kernels may sum in another order), and on the paper model (batch 2,
    512 x 512, bfloat16) the upsampling backward at 256 x 256 took 0.18 s instead of 1.1-1.4 s.
    """
    y = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
    if y.requires_grad and x.is_contiguous(memory_format=torch.channels_last) and not torch.compiler.is_compiling():
        y.register_hook(_channels_last_gradient)
    return y


def _channels_last_gradient(gradient: torch.Tensor) -> torch.Tensor:
    return gradient.contiguous(memory_format=torch.channels_last)


class UNetDecoder(nn.Module):
    """U-Net decoder over ``n`` encoder levels, built from one kind of block.

    ``laterals[i]`` is a 1x1 block on encoder level ``i``; walking from the deepest level up, the running map is
    upsampled to the next level's size, concatenated with its lateral (upsampled path first) and fused by a 3x3
    block; finally it is upsampled to the input size and refined by ``final``.
    """

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int], block: BlockFactory) -> None:
        super().__init__()
        levels = len(encoder_channels)
        if len(decoder_channels) != levels:
            suggestion = list(decoder_channels[-levels:]) if len(decoder_channels) > levels else None
            raise TsnError(
                f"decoder_channels {list(decoder_channels)} has {len(decoder_channels)} widths but the encoder gives "
                f"{levels} feature levels: pass one width per level"
                + (f" (e.g. decoder_channels={suggestion})" if suggestion else "")
                + ", or decoder_channels=None for the encoder's default widths"
            )
        self.laterals = nn.ModuleList(block(1, c, c) for c in encoder_channels)
        fuse, width = [], encoder_channels[-1]
        for step, level in enumerate(range(levels - 2, -1, -1)):
            fuse.append(block(3, width + encoder_channels[level], decoder_channels[step]))
            width = decoder_channels[step]
        self.fuse = nn.ModuleList(fuse)
        self.final = block(3, width, decoder_channels[-1])
        self.out_channels = decoder_channels[-1]

    def forward(
        self, features: Sequence[torch.Tensor], style: torch.Tensor | None, output_size: Sequence[int]
    ) -> torch.Tensor:
        x = self.laterals[-1](features[-1], style)
        for step, level in enumerate(range(len(features) - 2, -1, -1)):
            lateral = self.laterals[level](features[level], style)
            x = upsample(x, lateral.shape[-2:])
            x = self.fuse[step](torch.cat([x, lateral], dim=1), style)
        return self.final(upsample(x, output_size), style)
