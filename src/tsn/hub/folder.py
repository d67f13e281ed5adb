"""A model as a folder in the Hugging Face Hub layout: ``model.safetensors``, ``config.json``, ``README.md``.

``model.safetensors`` is an ordinary tsn safetensors checkpoint (its metadata holds the model config, so
``tsn.load_model`` reads the file alone too); ``config.json`` repeats that config with what the card states (size,
GFLOPs, origin) and the weights' sha256; ``README.md`` is the model card (:mod:`tsn.hub.card`); ``evaluation.json``
is the ``tsn evaluate`` record the card quotes, when one was given. Files are written one by one, atomically, and
``config.json`` last: a folder interrupted while being saved has no config and is not taken for a model.
"""

from __future__ import annotations

import copy
import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tsn.errors import TsnError
from tsn.hub.card import CardFacts, lookup, render_card
from tsn.hub.source import CARD_FILE, CONFIG_FILE, EVALUATION_FILE, WEIGHTS_FILE, parse_hub_source
from tsn.models import DensePredictionModel, ModelConfig, build_model
from tsn.utils.checks import escaped, file_kind, one_line

__all__ = ["FORMAT", "FORMAT_VERSION", "save_pretrained", "load_pretrained", "read_pretrained_config", "count_gflops",
           "check_output", "save_run_pretrained"]

FORMAT = "tsn-pretrained"
FORMAT_VERSION = 1
_MAX_JSON_BYTES = 16 << 20  # a config or an evaluation record is kilobytes; anything this large is not one
_DEFAULT_SIZE = (512, 512)  # the paper's input, for the GFLOPs of a model saved without an evaluation
_WINDOWS_PATH = re.compile(r"^[A-Za-z]:[\\/]")
_SEPARATORS = re.compile(r"[\\/]")


def _read_json(path: Path, what: str) -> Any:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read, a device never end it
            raise TsnError(f"{what} {escaped(path)} is {file_kind(info.st_mode)}, not a JSON file")
        size = info.st_size
        if size > _MAX_JSON_BYTES:
            raise TsnError(f"{what} {escaped(path)} is {size:,} bytes, too large to be one; check the file")
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:  # RecursionError: nested too deep
        raise TsnError(f"cannot read {what} {escaped(path)} ({one_line(error, 160)}); give a readable JSON file") \
            from None


def _evaluation_record(evaluation: str | os.PathLike[str] | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if evaluation is None:
        return None
    record = dict(evaluation) if isinstance(evaluation, Mapping) else _read_json(Path(evaluation), "evaluation")
    where = "evaluation record" if isinstance(evaluation, Mapping) else f"evaluation {escaped(evaluation)}"
    if not isinstance(record, dict) or record.get("format") != "tsn-evaluate" or not all(
            isinstance(record.get(key), Mapping) for key in ("tasks", "dataset")):
        raise TsnError(f"{where} is not a `tsn evaluate` result (format 'tsn-evaluate' with per-task results); give "
                       "the JSON file tsn evaluate wrote")
    problem = _record_problem(record)
    if problem:
        raise TsnError(f"{where} is damaged ({problem}); evaluate the model again")
    return record


def _record_problem(record: Mapping[str, Any]) -> str:
    """What is malformed in a ``tsn evaluate`` record, or "" (the card reads these entries as they are)."""
    if not all(isinstance(result, Mapping) for result in record["tasks"].values()):
        return "a task's result is not a mapping"
    headline = record.get("headline", {})
    if not isinstance(headline, Mapping) or not all(
            isinstance(entry, Mapping) and isinstance(entry.get("metric"), str)
            and isinstance(entry.get("higher_is_better"), bool)
            and isinstance(entry.get("table_value", 0.0), (int, float)) for entry in headline.values()):
        return "'headline' is not {task: {metric, higher_is_better, table_value}}"
    if not isinstance(record.get("protocols", {}), Mapping):
        return "'protocols' is not a mapping"
    size = record.get("input_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(isinstance(side, int) and side > 0 for side in size)):
        return "'input_size' is not [height, width]"
    return ""


def _check_record_is_of(record: Mapping[str, Any], config: ModelConfig) -> None:
    """An evaluation quoted by a card scored this architecture and only its tasks (the weights cannot be told from
    the record: the caller vouches for them)."""
    foreign = [task for task in record["tasks"] if task not in config.tasks]
    if foreign:
        names = one_line(", ".join(map(str, foreign)), 120)
        raise TsnError(f"the evaluation scored {names}, which this model does not have: it is the evaluation of "
                       "another model; evaluate this one")
    scored = lookup(record, "checkpoint.config")
    if isinstance(scored, Mapping):
        try:
            same = _architecture(ModelConfig.from_dict(scored)) == _architecture(config)
        except (TypeError, ValueError, TsnError):
            same = False
        if not same:
            raise TsnError("the evaluation scored a model of another configuration (its checkpoint.config differs "
                           "from this model's); evaluate this one")


def _run_facts(run: str | os.PathLike[str] | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The training config and last validation of a ``tsn train`` run folder (None where it has none)."""
    if run is None:
        return None, None
    import yaml

    from tsn.run_folder import RunPaths

    paths = RunPaths(Path(run).expanduser())
    if not paths.config.is_file():
        raise TsnError(f"run {escaped(paths.root)} has no config.yaml; give the folder a `tsn train` run wrote")
    try:
        train_config = yaml.safe_load(paths.config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise TsnError(f"cannot read {escaped(paths.config)} ({one_line(error, 160)})") from None
    validation = None
    if paths.result.is_file():
        result = _read_json(paths.result, "run result")
        last = lookup(result, "validation")  # None before any validation
        metrics = lookup(last, "metrics")
        if isinstance(metrics, Mapping) and all(isinstance(m, Mapping) for m in metrics.values()):
            validation = {**last, "split": lookup(train_config, "data.val_split")}
    if not isinstance(train_config, dict) or not all(
            isinstance(train_config.get(section, {}), Mapping) for section in ("data", "optim", "model")):
        raise TsnError(f"{escaped(paths.config)} is not a tsn training config; give the folder a `tsn train` run "
                       "wrote")
    return train_config, validation


def _run_evaluation(run: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """The run's own ``tsn evaluate`` record (``RUN/evaluation.json``) when it scored this run's checkpoint."""
    if run is None:
        return None
    from tsn.run_folder import RunPaths

    paths = RunPaths(Path(run).expanduser())
    if not paths.evaluation.is_file():
        return None
    record = _evaluation_record(paths.evaluation)
    scored = Path(str((record or {}).get("checkpoint", {}).get("path", ""))).resolve()
    root = paths.root.resolve()
    return record if scored == root or root in scored.parents else None


def count_gflops(config: ModelConfig, size: tuple[int, int]) -> dict[str, Any]:
    """GFLOPs of one image at ``size`` (H, W): one task, and every task in one call, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_model(config.replace(pretrained=False, pretrained_file=None)).eval()
        image = torch.empty(1, 3, *size)
    counts = {}
    for key, tasks in (("one_task", model.tasks[0]), ("all_tasks", None)):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(image, tasks)
        counts[key] = counter.get_total_flops() / 1e9
    return {"input_size": list(size), **counts}


def _input_size(evaluation: Mapping[str, Any] | None, train_config: Mapping[str, Any] | None) -> tuple[int, int]:
    size: Any = lookup(evaluation, "input_size") or lookup(train_config, "data.size")
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size):
        return int(size[0]), int(size[1])
    return _DEFAULT_SIZE


def _local_paths_hidden(value: Any) -> Any:
    """``value`` with every absolute path replaced by ``.../NAME``: a shared folder does not publish the saver's
    folders (data roots, checkpoint and weight-file locations)."""
    if isinstance(value, Mapping):
        return {key: _local_paths_hidden(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_local_paths_hidden(item) for item in value]
    if isinstance(value, str) and (value.startswith(("/", "~")) or _WINDOWS_PATH.match(value)):
        return ".../" + _SEPARATORS.split(value.rstrip("/\\"))[-1]
    return value


def _shareable(model: DensePredictionModel) -> DensePredictionModel:
    """The model as it is saved: the same weights (shared, not copied), its backbone weight file named without its
    folder."""
    if model.config.pretrained_file is None:
        return model
    view = copy.copy(model)
    view.config = model.config.replace(pretrained_file=Path(model.config.pretrained_file).name)
    return view


def _unwrap(model: torch.nn.Module) -> DensePredictionModel:
    """The tsn model inside DistributedDataParallel / torch.compile wrappers."""
    inner: Any = model
    while not isinstance(inner, DensePredictionModel):
        inner = getattr(inner, "module", None) or getattr(inner, "_orig_mod", None)
        if inner is None:
            raise TsnError(f"save_pretrained saves tsn models; got a {type(model).__name__}")
    return inner


def check_output(directory: Path, overwrite: bool = False, inputs: tuple[Path, ...] = ()) -> None:
    """Before any work: ``directory`` is new, empty or an earlier pretrained folder (whose files are replaced), or
    ``overwrite`` is given; it is not one of the ``inputs`` and would not replace one of them."""
    from tsn.utils.checks import ensure_writable_dir

    ours = [directory / name for name in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE, EVALUATION_FILE)]
    for source in inputs:
        if not source.exists():
            continue
        if (directory.exists() and os.path.samefile(directory, source)) or any(
                path.exists() and os.path.samefile(path, source) for path in ours):
            raise TsnError(f"{escaped(directory)}: saving there would replace the input {escaped(source)}; choose "
                           "another output folder")
    ensure_writable_dir(directory, "pretrained folder", create=False)
    if not directory.is_dir() or overwrite:
        return
    config = directory / CONFIG_FILE
    earlier = config.is_file() and _is_our_config(config)
    for path in ours:
        if path.exists() and not earlier:
            raise TsnError(f"{escaped(path)} exists and is not part of a tsn pretrained folder; choose another "
                           "output folder, or pass overwrite=True (--force) to replace it")


def _is_our_config(path: Path) -> bool:
    try:
        return _read_json(path, "config").get("format") == FORMAT
    except (TsnError, AttributeError):
        return False


def save_pretrained(
    model: torch.nn.Module,
    directory: str | os.PathLike[str],
    *,
    name: str | None = None,
    evaluation: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    run: str | os.PathLike[str] | None = None,
    train_config: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    license: str = "mit",
    license_note: str = "",
    overwrite: bool = False,
) -> Path:
    """Write ``model`` to ``directory`` in the Hub layout, with its model card; returns the folder.

    ``evaluation``: a ``tsn evaluate`` record (its file or dict), quoted by the card and copied beside it.
    ``run``: the ``tsn train`` run folder the model comes from: the card lists its recipe and quotes the run's own
    evaluation (``RUN/evaluation.json``, when it scored this run) or else its last validation; ``train_config``
    gives a recipe directly instead. Absolute paths in these records are shortened to their last part.
    ``provenance``: the origin of a converted checkpoint (:func:`tsn.hub.provenance.conversion_provenance`).
    ``license``: a Hub licence id (``mit``, ``apache-2.0``, ``other``...); ``license_note`` replaces the card's
    licence sentence. An existing folder is written into when it is empty or holds an earlier pretrained model;
    other files of the same names are replaced only with ``overwrite``.
    """
    from tsn import __version__
    from tsn.models.checkpoint import save_checkpoint
    from tsn.utils.io import atomic_write_json, atomic_write_text, file_sha256

    inner = _shareable(_unwrap(model))
    directory = Path(directory).expanduser()
    record = _local_paths_hidden(_evaluation_record(evaluation) if evaluation is not None else _run_evaluation(run))
    run_config, validation = _run_facts(run)
    recipe = _local_paths_hidden(dict(train_config) if train_config is not None else run_config)
    check_output(directory, overwrite, tuple(Path(p) for p in (run,) if p is not None))
    config = inner.config
    if record is not None:
        _check_record_is_of(record, config)
    gflops = count_gflops(config, _input_size(record, recipe))
    facts = CardFacts(
        name=name or directory.resolve().name, config=config.to_dict(),
        architecture=one_line((type(inner).__doc__ or type(inner).__name__).strip().splitlines()[0]),
        parameters=inner.num_parameters(), gflops=gflops, license=license, license_note=license_note,
        tsn_version=__version__, evaluation=record, validation=validation if record is None else None,
        train_config=recipe, provenance=provenance,
    )
    card = render_card(facts)  # every fact checked before the first file is written
    directory.mkdir(parents=True, exist_ok=True)
    weights = save_checkpoint(directory / WEIGHTS_FILE, inner)
    if record is not None:
        atomic_write_json(directory / EVALUATION_FILE, record)
    elif (directory / EVALUATION_FILE).exists():  # an earlier save's record describes other weights
        (directory / EVALUATION_FILE).unlink()
    atomic_write_text(directory / CARD_FILE, card)
    atomic_write_json(directory / CONFIG_FILE, {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_name": "tsn",
        "tsn_version": __version__,
        "model_config": facts.config,
        "parameters": facts.parameters,
        "gflops": gflops,
        "weights_sha256": file_sha256(weights),
        "license": license,
        **({"converted_from": dict(provenance)} if provenance is not None else {}),
    })
    return directory


def read_pretrained_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """``config.json`` of a pretrained folder, checked (format, version, a model config)."""
    path = Path(directory) / CONFIG_FILE
    config = _read_json(path, "pretrained config")
    if not isinstance(config, Mapping) or config.get("format") != FORMAT:
        raise TsnError(f"{escaped(path)} is not the config of a tsn pretrained folder (format {FORMAT!r}); save "
                       "models with tsn.save_pretrained or tsn train --save-pretrained")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise TsnError(f"{escaped(path)} has format version {version!r}; this tsn reads up to {FORMAT_VERSION}: "
                       "upgrade tsn")
    if not isinstance(config.get("model_config"), Mapping):
        raise TsnError(f"{escaped(path)} lacks its model config; the folder is damaged: save it again")
    return dict(config)


def _architecture(config: ModelConfig) -> dict[str, Any]:
    """A model config without where its backbone's initial weights came from: the folder's weights replace them."""
    return config.replace(pretrained=False, pretrained_file=None).to_dict()


def _load_folder(folder: Path, source: str, map_location: str | torch.device) -> DensePredictionModel:
    from tsn.models.checkpoint import load_model
    from tsn.utils.io import file_sha256

    config = read_pretrained_config(folder)
    weights = folder / WEIGHTS_FILE
    expected = config.get("weights_sha256")
    if expected is not None and file_sha256(weights) != expected:
        raise TsnError(f"{source}: {WEIGHTS_FILE} is not the file its config.json describes (sha256 differs: "
                       "changed, damaged or partly downloaded); save or download the model again")
    model = load_model(weights, map_location=map_location)
    try:
        declared = _architecture(ModelConfig.from_dict(config["model_config"]))
    except (TypeError, ValueError, KeyError, TsnError) as error:
        raise TsnError(f"{source}: config.json holds a model config this tsn cannot build ({one_line(error, 160)})")\
            from None
    if declared != _architecture(model.config):
        raise TsnError(f"{source}: config.json and {WEIGHTS_FILE} describe different models; save the model again")
    return model


def load_pretrained(
    source: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> DensePredictionModel:
    """The model of a pretrained folder or of ``hf-hub:ORG/NAME[@REVISION]`` (in eval mode, on ``map_location``).

    A Hub model is fetched through huggingface_hub into its cache (``HF_HOME``, ``HF_HUB_CACHE``) and read from
    there; with ``HF_HUB_OFFLINE=1`` only the cache is used. Any problem is one line (:class:`TsnError`).
    """
    hub = parse_hub_source(source)
    if hub is not None:
        from tsn.hub.remote import download

        return _load_folder(download(hub), str(hub), map_location)
    folder = Path(source).expanduser()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise TsnError(f"{escaped(folder)} is not a pretrained folder: it has no {name}; give a folder written "
                           "by tsn.save_pretrained, or hf-hub:ORG/NAME")
    return _load_folder(folder, escaped(folder), map_location)


def save_run_pretrained(
    run: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    *,
    name: str | None = None,
    evaluation: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """``tsn train --save-pretrained``: the model of a run folder (its best checkpoint, else its last) with the run's
    recipe, and its last validation or ``evaluation``, in the card."""
    from tsn.models.checkpoint import load_model

    check_output(Path(directory).expanduser(), overwrite, (Path(run),))
    return save_pretrained(load_model(run), directory, name=name, evaluation=evaluation, run=run, overwrite=overwrite)
