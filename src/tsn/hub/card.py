"""The model card (``README.md``) of a pretrained folder: what the model is, how it was trained and scored.

The card is written from facts only: the model's config and size, the training config of its run, the ``tsn
evaluate`` record (whose numbers are copied, never recomputed or rounded, into the card's Hub metadata) or else the
validation of the run (labelled as such: it is not the reference protocol), and, for converted checkpoints, the
origin file and the evidence that its weights were carried over unchanged. A fact that was not given is said to be
unknown rather than guessed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tsn.tasks import TaskSpec, resolve_tasks
from tsn.utils.checks import one_line

__all__ = ["CardFacts", "CITATION", "render_card", "scalar_metrics", "lookup"]

CITATION = """@inproceedings{sun2021task,
  title={Task Switching Network for Multi-Task Learning},
  author={Sun, Guolei and Probst, Thomas and Paudel, Danda Pani and Popovi{\\'c}, Nikola and Kanakis, Menelaos
          and Patel, Jagruti and Dai, Dengxin and Van Gool, Luc},
  booktitle={Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  pages={8291--8300},
  year={2021}
}"""
"""The paper every card cites."""

_RECIPE_KEYS: tuple[tuple[str, str], ...] = (
    ("optim.name", "optimizer"),
    ("optim.lr", "learning rate"),
    ("optim.encoder_lr", "encoder learning rate"),
    ("optim.weight_decay", "weight decay"),
    ("scheduler.name", "learning-rate schedule"),
    ("schedule", "task schedule"),
    ("epochs", "epochs"),
    ("max_steps", "step limit"),
    ("batch_size", "batch size"),
    ("grad_accum", "gradient accumulation"),
    ("amp", "mixed precision"),
    ("data.size", "training input size"),
    ("data.train_transform", "augmentation"),
    ("loss_weights", "loss weights (besides the tasks' defaults)"),
    ("label_fractions", "label fractions"),
    ("seed", "seed"),
)
"""Training-config entries the card lists (the whole resolved config follows them)."""


@dataclass
class CardFacts:
    """Everything a card states; ``None`` where the fact was not given."""

    name: str
    config: Mapping[str, Any]
    """The model config (:meth:`tsn.models.ModelConfig.to_dict`)."""
    architecture: str
    """One line on the architecture (its class's docstring)."""
    parameters: int
    gflops: Mapping[str, Any] | None
    """``input_size`` (H, W), ``one_task`` and ``all_tasks`` GFLOPs of one image."""
    license: str
    tsn_version: str
    evaluation: Mapping[str, Any] | None = None
    """A ``tsn evaluate`` record."""
    validation: Mapping[str, Any] | None = None
    """``split``, ``n_images``, ``metrics`` of the run's last validation (when there is no evaluation record)."""
    train_config: Mapping[str, Any] | None = None
    provenance: Mapping[str, Any] | None = None
    """Origin and evidence of a converted checkpoint (:func:`tsn.hub.provenance.conversion_provenance`)."""
    license_note: str = ""
    tags: Sequence[str] = field(default_factory=tuple)


def scalar_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The finite real-valued entries of one task's metric result, unchanged (counts such as ``n_images`` or
    ``num_classes``, lists and nested protocol descriptions left out)."""
    return {key: value for key, value in result.items() if isinstance(value, float) and math.isfinite(value)}


def _specs(facts: CardFacts) -> dict[str, TaskSpec]:
    return {spec.name: spec for spec in resolve_tasks(facts.config["tasks"], facts.config.get("task_channels", {}))}


def _dataset(facts: CardFacts) -> tuple[str | None, str | None]:
    """(dataset, split) the card's numbers come from: the evaluation's, else the training config's."""
    if facts.evaluation is not None:
        return lookup(facts.evaluation, "dataset.name"), lookup(facts.evaluation, "dataset.split")
    if facts.train_config is not None:
        split = lookup(facts.validation, "split") or lookup(facts.train_config, "data.val_split")
        return lookup(facts.train_config, "data.dataset"), split
    return None, None


def _metadata(facts: CardFacts) -> str:
    """The card's YAML front matter (Hub metadata), model-index included, through huggingface_hub's own types."""
    from huggingface_hub import EvalResult, ModelCardData

    dataset, split = _dataset(facts)
    specs = _specs(facts)
    results = []
    if facts.evaluation is not None and dataset:
        for task, result in facts.evaluation.get("tasks", {}).items():
            for metric, value in scalar_metrics(result).items():
                results.append(EvalResult(
                    task_type=task, task_name=specs[task].title if task in specs else task,
                    dataset_type=dataset, dataset_name=dataset, dataset_split=split,
                    metric_type=metric, metric_name=metric, metric_value=value,
                ))
    data = ModelCardData(
        library_name="tsn",
        license=facts.license,
        tags=["multi-task-learning", "dense-prediction", "task-switching-network", "tsn", *facts.tags],
        datasets=[dataset] if dataset else None,
        model_name=facts.name,
        eval_results=results or None,
    )
    return data.to_yaml()


def _text(value: Any) -> str:
    """A value from a record as one line of Markdown that cannot break a table or open HTML."""
    return one_line(value, 200).replace("|", "\\|").replace("<", "&lt;")


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return _text(value)


def _backbone(config: Mapping[str, Any]) -> str:
    text = f"`{config['backbone']}` (timm)"
    if config.get("pretrained_file"):
        return f"{text}, initialised from the weights file `{config['pretrained_file']}` before training"
    if config.get("pretrained"):
        return f"{text}, initialised from its pretrained weights before training"
    return text


def _model_section(facts: CardFacts) -> list[str]:
    config, specs = facts.config, _specs(facts)
    tasks = ", ".join(f"{spec.name} ({spec.title}, {spec.channels} channel{'s' * (spec.channels > 1)})"
                      for spec in specs.values())
    rows = [
        ("Architecture", f"`{config['arch']}`: {facts.architecture}"),
        ("Backbone", _backbone(config)),
        ("Tasks", tasks),
        ("Parameters", f"{facts.parameters:,}"),
    ]
    if facts.gflops is not None:
        height, width = facts.gflops["input_size"]
        all_tasks = (f"; all {len(specs)} tasks: {facts.gflops['all_tasks']:.2f}"
                     if len(specs) > 1 else "")
        rows.append(("GFLOPs", f"{facts.gflops['one_task']:.2f} for one task at {height} x {width}{all_tasks} "
                               "(convolutions and matrix products, counted by torch's FlopCounterMode)"))
    rows.append(("Files", "`model.safetensors` (weights), `config.json` (the model config), this card"
                          + (", `evaluation.json` (the evaluation quoted below)" if facts.evaluation else "")))
    lines = ["## Model", "", "| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows), ""]
    return lines


def _usage_section(facts: CardFacts) -> list[str]:
    return [
        "## Use", "",
        "```python",
        "import tsn",
        "",
        f'model = tsn.load_model("hf-hub:ORG/{facts.name}")  # or the local folder holding this card',
        'maps = tsn.predict(model, "photo.jpg")  # {task: prediction at the photo\'s size}',
        "```", "",
        f"On the command line: `tsn predict --checkpoint hf-hub:ORG/{facts.name} photo.jpg -o out/` "
        "(replace ORG with the repository's owner). Offline, `HF_HUB_OFFLINE=1` loads it from the Hugging Face "
        "cache.", "",
    ]


def lookup(config: Any, dotted: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``, or None where a part is missing or not a mapping."""
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _training_section(facts: CardFacts) -> list[str]:
    lines = ["## Training", ""]
    if facts.provenance is not None:
        lines += ["Trained by the paper's authors and converted (see *Origin* below), with the paper's recipe: "
                  "PASCAL-Context train at 512 x 512, batch 16, one task per batch; Adam with learning rate 1e-4 "
                  "(encoder 1e-6), halved when the mean validation loss plateaus; at most 300 epochs.", ""]
        return lines
    if facts.train_config is None:
        return [*lines, "No training record was given when this folder was saved: the recipe of these weights is "
                        "not known to this card.", ""]
    config = facts.train_config

    def entry(key: str) -> Any:
        value = lookup(config, key)
        return "?" if value is None else value

    lines.append(f"Trained with `tsn train` on **{entry('data.dataset')}**, split `{entry('data.train_split')}` "
                 f"(validation split `{entry('data.val_split')}`)"
                 + (f", preset `{config['name']}`" if config.get("name") else "") + ".")
    lines.append("")
    for key, label in _RECIPE_KEYS:
        value = lookup(config, key)
        if value not in (None, {}, []):
            lines.append(f"- {label}: `{json.dumps(value) if isinstance(value, (dict, list)) else value}`")
    import yaml

    lines += ["", "<details><summary>The resolved training config</summary>", "", "```yaml",
              yaml.safe_dump(dict(config), sort_keys=False).rstrip(), "```", "", "</details>", ""]
    return lines


def _protocol_lines(protocols: Mapping[str, Any]) -> list[str]:
    lines = []
    for key, value in protocols.items():
        if isinstance(value, Mapping):
            value = ", ".join(f"{_text(k)} `{_text(v).replace('`', chr(39))}`" for k, v in value.items())
        else:
            value = _text(value)
        lines.append(f"- {_text(key)}: {value}")
    return lines


def _metric_table(specs: Mapping[str, TaskSpec], results: Mapping[str, Mapping[str, Any]],
                  headline: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One row per task: its headline metric (as stored and in the paper's table units), then every metric."""
    lines = ["| task | headline metric | value | in the paper's units | every metric |", "|---|---|---|---|---|"]
    for task, result in results.items():
        spec, entry = specs.get(task), headline.get(task)
        metric = entry["metric"] if entry else (spec.metric if spec else "?")
        value = result.get(metric)
        higher = entry["higher_is_better"] if entry else (spec.higher_is_better if spec else True)
        if entry and "table_value" in entry:
            table = _number(float(entry["table_value"]))
        else:
            table = _number(spec.table_scale * value) if spec and isinstance(value, float) else "?"
        others = ", ".join(f"{_text(name)} {_number(v)}" for name, v in scalar_metrics(result).items())
        lines.append(f"| {_text(task)} | {_text(metric)} ({'higher' if higher else 'lower'} is better) | "
                     f"{_number(value)} | {table} | {others} |")
    return lines


def _evaluation_section(facts: CardFacts) -> list[str]:
    lines, specs = ["## Evaluation", ""], _specs(facts)
    record = facts.evaluation
    if record is not None:
        dataset = record.get("dataset", {})
        size = record.get("input_size")
        lines.append(f"Scored with `tsn evaluate` (tsn {record.get('tsn_version', '?')}) on "
                     f"**{dataset.get('name', '?')}**, split `{dataset.get('split', '?')}` "
                     f"({dataset.get('n_images', '?')} images)"
                     + (f", network input {size[0]} x {size[1]}" if size else "") + ". Protocols:")
        lines += ["", *_protocol_lines(record.get("protocols", {})), ""]
        lines += _metric_table(specs, record.get("tasks", {}), record.get("headline", {}))
        lines += ["", "Values as the evaluation file holds them (fractions as the metrics give them; the paper's "
                      "tables show mIoU and odsF x 100). The file is `evaluation.json` beside this card.", ""]
        return lines
    if facts.validation is not None and facts.validation.get("metrics"):
        lines.append(f"Not scored with `tsn evaluate`. The last validation during training, on split "
                     f"`{facts.validation.get('split', '?')}` ({facts.validation.get('n_images', '?')} images; the "
                     "trainer's metrics at the training input size, not the reference protocol at the original "
                     "resolution):")
        lines += ["", *_metric_table(specs, facts.validation["metrics"], {}), ""]
        return lines
    return [*lines, "Not evaluated: no evaluation record was given when this folder was saved. Score it with "
                    "`tsn evaluate --checkpoint FOLDER --dataset NAME` and save it again with the record.", ""]


def _origin_section(facts: CardFacts) -> list[str]:
    origin = facts.provenance
    if origin is None:
        return []
    lines = ["## Origin", "",
             f"Converted with `tsn convert` (tsn {origin.get('tsn_version', '?')}) from the authors' released file "
             f"`{origin.get('file', '?')}` ({_number(origin.get('bytes', '?'))} bytes, sha256 "
             f"`{origin.get('sha256', '?')}`).", "", "Evidence that these are the authors' weights, unchanged:", ""]
    lines += [f"- {item}" for item in origin.get("evidence", [])]
    return [*lines, ""]


def render_card(facts: CardFacts) -> str:
    """The whole ``README.md``: Hub metadata, then the sections a reader of a model card expects."""
    specs = _specs(facts)
    dataset, _ = _dataset(facts)
    summary = (f"A `{facts.config['arch']}` model on `{facts.config['backbone']}` for {', '.join(specs)}"
               + (f" on {dataset}" if dataset else "") + f", saved with tsn {facts.tsn_version}.")
    licence = facts.license_note or f"The weights are released under the `{facts.license}` licence."
    lines = [
        "---", _metadata(facts).rstrip(), "---", "", f"# {facts.name}", "", summary, "",
        *_model_section(facts), *_usage_section(facts), *_training_section(facts), *_evaluation_section(facts),
        *_origin_section(facts),
        "## Licence", "", licence, "",
        "## Citation", "",
        "Task Switching Networks were introduced in:", "", "```bibtex", CITATION, "```", "",
    ]
    return "\n".join(lines)
