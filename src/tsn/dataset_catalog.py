"""The dataset registry: every dataset is described exactly once, here.

A :class:`DatasetSpec` holds what the rest of the package knows about a dataset: its tasks (in the order a model
built for it uses) with their channel counts and class names, its splits and input sizes, the loader class (named
as a lazy ``"module:attr"`` string, so this level never imports :mod:`tsn.data`), where its archive comes from,
and how it is evaluated (:class:`EvaluationProtocol`). Loaders, downloads, model presets, the evaluator, the
studies and the commands all read it; a new dataset is one loader file plus one :func:`register_dataset` call.

:func:`canonical_dataset_name` is the only place where a user-typed dataset name is normalised.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tsn.errors import TsnError
from tsn.tasks import TaskSpec, get_task, resolve_tasks
from tsn.utils.registry import Registry

__all__ = [
    "DownloadSource",
    "EvaluationProtocol",
    "DatasetSpec",
    "DATASETS",
    "canonical_dataset_name",
    "get_dataset",
    "list_datasets",
    "downloadable_datasets",
    "register_dataset",
    "dataset_tasks",
    "NYUV2_13_CLASSES",
    "CITYSCAPES_7_CLASSES",
]


@dataclass(frozen=True)
class DownloadSource:
    """Where a dataset archive comes from and what it must contain (read by :mod:`tsn.data.download`)."""

    url: str
    """Default download URL."""
    archive: str
    """File name of the archive, stored as ``<root>/<archive>``."""
    folder: str
    """Top-level folder the archive must contain; the dataset lives in ``<root>/<folder>``."""
    sha256: str | None = None
    """Expected SHA-256 of the archive; ``None`` while unknown (the computed digest is printed to record it)."""


@dataclass(frozen=True)
class EvaluationProtocol:
    """How ``tsn evaluate`` (and ``tsn reproduce``) scores a dataset by default."""

    split: str = "val"
    """The split a results table is scored on."""
    protocol: str = "astmt"
    """The evaluation protocol its literature reports (a name of :func:`tsn.evaluation.protocols.list_protocols`:
    resolution handling, metric definitions, valid masks, thresholds); ``--protocol`` chooses another."""


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the project knows about one dataset."""

    name: str
    """Canonical name (``tsn download NAME``, ``--dataset NAME``, ``meta["dataset"]``)."""
    title: str
    tasks: Mapping[str, int]
    """Task name -> channels on this dataset, in the order a model built for this dataset uses."""
    loader: str | type[Any]
    """The dataset class, or its ``"module:attr"`` (imported on first use); its constructor takes ``split``,
    ``tasks``, ``transform`` (and ``root`` unless :attr:`generated`)."""
    splits: tuple[str, ...] = ("train", "val")
    class_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Task -> names of its classes on this dataset, where they differ from the task's own."""
    aliases: tuple[str, ...] = ()
    train_size: tuple[int, int] | None = None
    """Network input ``(H, W)`` of this dataset's training presets; None: the scenes' own size."""
    eval_size: tuple[int, int] | None = None
    """Network input ``(H, W)`` of ``tsn evaluate`` when none is given; None: the dataset's own ``size``."""
    download: DownloadSource | None = None
    """Archive ``tsn download`` fetches; None where the dataset is not downloadable that way."""
    download_hint: str = ""
    """How to obtain the dataset when :attr:`download` is None."""
    generated: bool = False
    """Rendered procedurally: no data root, one split at a time, nothing to download."""
    preset_family: str | None = None
    """The ``<backbone>_<dataset>`` part of this dataset's packaged presets (``tsn_<family>``,
    ``multihead_<family>``, ``single_<family>.<task>``)."""
    evaluation: EvaluationProtocol = field(default_factory=EvaluationProtocol)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", dict(self.tasks))
        if not self.tasks:
            raise TsnError(f"dataset {self.name!r} has no task; give tasks={{task name: channels, ...}}")
        for task, channels in self.tasks.items():
            if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
                raise TsnError(f"dataset {self.name!r}: the channels of {task!r} must be a positive integer, got "
                               f"{channels!r}")
        if not isinstance(self.loader, type) and not (
            isinstance(self.loader, str) and all(part.strip() for part in self.loader.partition(":")[::2])
            and ":" in self.loader
        ):
            raise TsnError(f"dataset {self.name!r}: loader must be the dataset class or its 'module:attr', got "
                           f"{self.loader!r}")
        unknown = [name for name in self.tasks if get_task(name).name != name]
        if unknown:
            raise TsnError(f"dataset {self.name!r}: task {unknown[0]!r} is an alias; use canonical task names")
        for task, names in self.class_names.items():
            if task not in self.tasks or len(names) != self.tasks[task]:
                raise TsnError(f"dataset {self.name!r}: class names of {task!r} must be one per channel of a task "
                               "it has")

    def loader_class(self) -> type[Any]:
        """The dataset class :attr:`loader` is or names (imported on first use)."""
        if isinstance(self.loader, type):
            return self.loader
        module, _, attr = self.loader.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as error:
            raise TsnError(f"dataset {self.name!r}: cannot load its loader {self.loader!r} ({error}); is the module "
                           "that defines it importable?") from None

    def task_specs(self, names: Sequence[str] | None = None) -> tuple[TaskSpec, ...]:
        """The task specs of this dataset (all of them, or the subset ``names``) with its channels and classes."""
        everything = names is None or list(names) in (["all"], [])
        chosen = list(self.tasks) if everything else [get_task(n).name for n in names]  # type: ignore[union-attr]
        missing = [n for n in chosen if n not in self.tasks]
        if missing:
            elsewhere = [name for name, spec in DATASETS.items() if missing[0] in spec.tasks]
            hint = f" (datasets with it: {', '.join(elsewhere)})" if elsewhere else ""
            raise TsnError(f"dataset {self.name!r} has no task {missing[0]!r}; its tasks: {', '.join(self.tasks)}"
                           + hint)
        specs = resolve_tasks(chosen, self.tasks)
        return tuple(
            spec.with_channels(spec.channels, self.class_names[spec.name]) if spec.name in self.class_names else spec
            for spec in specs
        )


def _dataset_key(name: str) -> str:
    """How a typed dataset name is matched: case, spaces around it and ``-`` for ``_`` do not matter."""
    return name.strip().lower().replace("-", "_")


DATASETS: Registry[DatasetSpec] = Registry(
    "dataset", "register one with tsn.register_dataset in a plugin: tsn --plugin MODULE", normalize=_dataset_key
)
"""Every registered dataset by canonical name, in registration order; ``DATASETS.aliases`` maps each alias
(``nyuv2``, ``pascal``...) to its dataset."""


def canonical_dataset_name(name: str) -> str:
    """The registered name of dataset ``name`` (case, ``-``/``_`` and aliases such as ``nyuv2`` accepted)."""
    return DATASETS.canonical(name)


def get_dataset(name: str) -> DatasetSpec:
    """The registered dataset called ``name`` (see :func:`canonical_dataset_name`)."""
    return DATASETS.lookup(name)


def list_datasets() -> list[str]:
    """Canonical names of every registered dataset, in registration order."""
    return list(DATASETS)


def downloadable_datasets() -> list[str]:
    """Names of the registered datasets that ``tsn download`` can fetch (those with a ``download`` source)."""
    return sorted(name for name, spec in DATASETS.items() if spec.download is not None)


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Register a dataset (for user code: one :class:`DatasetSpec` naming its loader). A name or alias already
    taken is refused in one line."""
    if not isinstance(spec, DatasetSpec):
        raise TsnError(f"register_dataset takes a tsn.dataset_catalog.DatasetSpec, got {type(spec).__name__}")
    if not isinstance(spec.name, str) or spec.name != _dataset_key(spec.name):
        raise TsnError(f"dataset name {spec.name!r} must be lower case with underscores, e.g. "
                       f"{_dataset_key(str(spec.name))!r}")
    return DATASETS.register(spec.name, spec, aliases=spec.aliases)


def dataset_tasks(dataset: str, names: Sequence[str] | None = None) -> tuple[TaskSpec, ...]:
    """The task specs of ``dataset`` (all of them, or the subset ``names``) with the dataset's channels."""
    return get_dataset(dataset).task_specs(names)


# ------------------------------------------------------------------------------------------- built-in datasets

NYUV2_13_CLASSES = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa", "table", "tv", "wall",
    "window",
)
"""The 13 classes of NYUv2-13 (Couprie et al.'s mapping, class 0 = bed; MTAN stores unknown as -1)."""

CITYSCAPES_7_CLASSES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
"""Cityscapes' seven categories (void is stored as -1 by MTAN)."""

for _spec in (
    DatasetSpec(
        name="pascal_context", title="PASCAL-Context (PASCAL_MT, ASTMT)",
        # The authors' task order: position i owns block i of the task code.
        tasks={"semseg": 21, "human_parts": 7, "edges": 1, "normals": 3, "saliency": 1},
        loader="tsn.data.pascal_context:PascalContext", splits=("train", "val", "val_new", "test_new"),
        aliases=("pascal",), train_size=(512, 512), eval_size=(512, 512),
        download=DownloadSource(
            url="https://data.vision.ee.ethz.ch/kmaninis/share/MTL/PASCAL_MT.tgz",
            archive="PASCAL_MT.tgz", folder="PASCAL_MT",
        ),
        preset_family="r18_pascal",
        # The TSN paper follows ASTMT (edges: seism with NMS, HED thresholds, all 5,105 val images).
        evaluation=EvaluationProtocol(split="val", protocol="astmt"),
    ),
    DatasetSpec(
        name="nyud", title="NYUD-v2 (NYUD_MT, ASTMT)",
        # ASTMT convention: 41 classes, class 0 is trained and evaluated as a real class.
        tasks={"semseg": 41, "depth": 1, "normals": 3, "edges": 1},
        loader="tsn.data.nyud:NYUD", splits=("train", "val", "test_new"),
        aliases=("nyud_mt",), train_size=(480, 640), eval_size=(512, 512),
        # The ASTMT/TSNs NYUD_MT; the "survey" NYUD_MT.tgz of Vandenhende et al. has another layout.
        download=DownloadSource(
            url="https://data.vision.ee.ethz.ch/kmaninis/share/MTL/NYUD_MT.tgz",
            archive="NYUD_MT.tgz", folder="NYUD_MT",
        ),
        preset_family="r18_nyud",
        # The TSN paper's numbers (ASTMT); the protocol scores NYUD edges with the only NYUD setting that has a
        # documented ground truth and tolerance (docs/edges.md).
        evaluation=EvaluationProtocol(split="val", protocol="astmt"),
    ),
    DatasetSpec(
        name="synthetic", title="Synthetic multi-task scenes (embedded)",
        # background, ground, sphere, box, cylinder, cone/capsule, figure (see tsn.data.synthetic)
        tasks={"semseg": 7, "human_parts": 7, "edges": 1, "normals": 3, "saliency": 1, "depth": 1},
        loader="tsn.data.synthetic:SyntheticScenes", splits=("train", "val", "test"), generated=True,
        preset_family="r10t_synthetic",
        # ASTMT with pooled depth: the scenes' sky has no depth (0), which ASTMT would score as a depth of 1e-9 m.
        evaluation=EvaluationProtocol(split="test", protocol="tsn-synthetic"),
    ),
    DatasetSpec(
        name="nyuv2_13", title="NYUv2-13 (MTAN / LibMTL layout)",
        tasks={"semseg": 13, "depth": 1, "normals": 3}, class_names={"semseg": NYUV2_13_CLASSES},
        loader="tsn.data.mtan:NYUv2", aliases=("nyuv2", "nyu_v2", "nyuv2_mtan"),
        train_size=(288, 384), eval_size=(288, 384), preset_family="r18_nyuv2",
        download_hint="get MTAN's preprocessed nyuv2 folder (github.com/lorenmt/mtan) and pass its parent as "
        "--data-root",
        evaluation=EvaluationProtocol(split="val", protocol="libmtl"),
    ),
    DatasetSpec(
        name="cityscapes_7", title="Cityscapes-7 (MTAN / LibMTL layout)",
        tasks={"semseg": 7, "depth": 1}, class_names={"semseg": CITYSCAPES_7_CLASSES},
        loader="tsn.data.mtan:Cityscapes", aliases=("cityscapes", "cityscapes_mtan"),
        train_size=(128, 256), eval_size=(128, 256), preset_family="r18_cityscapes",
        download_hint="get MTAN's preprocessed cityscapes folder (github.com/lorenmt/mtan) and pass its parent "
        "as --data-root",
        evaluation=EvaluationProtocol(split="val", protocol="libmtl"),
    ),
    DatasetSpec(
        name="synthetic_full", title="Synthetic multi-task scenes, all 13 tasks (embedded)",
        # The same scenes as synthetic with the seven extra labels of tsn.data.synthetic_render.EXTRA_LABELS; a
        # dataset of its own so that synthetic (the demo's) keeps its six tasks, its presets and its caches.
        tasks={"semseg": 7, "human_parts": 7, "edges": 1, "normals": 3, "saliency": 1, "depth": 1, "albedo": 1,
               "shading": 1, "unlit": 1, "material": 5, "contours": 1, "occlusion": 1, "boundary_distance": 1},
        loader="tsn.data.synthetic:SyntheticScenesFull", splits=("train", "val", "test"), generated=True,
        aliases=("synthetic13",),
        evaluation=EvaluationProtocol(split="test", protocol="tsn-synthetic"),
    ),
):
    register_dataset(_spec)
del _spec
