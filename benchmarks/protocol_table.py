"""The same predictions scored under every evaluation protocol (docs/protocols.md, "the table no one has").

    python benchmarks/protocol_table.py --synthetic-checkpoint RUN/checkpoints/best.pt [--length 100]

scores (a) a demo-like TSN (``tsn demo``) on the synthetic scenes' test split and (b) the TSNs authors' parity
checkpoint (``tests/data/tsns_reference``, converted) on the PASCAL-Context fixture of the tests, each under
every registered protocol, and writes ``benchmarks/results/protocol_table.json`` plus the markdown tables.
Each model runs once per protocol; ``--save`` also keeps the first run's predictions.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from tsn.dataset_catalog import dataset_tasks
from tsn.evaluation.evaluate import evaluate_checkpoint
from tsn.evaluation.protocols import get_protocol, list_protocols

# A few scores beside each headline, where the protocols differ most.
EXTRA = {"saliency": ("maxF",), "depth": ("rmse", "abs_err", "log_rmse"), "normals": ("median",)}


def _authors_checkpoint(folder: Path) -> Path:
    from tsn.models.convert import convert_official_checkpoint
    from tsns_reference import reference_weights

    official = folder / "tsns_model.pth"
    torch.save({"model_state": reference_weights("keys_tsn.json")}, official)
    return convert_official_checkpoint(official, folder / "tsn.pt")


def _row(record: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for task, entry in record["headline"].items():
        row[f"{task} {entry['metric']}"] = entry["table_value"]
        for key in EXTRA.get(task, ()):
            value = record["tasks"][task].get(key)
            if key != entry["metric"] and isinstance(value, float):
                row[f"{task} {key}"] = value * (100 if key in ("maxF",) else 1)
    return row


def _markdown(title: str, rows: dict[str, dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(c for row in rows.values() for c in row))
    lines = [f"### {title}", "", "| protocol | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, row in rows.items():
        cells = ["-" if row.get(c) is None else f"{row[c]:.2f}" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic-checkpoint", type=Path, required=True)
    parser.add_argument("--length", type=int, default=100, help="synthetic test scenes (default 100)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks/results/protocol_table.json")
    args = parser.parse_args()
    tables: dict[str, dict[str, dict[str, Any]]] = {"synthetic": {}, "pascal_fixture": {}}
    with tempfile.TemporaryDirectory() as tmp:
        from fixture_datasets import make_pascal_fixture

        folder = Path(tmp)
        pascal = make_pascal_fixture(folder / "data")
        authors = _authors_checkpoint(folder)
        for protocol in list_protocols():
            synthetic = evaluate_checkpoint(
                args.synthetic_checkpoint, "synthetic", "test", dataset_options={"size": 64, "length": args.length},
                protocol=protocol, workers=args.workers, progress=False,
            )
            tables["synthetic"][protocol] = _row(synthetic)
            fixture = evaluate_checkpoint(authors, "pascal_context", "val", data_root=pascal, size=64,
                                          protocol=protocol, workers=args.workers, progress=False)
            tables["pascal_fixture"][protocol] = _row(fixture)
            print(f"scored under {protocol}", file=sys.stderr)
    record = {
        "what": "the same predictions under every protocol",
        "synthetic": {"checkpoint": str(args.synthetic_checkpoint), "split": "test", "scenes": args.length,
                      "size": 64, "tasks": [s.name for s in dataset_tasks("synthetic")]},
        "pascal_fixture": {"checkpoint": "tests/data/tsns_reference (keys_tsn.json), converted",
                           "dataset": "tests/fixture_datasets.make_pascal_fixture (4 val images)", "size": 64},
        "protocols": {name: get_protocol(name).title for name in list_protocols()},
        "tables": tables,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1) + "\n")
    print(_markdown("Demo-like TSN, synthetic scenes (test split)", tables["synthetic"]))
    print(_markdown("Authors' parity checkpoint, PASCAL-Context fixture (val)", tables["pascal_fixture"]))


if __name__ == "__main__":
    main()
