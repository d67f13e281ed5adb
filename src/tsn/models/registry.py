"""Model presets by name (like timm's registry) and construction from a :class:`ModelConfig`.

One naming scheme: ``<arch>_<backbone>_<dataset>`` with ``arch`` one of ``tsn``, ``multihead`` (shared encoder, one
decoder per task) and ``single`` (one task, no task code), e.g. ``tsn_r18_pascal``, ``multihead_r18_pascal``,
``single_r18_pascal``; the backbone part is a short tag (``r18``, ``convnextt``, ``swint``, ``dinov2s``,
``mambaoutt``); a single-task preset takes its task after a dot (``single_r18_pascal.normals``). The
training recipe of a model has the model's name (:func:`tsn.training.list_presets`).
"""

from __future__ import annotations

import fnmatch
import sys
from typing import Any

from tsn.dataset_catalog import get_dataset
from tsn.errors import TsnError
from tsn.models.architectures import get_architecture
from tsn.models.base import DensePredictionModel
from tsn.models.model_config import ModelConfig

__all__ = [
    "MODEL_PRESETS",
    "RENAMED_MODEL_PRESETS",
    "build_model",
    "create_model",
    "list_models",
    "model_config",
    "canonical_model_preset",
    "split_task",
    "announce_rename",
]


def _dataset(dataset: str, arch: str, **extra: Any) -> ModelConfig:
    channels = get_dataset(dataset).tasks  # in the order a model of that dataset uses (PASCAL: the paper's)
    return ModelConfig(arch=arch, tasks=tuple(channels), task_channels=dict(channels), **extra)


MODEL_PRESETS: dict[str, ModelConfig] = {
    # The paper's exact configuration: ResNet-18 (torchvision ImageNet weights), 5 PASCAL tasks, 18,258,805 params.
    "tsn_r18_pascal": _dataset("pascal_context", "tsn", backbone="resnet18.tv_in1k"),
    "tsn_r18_nyud": _dataset("nyud", "tsn", backbone="resnet18.tv_in1k"),
    "tsn_r18_synthetic": _dataset("synthetic", "tsn", backbone="resnet18"),
    # The MTAN / LibMTL benchmarks (tsn.data.mtan), with the paper's encoder.
    "tsn_r18_nyuv2": _dataset("nyuv2_13", "tsn", backbone="resnet18.tv_in1k"),
    "tsn_r18_cityscapes": _dataset("cityscapes_7", "tsn", backbone="resnet18.tv_in1k"),
    # The model of `tsn demo` and `tsn reproduce --dataset synthetic`: ResNet-10-T from scratch, a narrow decoder.
    "tsn_r10t_synthetic": _dataset(
        "synthetic", "tsn", backbone="resnet10t", decoder_channels=(64, 32, 32, 16, 16)
    ),
    # Today's backbones (docs/backbones.md): ImageNet-1k ConvNeXt-T, Swin-T and MambaOut-T, and ViT-S/14 with
    # DINOv2 weights (a plain ViT: tsn.models.pyramid gives it a four-level pyramid); default decoder widths, the
    # stochastic depth of their fine-tuning recipes.
    "tsn_convnextt_pascal": _dataset("pascal_context", "tsn", backbone="convnext_tiny.fb_in1k",
                                     backbone_options={"drop_path_rate": 0.1}),
    "tsn_swint_pascal": _dataset("pascal_context", "tsn", backbone="swin_tiny_patch4_window7_224.ms_in1k",
                                 backbone_options={"drop_path_rate": 0.2}),
    "tsn_dinov2s_pascal": _dataset("pascal_context", "tsn", backbone="vit_small_patch14_dinov2.lvd142m",
                                   backbone_options={"drop_path_rate": 0.1}),
    "tsn_mambaoutt_pascal": _dataset("pascal_context", "tsn", backbone="mambaout_tiny.in1k",
                                     backbone_options={"drop_path_rate": 0.2}),
}
"""Named configurations; every ``tsn_<family>`` has its baselines ``multihead_<family>`` and ``single_<family>``
(the first task; ``single_<family>.<task>`` or ``model_config("single_r18_pascal", tasks=["normals"])`` for
another)."""
for _name, _tsn in list(MODEL_PRESETS.items()):
    _family = _name.removeprefix("tsn_")
    MODEL_PRESETS[f"multihead_{_family}"] = _tsn.replace(arch="multi_head")
    MODEL_PRESETS[f"single_{_family}"] = _tsn.replace(arch="single_task", tasks=_tsn.tasks[:1])

RENAMED_MODEL_PRESETS: dict[str, str] = {
    f"{old}_r18_{dataset}": f"{new}_r18_{dataset}"
    for old, new in (("single_task", "single"), ("multi_head", "multihead"))
    for dataset in ("pascal", "nyud", "synthetic")
}
"""Names before the one naming scheme -> today's; they still work and print a note naming the new one."""

_announced: set[str] = set()


def announce_rename(kind: str, old: str, new: str) -> None:
    """One line on stderr (once per name and process): an old preset name was used and still works."""
    if old not in _announced:
        _announced.add(old)
        print(f"tsn: note: {kind} {old!r} is now called {new!r}; the old name still works", file=sys.stderr)


def split_task(name: str) -> tuple[str, str | None]:
    """``"single_r18_pascal.normals"`` -> ``("single_r18_pascal", "normals")``; no dot -> ``(name, None)``."""
    preset, dot, task = name.partition(".")
    return (preset, task) if dot else (name, None)


def canonical_model_preset(name: str) -> str:
    """The preset name under today's scheme (old names are accepted with a note); unknown names are refused."""
    preset, task = split_task(name)
    if preset in RENAMED_MODEL_PRESETS:
        new = RENAMED_MODEL_PRESETS[preset] + (f".{task}" if task is not None else "")
        announce_rename("model preset", name, new)
        preset, name = RENAMED_MODEL_PRESETS[preset], new
    if preset not in MODEL_PRESETS:
        raise TsnError(f"unknown model preset {name!r}; known: {', '.join(sorted(MODEL_PRESETS))} "
                       "(a single-task one with .TASK, e.g. single_r18_pascal.normals)")
    if task is not None:
        if not preset.startswith("single_"):
            raise TsnError(f"model preset {name!r}: only single-task presets take a task after the dot; "
                           f"use {preset!r} or single_{preset.split('_', 1)[-1]}.{task}")
        if task not in _family_tasks(preset):
            raise TsnError(f"model preset {name!r}: {task!r} is not a task of {preset}; choose one of: "
                           f"{', '.join(_family_tasks(preset))}")
    return name


def _family_tasks(single_preset: str) -> tuple[str, ...]:
    """The tasks a single-task preset may take: those of the TSN of its family (``tsn_r18_pascal``)."""
    family = MODEL_PRESETS.get(f"tsn_{single_preset.removeprefix('single_')}")
    return (family or MODEL_PRESETS[single_preset]).tasks


def list_models(pattern: str | None = None) -> list[str]:
    """Every model preset name (with each single-task preset's per-task names), optionally filtered by a
    shell-style ``pattern`` such as ``"*_pascal*"``."""
    names = set(MODEL_PRESETS)
    for name in MODEL_PRESETS:
        if name.startswith("single_"):
            names.update(f"{name}.{task}" for task in _family_tasks(name))
    return sorted(fnmatch.filter(names, pattern) if pattern else names)


def model_config(preset: str, **overrides: Any) -> ModelConfig:
    """The preset's config with ``overrides`` applied (e.g. ``pretrained=True``, ``tasks=[...]``)."""
    name, task = split_task(canonical_model_preset(preset))
    config = MODEL_PRESETS[name] if task is None else MODEL_PRESETS[name].replace(tasks=(task,))
    return config.replace(**overrides)


def build_model(config: ModelConfig) -> DensePredictionModel:
    """Instantiate the model a config describes (weights freshly initialised, or pretrained backbone if asked), with
    the builder its architecture's name is registered with (:mod:`tsn.models.architectures`)."""
    model = get_architecture(config.arch).build(config)
    if not isinstance(model, DensePredictionModel):
        raise TsnError(f"architecture {config.arch!r} built a {type(model).__name__}, not a "
                       "tsn.models.DensePredictionModel; its builder must return one")
    return model


def create_model(preset: str | ModelConfig, **overrides: Any) -> DensePredictionModel:
    """``create_model("tsn_r18_pascal")`` builds the paper's TSN; a :class:`ModelConfig` is built as given.

    As in timm, a shared model is created by name: ``create_model("hf-hub:ORG/NAME[@REV]")`` or the path of a
    pretrained folder loads it as it was saved. ``pretrained`` is the backbone's flag when it is a bool (timm's
    ImageNet weights); given a model source instead (a pretrained folder, ``hf-hub:`` name, checkpoint or run
    folder), the preset is built from that source's weights, and a source of another architecture is refused in
    one line.
    """
    from tsn.models.checkpoint import is_registered_source, load_model

    if isinstance(preset, str) and not overrides and preset not in MODEL_PRESETS and is_registered_source(preset):
        return load_model(preset)
    source = overrides.get("pretrained")
    if source is not None and not isinstance(source, bool):
        del overrides["pretrained"]
    config = preset.replace(**overrides) if isinstance(preset, ModelConfig) else model_config(preset, **overrides)
    if source is None or isinstance(source, bool):
        return build_model(config)
    model = load_model(source)
    wanted, found = _architecture(config), _architecture(model.config)
    differing = [key for key in wanted if wanted[key] != found.get(key)]
    if differing:
        shown = "; ".join(f"{key}: {found.get(key)!r} there, {wanted[key]!r} asked" for key in differing[:3])
        raise TsnError(f"pretrained={source!s}: not the model asked for ({shown}); load it as it is with "
                       "tsn.load_model, or ask for its own configuration")
    return model


def _architecture(config: ModelConfig) -> dict[str, Any]:
    """A model config without where its backbone's first weights came from: a source's weights replace them."""
    return config.replace(pretrained=False, pretrained_file=None).to_dict()
