"""Evaluation protocols: every choice of a codebase that changes a number, as one named object.

Multi-task dense prediction papers score with their codebase's evaluators, and those differ in the details: how
an image reaches the network (resize, or pad and crop back), whether the saved 8-bit files or the float
predictions are scored, each family's metric definition (thresholds, valid masks, per-image or pooled averages),
the edge benchmark's thresholds and tolerance, and what an empty image or an absent class does (0, skipped, NaN).
A :class:`ScoringProtocol` names all of them; ``tsn evaluate --protocol NAME``, validation during training
(:mod:`tsn.training.validation`) and :func:`tsn.evaluation.evaluate.evaluate_checkpoint` use it, and every
evaluation record says which one made it (:meth:`ScoringProtocol.record`).

Each built-in protocol is checked against the code that defines it: ``tests/protocol_reference`` holds that
code's outputs on a fixture with the edge cases, and ``tests/metrics/test_protocols.py`` compares. See
``docs/protocols.md`` for the table of differences.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tsn.errors import TsnError
from tsn.utils.registry import Registry

__all__ = [
    "ScoringProtocol",
    "register_protocol",
    "get_protocol",
    "list_protocols",
    "default_protocol",
    "protocol_help",
]

_ANY = "*"
"""Key of a per-dataset mapping that applies to every dataset not named."""
_FITS = ("resize", "pad", "pad-to-size")
"""The fits of :func:`tsn.inference.pipeline.make_fit` (spelled out: this module stays free of torch)."""


@dataclass(frozen=True)
class ScoringProtocol:
    """How one codebase scores predictions (see the module docstring); frozen and JSON-describable."""

    name: str
    title: str
    source: str
    """The defining code (repository and files), which the reference outputs were produced with."""
    used_by: str
    """Who reports numbers under it."""
    fit: str | Mapping[str, str] = "resize"
    """How an image reaches the network, one for every dataset or per dataset (``*``: the others): ``resize`` (to
    the dataset's evaluation size, predictions resized back), ``pad`` (the image at its size, padded at the bottom
    and right to a multiple of 32, the output cropped back) or ``pad-to-size`` (the image at its size in the centre
    of the fixed :attr:`fit_sizes` input, the output cropped back); a pipeline fit of
    :func:`tsn.inference.pipeline.make_fit`."""
    fit_sizes: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """Dataset (or ``*``) -> the fixed network input ``(H, W)`` of a ``pad-to-size`` fit there (without one: the
    dataset's evaluation size); ``--size`` replaces it."""
    scores_saved_files: bool = True
    """Score the predictions as the 8-bit files the codebase saves hold them (read back as its evaluators read
    them); False: score the float predictions (online meters)."""
    metric_options: Mapping[str, Any] = field(default_factory=dict)
    """Options of :func:`tsn.metrics.build_metric` for every task (each family reads its own)."""
    dataset_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Dataset -> options that differ there (e.g. LibMTL's test batch size, which decides its NaN)."""
    edge_presets: Mapping[str, str] = field(default_factory=dict)
    """Dataset (or ``*``) -> edge benchmark preset of :mod:`tsn.metrics.edges`."""
    edge_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Dataset -> fields of the edge preset replaced there (e.g. the NYUD tolerance)."""
    headline: Mapping[str, str] = field(default_factory=dict)
    """Metric family -> the result key reported as the headline where it is not the task's own metric."""
    reported: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Metric family -> the result keys printed beside the headline (what this codebase's papers print)."""
    scale: str = "fractions for IoU, F and pixel accuracy (tables x100), degrees, percent within, label units"
    empty: str = ""
    """NaN and empty-image semantics, in words."""
    checked: str = ""
    """How the protocol was checked against its code."""

    def __post_init__(self) -> None:
        fits = self.fit.values() if isinstance(self.fit, Mapping) else (self.fit,)
        for fit in fits:
            if fit not in _FITS:
                raise TsnError(f"protocol {self.name!r}: fit must be one of {', '.join(_FITS)}, got {fit!r}")
        if isinstance(self.fit, Mapping) and _ANY not in self.fit:
            raise TsnError(f"protocol {self.name!r}: a per-dataset fit needs a '*' entry for the other datasets")
        for dataset, size in self.fit_sizes.items():
            if (not isinstance(size, tuple) or len(size) != 2
                    or not all(isinstance(side, int) and side > 0 for side in size)):
                raise TsnError(f"protocol {self.name!r}: fit size of {dataset!r} must be (H, W), got {size!r}")

    def check(self) -> ScoringProtocol:
        """Refuse a metric option no registered family reads (imports the metrics, so it runs on first use,
        not when ``tsn --help`` lists the protocols)."""
        from tsn.metrics import check_metric_options

        check_metric_options(self.metric_options)
        for options in self.dataset_options.values():
            check_metric_options(options)
        return self

    # ------------------------------------------------------------------------------------------- options
    def fit_for(self, dataset: str) -> str:
        """The name of the fit on ``dataset`` (:attr:`fit`)."""
        if isinstance(self.fit, Mapping):
            return self.fit.get(dataset, self.fit[_ANY])
        return self.fit

    def fit_size(self, dataset: str) -> tuple[int, int] | None:
        """The fixed network input of a ``pad-to-size`` fit on ``dataset``; None where the protocol names none."""
        return self.fit_sizes.get(dataset, self.fit_sizes.get(_ANY))

    def edge_preset(self, dataset: str) -> str | None:
        return self.edge_presets.get(dataset, self.edge_presets.get(_ANY))

    def options_for(self, dataset: str) -> dict[str, Any]:
        """The metric options on ``dataset`` (edge preset and overrides included)."""
        self.check()
        options = {**self.metric_options, **self.dataset_options.get(dataset, {})}
        preset = self.edge_preset(dataset)
        if preset is not None:
            options["edge_protocol"] = preset
        if dataset in self.edge_overrides:
            options["edge_options"] = dict(self.edge_overrides[dataset])
        return options

    def make_metrics(self, specs: Any, dataset: str) -> dict[str, Any]:
        """One fresh metric per task of ``specs`` (task specs of ``dataset``), keyed by task name."""
        options = self.options_for(dataset)
        return {spec.name: spec.make_metric(**options) for spec in specs}

    # ------------------------------------------------------------------------------------------- scoring
    def prepare(self, spec: Any, prediction: np.ndarray) -> np.ndarray:
        """A postprocessed prediction at the label's size -> what the metric scores under this protocol."""
        return spec.read_saved(spec.to_saved(prediction)) if self.scores_saved_files else prediction

    def headline_key(self, spec: Any) -> str:
        """The result key reported as ``spec``'s headline under this protocol."""
        family = spec.kind.metric_families.get(spec.metric)
        return self.headline.get(family, spec.metric) if family else spec.metric

    def reported_keys(self, spec: Any) -> tuple[str, ...]:
        family = spec.kind.metric_families.get(spec.metric)
        return tuple(self.reported.get(family, ())) if family else ()

    def record(self, dataset: str | None = None) -> dict[str, Any]:
        """The JSON description every result made under this protocol carries."""
        entry: dict[str, Any] = {
            "name": self.name, "title": self.title, "source": self.source, "fit": _plain(self.fit),
            "scores_saved_files": self.scores_saved_files, "empty": self.empty, "scale": self.scale,
        }
        if self.fit_sizes:
            entry["fit_sizes"] = _plain(self.fit_sizes)
        if dataset is not None:
            entry["fit"] = self.fit_for(dataset)
            entry["metric_options"] = _plain(self.options_for(dataset))
        return entry


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_PROTOCOLS: Registry[ScoringProtocol] = Registry(
    "evaluation protocol", "register one with tsn.evaluation.protocols.register_protocol in a plugin: tsn --plugin "
    "MODULE", normalize=lambda name: name.strip().lower(), name_pattern=r"[a-z][a-z0-9_-]*",
)


def register_protocol(protocol: ScoringProtocol) -> ScoringProtocol:
    """Add a protocol; a taken name is refused in one line. A dataset names its default protocol itself
    (:attr:`tsn.dataset_catalog.EvaluationProtocol.protocol`)."""
    return _PROTOCOLS.register(protocol.name, protocol)


def get_protocol(name: str | ScoringProtocol) -> ScoringProtocol:
    if isinstance(name, ScoringProtocol):
        return name
    return _PROTOCOLS.lookup(name)


def list_protocols() -> list[str]:
    return list(_PROTOCOLS)


def default_protocol(dataset: str) -> ScoringProtocol:
    """The protocol ``dataset``'s literature reports, as its catalog entry names it."""
    from tsn.dataset_catalog import get_dataset

    return get_protocol(get_dataset(dataset).evaluation.protocol)


def _defaults_for(name: str) -> list[str]:
    from tsn.dataset_catalog import get_dataset, list_datasets

    return [dataset for dataset in list_datasets() if get_dataset(dataset).evaluation.protocol == name]


def protocol_help() -> str:
    """One line per protocol for ``--help``: name, title and the datasets it is the default for."""
    lines = []
    for protocol in _PROTOCOLS.values():
        defaults = _defaults_for(protocol.name)
        default = f" (default for {', '.join(defaults)})" if defaults else ""
        lines.append(f"{protocol.name}: {protocol.title}{default}")
    return "; ".join(lines)


import tsn.evaluation.protocol_catalog  # noqa: E402, F401  (registers the built-in protocols)
