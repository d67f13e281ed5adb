"""ONNX export: one self-describing ``.onnx`` file that serves every task of a model.

Graph interface (all axes dynamic except channels):

* input ``image``: float32 ``N x 3 x H x W``, normalised with the ImageNet mean / std stored in the metadata.
* input ``task`` (TSN only): int64 ``N``, the index of each sample's task in the metadata's ``tsn.tasks`` list.
  One batch may mix tasks; to get every task of one image, repeat the image once per task.
* output ``output`` (TSN and single-task models): float32 ``N x C_max x H x W``, the raw output of each sample's
  task (the shared output layer pooled to the task's channels, exactly as ``model(image, task)``) in channels
  ``0 .. channels[task] - 1``, zeros in the rest. ``C_max`` is the largest task's channel count.
* outputs ``<task>`` (multi-head models, which compute every task at once): the raw output of that task.

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
from tsn.models.fused import unfuse_adain_blocks
from tsn.models.layers import channel_pool_matrix
from tsn.utils.io import atomic_write

__all__ = ["ExportReport", "export_onnx", "onnx_metadata", "run_onnx", "task_pool_matrices"]


def task_pool_matrices(model: TaskSwitchingNet) -> torch.Tensor:
    """``T x C_max x C_head``: row block ``t`` pools the shared output to task ``t``'s channels, zero-padded."""
    head = model.head.out_channels
    largest = max(spec.channels for spec in model.task_specs.values())
    pools = torch.zeros(len(model.task_specs), largest, head)
    for index, spec in enumerate(model.task_specs.values()):
        pools[index, : spec.channels] = channel_pool_matrix(head, spec.channels)
    return pools


class _TaskIndexedTSN(nn.Module):
    """A TSN as a function of ``(image, task index per sample)`` with a fixed-width, zero-padded output."""

    def __init__(self, model: TaskSwitchingNet) -> None:
        super().__init__()
        self.model = model
        with torch.no_grad():  # The task embeddings are constants of a trained model: stored, not recomputed.
            self.register_buffer("styles", model.embed(list(model.tasks)))
        self.register_buffer("pools", task_pool_matrices(model).to(self.styles))

    def forward(self, image: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        raw = self.model.decode(self.model.encoder(image), self.styles[task], image.shape[-2:])
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
        "tsn.task_outputs": json.dumps({s.name: s.output for s in specs}),
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

    With ``verify_size``, onnxruntime then runs a ``1 x 3 x verify_size x verify_size`` probe for every task and
    a :class:`TsnError` is raised if any output differs from PyTorch by more than ``tolerance``.
    """
    model = copy.deepcopy(model).float().cpu().eval()  # the caller's model keeps its device, dtype and blocks
    unfuse_adain_blocks(model)  # the reference blocks map onto ONNX's InstanceNormalization
    module, inputs, outputs = _wrap(model)
    probe = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    example: tuple[torch.Tensor, ...] = (probe.repeat(2, 1, 1, 1),)
    batch, height, width = torch.export.Dim("batch"), torch.export.Dim("height"), torch.export.Dim("width")
    dynamic: dict[str, Any] = {"image": {0: batch, 2: height, 3: width}}
    if "task" in inputs:
        example += (torch.tensor([0, len(model.tasks) - 1]),)
        dynamic["task"] = {0: batch}
    program = _run_exporter(module, example, inputs, outputs, dynamic, opset)
    proto = program.model_proto
    for key, value in onnx_metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        handle.write(proto.SerializeToString())
    diffs = _verify(model, path, verify_size, tolerance) if verify_size else {}
    return ExportReport(path, inputs, outputs, diffs)


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

    ``task`` is the index of the task for every sample (TSN files only).
    """
    feeds = {"image": np.ascontiguousarray(image, dtype=np.float32)}
    if task is not None:
        feeds["task"] = np.full(image.shape[0], task, dtype=np.int64)
    return session.run(None, feeds)


def _verify(model: DensePredictionModel, path: Path, size: int, tolerance: float) -> dict[str, float]:
    """Largest absolute onnxruntime - PyTorch difference per task on a seeded probe; raises above ``tolerance``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.predict_tasks(image, list(model.tasks))
    served_by_index = isinstance(model, TaskSwitchingNet)
    diffs: dict[str, float] = {}
    for index, (name, reference) in enumerate(expected.items()):
        if served_by_index:
            got = run_onnx(session, image.numpy(), index)[0][:, : reference.shape[1]]
        else:
            got = run_onnx(session, image.numpy())[index]
        diffs[name] = float(np.abs(got - reference.numpy()).max())
    worst = max(diffs, key=diffs.__getitem__)
    if diffs[worst] > tolerance:
        raise TsnError(
            f"onnxruntime differs from PyTorch by {diffs[worst]:.2e} on {worst} in {path} "
            f"(tolerance {tolerance:g}); please report this with your torch and onnxruntime versions"
        )
    return diffs
