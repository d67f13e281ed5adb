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
is verified on a square probe and on an odd, non-square one, within the float32 error model
(:mod:`tsn.utils.error_model`: the bound scales with each output's magnitude and the network's reduction lengths,
so a correct graph passes on every CPU, where a fixed 1e-4 refused correct exports on an AVX2 AMD EPYC whose
semseg values reach about 10). Opsets: :func:`supported_opsets` (the exporter translates to opset 18 and newer; an
older request used to be silently written as 18 or as an invalid graph).

Backbones that pad the image to whole patches (plain ViTs / DINOv2 with registers, Swin) export at any size too:
the model's padding is rounded up with non-negative floor division only (ONNX's integer Div truncates), its crop
back is a gather under ``torch.export`` (:func:`tsn.models.backbone.crop`), the trace runs at a size that is not
whole patches (:func:`_trace_size`), and the backbone adapters (:mod:`tsn.models.backbone_adapters`) rewrite the
export's copy of the model where a family needs it (timm's Swin window attention and patch merging:
:mod:`tsn.models.swin_export`); such a model is also verified at the odd probe padded to whole patches. A
backbone an adapter cannot make traceable (Swin V2's window blocks) is refused in one line before any work.
Measured on the 2-core Intel Xeon (AMX) VM, torch 2.14.1, under load, export and verification:
``tsn_dinov2s_pascal`` 38 s, ``tsn_swint_pascal`` 340 s, onnxruntime within 5.4e-5 of PyTorch at 480 x 353
(docs/backbones.md, "ONNX export").

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tsn.errors import TsnError
from tsn.models import DensePredictionModel, TaskSwitchingNet
from tsn.models.backbone import crop, encode, padded_size
from tsn.models.backbone_adapters import export_refusal, prepare_for_export
from tsn.models.fused import unfuse_adain_blocks
from tsn.models.layers import channel_pool_matrix
from tsn.models.swin_export import traceable_swin as _traceable_swin  # noqa: F401 - the name the export tests use
from tsn.utils.error_model import compare, network_reductions
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
    bound: dict[str, float] = field(default_factory=dict)
    """Per task, the largest difference the verification allowed (the error model's bound for the task's output
    magnitude, or the caller's ``tolerance``) on the probe where the difference came closest to it."""


def export_onnx(
    model: DensePredictionModel,
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    verify_size: int | None = 64,
    tolerance: float | None = None,
) -> ExportReport:
    """Export a copy of ``model`` (float32, CPU) to one ``.onnx`` file, atomically, with dynamic batch and size.

    With ``verify_size``, onnxruntime then runs a ``verify_size x verify_size`` probe and an odd, non-square
    ``(verify_size + 1) x (verify_size + 3)`` one (and, for a backbone that pads, that one padded to whole
    patches: :func:`_probe_sizes`) for every task, and a :class:`TsnError` is raised (and nothing
    written) if any output differs from PyTorch by more than the float32 error model allows
    (:func:`tsn.utils.error_model.rounding_error_bound`: two float32 sides, the network's conv and linear
    reduction lengths plus the probe's pixel count for the instance norms, scaled by the largest PyTorch value of
    that output), or by more than ``tolerance`` when one is given (an absolute bound). An opset outside
    :func:`supported_opsets`, or one the exporter did not write, is a :class:`TsnError` too.
    """
    from tsn.utils.checks import ensure_writable_file

    check_opset(opset)
    multiple = tuple(getattr(model, "input_multiple", (1, 1)))
    refusal = export_refusal(model.encoder)
    if refusal:
        raise TsnError(f"backbone {model.config.backbone!r} has {refusal}")
    path = ensure_writable_file(path, "ONNX output")
    model = copy.deepcopy(model).float().cpu().eval()  # the caller's model keeps its device, dtype and blocks
    model = unfuse_adain_blocks(model)  # the reference blocks map onto ONNX's InstanceNormalization
    prepare_for_export(model)
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
    diffs, bounds = _verify(model, serialized, path, verify_size, tolerance) if verify_size else ({}, {})
    with atomic_write(path, "wb") as handle:
        handle.write(serialized)
    return ExportReport(path, inputs, outputs, diffs, bounds)


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
    model: DensePredictionModel, serialized: bytes, path: Path, size: int, tolerance: float | None
) -> tuple[dict[str, float], dict[str, float]]:
    """Largest absolute onnxruntime - PyTorch difference per task over the seeded probes (``size`` square, and
    odd and non-square, whose feature maps need every rounding of the strided layers), and the bound each task was
    held to (see :func:`export_onnx`); raises when a difference exceeds its bound."""
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
    reductions = network_reductions(model)
    diffs: dict[str, float] = {}
    bounds: dict[str, float] = {}
    closest: dict[str, float] = {}
    for height, width in _probe_sizes(size, tuple(getattr(model, "input_multiple", (1, 1)))):
        image = torch.randn(1, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = model.predict_tasks(image, list(model.tasks))
        for index, (name, reference) in enumerate(expected.items()):
            if not torch.isfinite(reference).all():
                raise TsnError(f"the model gives non-finite {name} values on a random {height} x {width} image "
                               f"(its weights are not finite or overflow); nothing written to {path}")
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
            if not np.isfinite(got).all():
                raise TsnError(f"onnxruntime gives non-finite {name} values on a {height} x {width} image where "
                               f"PyTorch's are finite, in the export for {path} (nothing written); please report "
                               "this with your torch and onnxruntime versions")
            found = compare(got, reference, dtype=torch.float32, reduction=[*reductions, height * width], sides=2)
            bound = found.bound if tolerance is None else float(tolerance)
            diffs[name] = max(diffs.get(name, 0.0), found.error)
            if found.error / bound >= closest.get(name, -1.0):
                closest[name], bounds[name] = found.error / bound, bound
            if found.error > bound:
                allowed = (f"tolerance {tolerance:g}" if tolerance is not None else
                           f"the float32 error model allows {bound:.2e} for values up to {found.scale:.3g}")
                raise TsnError(
                    f"onnxruntime differs from PyTorch by {found.error:.2e} on {name} at {height} x {width} in the "
                    f"export for {path} ({allowed}; nothing written); please report this with your torch and "
                    "onnxruntime versions"
                )
    return diffs, bounds
