"""The JSON record of an evaluation, and the protocol field every results table carries.

:func:`evaluation_record` is written by ``tsn evaluate`` for a checkpoint and for saved predictions alike;
:func:`protocol_field` is what ``tsn reproduce`` and study tables add so that a number always says which protocol
made it; :func:`check_same_protocol` is the one-line refusal of a comparison (average drop, delta-m) across
protocols.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from tsn.errors import TsnError
from tsn.evaluation.protocols import ScoringProtocol, get_protocol
from tsn.evaluation.scoring import is_boundary
from tsn.evaluation.tables import RESULT_FORMAT, table_value
from tsn.tasks import TaskSpec

__all__ = ["protocol_field", "record_protocol", "check_same_protocol", "evaluation_record"]

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def protocol_field(protocol: str | ScoringProtocol, dataset: str | None = None) -> dict[str, Any]:
    """``{"name": ..., "title": ..., "fit": ..., ...}``: how a table's numbers were scored (put it under
    ``"protocol"``)."""
    return get_protocol(protocol).record(dataset)


def record_protocol(record: Mapping[str, Any]) -> str | None:
    """The protocol name a record or table carries (``record["protocol"]["name"]``), None if it has none."""
    entry = record.get("protocol") if isinstance(record, Mapping) else None
    if isinstance(entry, Mapping):
        return str(entry.get("name")) if entry.get("name") else None
    return str(entry) if isinstance(entry, str) else None


def check_same_protocol(names: Iterable[str | None], what: str = "an average drop") -> None:
    """Refuse ``what`` over numbers scored under different protocols (unknown = None is not a protocol)."""
    known = sorted({name for name in names if name})
    if len(known) > 1:
        raise TsnError(f"{what} cannot mix protocols ({' and '.join(known)}); score both sides under one "
                       "protocol, e.g. tsn evaluate --protocol " + known[0])


def evaluation_record(
    *,
    source: Mapping[str, Any],
    dataset: Mapping[str, Any],
    input_size: Sequence[int] | None,
    protocol: ScoringProtocol,
    specs: Sequence[TaskSpec],
    results: Mapping[str, Mapping[str, Any]],
    predictions: str | None,
    started: float,
    clock: float,
    device: str,
) -> dict[str, Any]:
    """The JSON-ready record (``format`` ``tsn-evaluate``, version 2 adds ``protocol``).

    ``source`` is ``{"checkpoint": {...}}`` or ``{"predictions_from": {...}}``; ``headline`` uses the protocol's
    headline key of each task (e.g. the InvPT family's saliency maxF)."""
    from tsn import __version__

    protocols: dict[str, Any] = {"scoring": (
        f"{protocol.name}: predictions brought back to each image's original size, scored "
        + ("as the authors' saved files hold them" if protocol.scores_saved_files else "as floats")
    )}
    for spec in specs:
        result = results[spec.name]
        if is_boundary(spec):
            protocols[spec.name] = {"protocol": result["protocol"]["name"], "image_set": result["image_set"]}
        elif "protocol" in result:
            protocols[spec.name] = {"protocol": result["protocol"]}
    headline = {}
    for spec in specs:
        key = protocol.headline_key(spec)
        value = float(results[spec.name][key])
        headline[spec.name] = {"metric": key, "value": value, "table_value": table_value(spec, value),
                               "higher_is_better": spec.higher_is_better}
    return {
        "format": RESULT_FORMAT,
        "format_version": 2,
        "tsn_version": __version__,
        **source,
        "dataset": dict(dataset),
        "input_size": list(input_size) if input_size is not None else None,
        "protocol": protocol.record(str(dataset["name"])),
        "protocols": protocols,
        "tasks": dict(results),
        "headline": headline,
        "reported": {spec.name: list(protocol.reported_keys(spec)) for spec in specs if protocol.reported_keys(spec)},
        "n_images": {spec.name: int(results[spec.name]["n_images"]) for spec in specs},
        "predictions": predictions,
        "time": {
            "started": datetime.fromtimestamp(started, timezone.utc).strftime(_TIME_FORMAT),
            "seconds": round(time.perf_counter() - clock, 3),
            "device": device,
        },
    }
