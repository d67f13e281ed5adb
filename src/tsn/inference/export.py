"""ONNX export: one self-describing ``.onnx`` file that serves every task of a model.

Graph interface (all axes dynamic except channels):

* input ``image``: float32 ``N x 3 x H x W``, normalised with the ImageNet mean / std stored in the metadata.
* input ``task`` (TSN only): int64 ``N``, the index of each sample's task in the metadata's ``tsn.tasks`` list.
  One batch may mix tasks; to get every task of one image, repeat the image once per task. An index outside
  ``0 .. T-1`` is an error (onnxruntime's CPU provider fails the run: a negative index is moved out of range
  rather than counted from the end; :func:`run_onnx` checks it before running on any provider).
* output ``output`` (TSN and single-task models): float32 ``N x C_max x H x W``, the raw output of each sample's
  task (the shared output layer pooled to the task's channels, exactly as ``model(image, task)``) in channels
  ``0 .. channels[task] - 1``, zeros in the rest. ``C_max`` is the largest task's channel count.
* outputs ``<task>`` (multi-head models, which compute every task at once): the raw output of that task.

Height and width are truly dynamic: every size PyTorch accepts runs (the export uses ``Dim.DYNAMIC``; a named
``Dim`` made the exporter silently assume sizes divisible by 32 for backbones such as ResNet-10-T whose
``ceil_mode`` pooling it cannot reason about, and other sizes then failed in onnxruntime's Concat). The export
is verified on a square probe and on an odd, non-square one. Opsets: :func:`supported_opsets` (the exporter
translates to opset 18 and newer; an older request used to be silently written as 18 or as an invalid graph).

Backbones that pad the image to whole patches (plain ViTs / DINOv2 with registers, Swin) export at any size too:
the model's padding is rounded up with non-negative floor division only (ONNX's integer Div truncates), its crop
back is a gather under ``torch.export`` (:func:`tsn.models.backbone.crop`), the trace runs at a size that is not
whole patches (:func:`_trace_size`), and timm's Swin window attention and patch merging are rewritten on the
export's copy of the model (:func:`_traceable_swin`); such a model is also verified at the odd probe padded to
whole patches. Swin V2's window blocks are refused in one line (:func:`_untraceable_windows`). Measured on the
2-core Intel Xeon (AMX) VM, torch 2.14.1, under load, export and verification: ``tsn_dinov2s_pascal`` 38 s,
``tsn_swint_pascal`` 340 s, onnxruntime within 5.4e-5 of PyTorch at 480 x 353 (docs/backbones.md, "ONNX export").

``metadata_props`` (strings; lists and dicts as JSON): ``tsn.tasks``, ``tsn.task_channels``,
``tsn.task_outputs`` (classes / binary / unit_vector / scalar: argmax, sigmoid, L2-normalise or identity),
``tsn.input_mean``, ``tsn.input_std``, ``tsn.model_config`` and ``tsn.version``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tsn.errors import TsnError
from tsn.models import DensePredictionModel, TaskSwitchingNet
from tsn.models.backbone import crop, encode, padded_size
from tsn.models.fused import unfuse_adain_blocks
from tsn.models.layers import channel_pool_matrix
from tsn.utils.io import atomic_write

__all__ = [
    "ExportReport",
    "export_onnx",
    "onnx_metadata",
    "run_onnx",
    "task_pool_matrices",
    "supported_opsets",
    "check_opset",
]

_LOWEST_NATIVE_OPSET = 18
"""The oldest opset the torch.export-based exporter translates to (its ``TORCHLIB_OPSET``; read from torch when
available). Older opsets go through ONNX's version converter, which fails silently on these models."""


def supported_opsets() -> tuple[int, int]:
    """``(lowest, highest)`` opset ``export_onnx`` writes: the exporter's native opset up to the newest that the
    installed ``onnx`` package defines."""
    try:
        from torch.onnx._internal.exporter._constants import TORCHLIB_OPSET as lowest
    except ImportError:  # pragma: no cover - a torch without the constant
        lowest = _LOWEST_NATIVE_OPSET
    try:
        import onnx
    except ImportError:
        raise TsnError("ONNX export needs onnx and onnxscript: pip install 'tsn[export]'") from None
    return int(lowest), int(onnx.defs.onnx_opset_version())


def check_opset(opset: int | None) -> None:
    """A one-line :class:`TsnError` for an opset outside :func:`supported_opsets` (None: the exporter's default)."""
    if opset is None:
        return
    lowest, highest = supported_opsets()
    if isinstance(opset, bool) or not isinstance(opset, int) or not lowest <= opset <= highest:
        raise TsnError(
            f"--opset {opset} is not supported: the exporter writes opsets {lowest} to {highest}; "
            f"choose one in that range (or leave --opset out for the default)"
        )


def task_pool_matrices(model: TaskSwitchingNet) -> torch.Tensor:
    """``T x C_max x C_head``: row block ``t`` pools the shared output to task ``t``'s channels, zero-padded."""
    head = model.head.out_channels
    largest = max(spec.channels for spec in model.task_specs.values())
    # Built in float64 so that the caller's single cast rounds 1/3 once (a float64 export stays exact).
    pools = torch.zeros(len(model.task_specs), largest, head, dtype=torch.float64)
    for index, spec in enumerate(model.task_specs.values()):
        pools[index, : spec.channels] = channel_pool_matrix(head, spec.channels, dtype=torch.float64)
    return pools


class _TaskIndexedTSN(nn.Module):
    """A TSN as a function of ``(image, task index per sample)`` with a fixed-width, zero-padded output."""

    styles: torch.Tensor
    """``(T, latent)`` buffer: the task embedding of every task."""
    pools: torch.Tensor
    """``(T, largest task channels, head channels)`` buffer: see :func:`task_pool_matrices`."""

    def __init__(self, model: TaskSwitchingNet) -> None:
        super().__init__()
        self.model = model
        self.num_tasks = len(model.tasks)
        with torch.no_grad():  # The task embeddings are constants of a trained model: stored, not recomputed.
            self.register_buffer("styles", model.embed(list(model.tasks)))
        self.register_buffer("pools", task_pool_matrices(model).to(self.styles))

    def forward(self, image: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        # ONNX's Gather counts a negative index from the end, so -1 would silently serve the last task; moved
        # below -T it is out of range, and the gather fails as it does for an index >= T.
        task = torch.where(task < 0, task - self.num_tasks, task)
        multiple = self.model.input_multiple
        features = encode(self.model.encoder, image, multiple)
        raw = crop(self.model.decode(features, self.styles[task], padded_size(image.shape[-2:], multiple)),
                   image.shape[-2:], multiple)
        # Identity rows for a full-width task, averaging rows for the others: exactly pool_channels.
        return torch.einsum("noc,nchw->nohw", self.pools[task], raw)


class _AllOutputs(nn.Module):
    """A model without task input: a single task's output, or one output per task (multi-head)."""

    def __init__(self, model: DensePredictionModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model.predict_tasks(image, list(self.model.tasks))
        return tuple(outputs.values())


def _wrap(model: DensePredictionModel) -> tuple[nn.Module, list[str], list[str]]:
    """The module to export, its input names and its output names."""
    if isinstance(model, TaskSwitchingNet):
        return _TaskIndexedTSN(model), ["image", "task"], ["output"]
    names = ["output"] if len(model.tasks) == 1 else list(model.tasks)
    return _AllOutputs(model), ["image"], names


def onnx_metadata(model: DensePredictionModel) -> dict[str, str]:
    """The ``metadata_props`` written into the file (see the module docstring)."""
    from tsn import __version__
    from tsn.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    specs = model.task_specs.values()
    return {
        "tsn.tasks": json.dumps([s.name for s in specs]),
        "tsn.task_channels": json.dumps({s.name: s.channels for s in specs}),
        "tsn.task_outputs": json.dumps({s.name: s.kind.name for s in specs}),
        "tsn.input_mean": json.dumps(list(IMAGENET_MEAN)),
        "tsn.input_std": json.dumps(list(IMAGENET_STD)),
        "tsn.model_config": json.dumps(model.config.to_dict()),
        "tsn.version": __version__,
    }


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote and how closely onnxruntime reproduced PyTorch on a probe input."""

    path: Path
    inputs: list[str]
    outputs: list[str]
    max_abs_diff: dict[str, float]
    """Per task, onnxruntime vs PyTorch on a random probe image (empty when not verified)."""


def export_onnx(
    model: DensePredictionModel,
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    verify_size: int | None = 64,
    tolerance: float = 1e-4,
) -> ExportReport:
    """Export a copy of ``model`` (float32, CPU) to one ``.onnx`` file, atomically, with dynamic batch and size.

    With ``verify_size``, onnxruntime then runs a ``verify_size x verify_size`` probe and an odd, non-square
    ``(verify_size + 1) x (verify_size + 3)`` one (and, for a backbone that pads, that one padded to whole
    patches: :func:`_probe_sizes`) for every task, and a :class:`TsnError` is raised (and nothing
    written) if any output differs from PyTorch by more than ``tolerance``. An opset outside
    :func:`supported_opsets`, or one the exporter did not write, is a :class:`TsnError` too.
    """
    from tsn.utils.checks import ensure_writable_file

    check_opset(opset)
    multiple = tuple(getattr(model, "input_multiple", (1, 1)))
    unsupported = _untraceable_windows(model)
    if unsupported:
        raise TsnError(
            f"backbone {model.config.backbone!r} has shifted-window attention blocks ({unsupported}) whose padding to "
            "whole windows torch.export cannot trace for a dynamic image size (docs/backbones.md); only timm's Swin "
            "(swin_*) blocks are rewritten for export: export a Swin, ConvNeXt, MambaOut, ResNet or plain ViT / "
            "DINOv2 backbone, or serve this one with PyTorch"
        )
    path = ensure_writable_file(path, "ONNX output")
    model = copy.deepcopy(model).float().cpu().eval()  # the caller's model keeps its device, dtype and blocks
    model = unfuse_adain_blocks(model)  # the reference blocks map onto ONNX's InstanceNormalization
    _traceable_swin(model)
    module, inputs, outputs = _wrap(model)
    module.eval()
    probe = torch.randn(1, 3, *_trace_size(multiple), generator=torch.Generator().manual_seed(0))
    example: tuple[torch.Tensor, ...] = (probe.repeat(2, 1, 1, 1),)
    # Dim.DYNAMIC, not named Dims: the exporter records the shape relations it cannot prove (ceil_mode pooling)
    # as facts of the traced sizes instead of restricting the sizes to multiples of 32 without a word.
    dynamic: dict[str, Any] = {"image": {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC,
                                         3: torch.export.Dim.DYNAMIC}}
    if "task" in inputs:
        example += (torch.tensor([0, len(model.tasks) - 1]),)
        dynamic["task"] = {0: torch.export.Dim.DYNAMIC}
    program = _run_exporter(module, example, inputs, outputs, dynamic, opset)
    proto = program.model_proto
    written = _default_domain_opset(proto)
    if opset is not None and written != opset:
        raise TsnError(f"ONNX export wrote opset {written}, not the requested {opset}; choose another --opset")
    for key, value in onnx_metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    serialized = proto.SerializeToString()
    diffs = _verify(model, serialized, path, verify_size, tolerance) if verify_size else {}
    with atomic_write(path, "wb") as handle:
        handle.write(serialized)
    return ExportReport(path, inputs, outputs, diffs)


def _untraceable_windows(model: nn.Module) -> str:
    """The class names of shifted-window attention blocks (modules with ``window_size`` and ``shift_size``) that
    :func:`_traceable_swin` does not rewrite (Swin V2's), comma-separated; empty when there are none."""
    from timm.models.swin_transformer import SwinTransformerBlock

    names = {
        type(module).__name__
        for module in model.modules()
        if hasattr(module, "window_size") and hasattr(module, "shift_size")
        and not isinstance(module, SwinTransformerBlock)
    }
    return ", ".join(sorted(names))


def _traceable_swin(model: nn.Module) -> None:
    """Rewrite the window attention and patch merging of timm's Swin blocks in ``model`` (the export's own copy)
    so that ``torch.export`` traces them for every image size: the same operations on the same values, with

    * sizes padded up as ``(n + w - 1) // w * w``: timm's ``n + (w - n % w) % w`` (and ``n + n % 2`` in the patch
      merging) nests a ``Mod`` per stage that the exporter's symbolic algebra cannot simplify, and the trace of a
      tiny Swin had not finished after 10 minutes;
    * the crop back from whole windows gathered rather than sliced (see :func:`tsn.models.backbone.crop`).

    The rewrite is checked by :func:`_verify` like every export, at sizes that need window padding and not.
    """
    import types

    from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock

    for module in model.modules():
        if isinstance(module, SwinTransformerBlock):
            module._attn = types.MethodType(_swin_window_attention, module)  # type: ignore[method-assign]
        elif isinstance(module, PatchMerging):
            module.forward = types.MethodType(_swin_patch_merging, module)  # type: ignore[method-assign]


def _swin_window_attention(block: Any, x: torch.Tensor) -> torch.Tensor:
    """timm's ``SwinTransformerBlock._attn`` (NHWC in and out), written for :func:`_traceable_swin`."""
    import torch.nn.functional as F
    from timm.models.swin_transformer import window_partition, window_reverse

    _, height, width, channels = x.shape
    (window_h, window_w), shift = block.window_size, block.shift_size
    shifted = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2)) if any(shift) else x
    padded_h, padded_w = (height + window_h - 1) // window_h * window_h, (width + window_w - 1) // window_w * window_w
    shifted = F.pad(shifted, (0, 0, 0, padded_w - width, 0, padded_h - height))
    windows = window_partition(shifted, block.window_size).view(-1, block.window_area, channels)
    mask = block.get_attn_mask(shifted) if getattr(block, "dynamic_mask", False) else block.attn_mask
    attended = block.attn(windows, mask=mask).view(-1, window_h, window_w, channels)
    merged = window_reverse(attended, block.window_size, padded_h, padded_w)
    rows, columns = torch.arange(height, device=x.device), torch.arange(width, device=x.device)
    merged = merged.index_select(1, rows).index_select(2, columns)
    return torch.roll(merged, shifts=shift, dims=(1, 2)) if any(shift) else merged


def _swin_patch_merging(merging: Any, x: torch.Tensor) -> torch.Tensor:
    """timm's ``PatchMerging.forward`` (NHWC, 2 x 2 neighbours concatenated), written for :func:`_traceable_swin`."""
    import torch.nn.functional as F

    batch, height, width, channels = x.shape
    padded_h, padded_w = (height + 1) // 2 * 2, (width + 1) // 2 * 2
    x = F.pad(x, (0, 0, 0, padded_w - width, 0, padded_h - height))
    x = x.reshape(batch, padded_h // 2, 2, padded_w // 2, 2, channels).permute(0, 1, 3, 4, 2, 5).flatten(3)
    return merging.reduction(merging.norm(x))


def _trace_size(multiple: tuple[int, ...]) -> tuple[int, int]:
    """The image size the exporter traces: 64 x 64, or for a backbone that pads to whole patches, sizes from 449 up
    that are not whole patches, so that the padding is traced as the computation it is in general (at a multiple
    it pads nothing, which the tracer may take as a fact of every size), and large enough that every stage of a
    Swin has several windows (Swin-T's last stage has one window per 224 pixels; one window would be taken as a
    fact too)."""
    if tuple(multiple) == (1, 1):
        return 64, 64
    height, width = 449, 450
    while height % multiple[0] == 0:
        height += 1
    while width % multiple[1] == 0 or width == height:
        width += 1
    return height, width


def _default_domain_opset(proto: Any) -> int | None:
    """The opset of the default (``ai.onnx``) domain of a ModelProto."""
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


def _run_exporter(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    inputs: list[str],
    outputs: list[str],
    dynamic: dict[str, Any],
    opset: int | None,
) -> Any:
    """``torch.onnx.export`` (the torch.export-based exporter), quiet, with exporter failures as one line."""
    try:
        import onnxscript  # noqa: F401  (the exporter's translation library; a clear message if it is missing)
    except ImportError:
        raise TsnError("ONNX export needs onnx and onnxscript: pip install 'tsn[export]'") from None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's notes on axis names and deprecations
        try:
            with torch.no_grad():
                return torch.onnx.export(
                    module, example, dynamo=True, input_names=inputs, output_names=outputs,
                    dynamic_shapes=dynamic, opset_version=opset, external_data=False, verbose=False,
                )
        except Exception as error:  # the exporter raises many types; its first line says what failed
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise TsnError(f"ONNX export failed: {first}") from None


def run_onnx(session: Any, image: np.ndarray, task: int | None = None) -> list[np.ndarray]:
    """Run an onnxruntime ``session`` of an exported model on ``image`` (``N x 3 x H x W`` float32).

    ``task`` is the index of the task for every sample (TSN files only): an index outside the file's task list
    (``tsn.tasks`` in its metadata) is a :class:`TsnError`, checked before running.
    """
    feeds = {"image": np.ascontiguousarray(image, dtype=np.float32)}
    if task is not None:
        tasks = json.loads(session.get_modelmeta().custom_metadata_map.get("tsn.tasks", "null") or "null")
        count = len(tasks) if isinstance(tasks, list) else None
        if isinstance(task, bool) or not isinstance(task, (int, np.integer)) or task < 0 or (
            count is not None and task >= count
        ):
            valid = f"0 to {count - 1} ({', '.join(tasks)})" if count else "a non-negative integer"
            raise TsnError(f"task index {task!r} is out of range; give {valid}")
        feeds["task"] = np.full(image.shape[0], int(task), dtype=np.int64)
    return session.run(None, feeds)


def _probe_sizes(size: int, multiple: tuple[int, ...]) -> list[tuple[int, int]]:
    """The sizes :func:`_verify` runs: ``size`` square and ``(size + 1) x (size + 3)``, odd and non-square (not
    whole patches for patch sizes 14 and 16, so padded); for a backbone that pads, also that size padded to whole
    patches, where the padding is empty."""
    sizes = [(size, size), (size + 1, size + 3)]
    if tuple(multiple) != (1, 1):
        height, width = padded_size(sizes[1], multiple)
        sizes.append((int(height), int(width)))
    return sizes


def _verify(
    model: DensePredictionModel, serialized: bytes, path: Path, size: int, tolerance: float
) -> dict[str, float]:
    """Largest absolute onnxruntime - PyTorch difference per task over two seeded probes (``size`` square, and
    odd and non-square, whose feature maps need every rounding of the strided layers); raises above
    ``tolerance``."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(serialized, providers=["CPUExecutionProvider"])
    except Exception as error:  # e.g. an opset newer than the installed onnxruntime runs
        raise TsnError(
            f"onnxruntime cannot load the exported model for {path} ({' '.join(str(error).split())[:300]}); "
            "update onnxruntime or choose an older --opset"
        ) from None
    generator = torch.Generator().manual_seed(1)
    served_by_index = isinstance(model, TaskSwitchingNet)
    diffs: dict[str, float] = {}
    for height, width in _probe_sizes(size, tuple(getattr(model, "input_multiple", (1, 1)))):
        image = torch.randn(1, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = model.predict_tasks(image, list(model.tasks))
        for index, (name, reference) in enumerate(expected.items()):
            try:
                if served_by_index:
                    got = run_onnx(session, image.numpy(), index)[0][:, : reference.shape[1]]
                else:
                    got = run_onnx(session, image.numpy())[index]
            except Exception as error:
                raise TsnError(
                    f"onnxruntime fails on a {height} x {width} image with the model exported for {path} "
                    f"({' '.join(str(error).split())[:300]}; nothing written); please report this with your torch "
                    "and onnxruntime versions"
                ) from None
            if got.shape != tuple(reference.shape):  # e.g. a backbone whose export fixed the probe's size
                raise TsnError(
                    f"the model exported for {path} gives {name} of shape {tuple(got.shape)} for a {height} x "
                    f"{width} image, PyTorch {tuple(reference.shape)}: backbone {model.config.backbone!r} does not "
                    "export with a dynamic image size (nothing written); please report this with your torch and "
                    "timm versions, and export a CNN backbone meanwhile"
                )
            diffs[name] = max(diffs.get(name, 0.0), float(np.abs(got - reference.numpy()).max()))
    worst = max(diffs, key=diffs.__getitem__)
    if diffs[worst] > tolerance:
        raise TsnError(
            f"onnxruntime differs from PyTorch by {diffs[worst]:.2e} on {worst} in the export for {path} "
            f"(tolerance {tolerance:g}; nothing written); please report this with your torch and onnxruntime versions"
        )
    return diffs
