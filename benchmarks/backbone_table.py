"""Parameters and GFLOPs of the TSN, the multi-head network and the five single-task networks per backbone preset.

For each PASCAL-Context preset family (``tsn_<backbone>_pascal``: the paper's ResNet-18 and today's backbones of
docs/backbones.md) it builds the three kinds of model on PyTorch's ``meta`` device (shapes only: no weights, no
download, seconds) and counts, with ``torch.utils.flop_counter.FlopCounterMode`` on one 512 x 512 image:

* ``tsn_one_task``: one task (semseg), the way the paper's TSN runs; ``tsn_all_tasks``: all five tasks in one call
  (one encoder pass, the decoder batched over the task embeddings);
* ``multihead``: all five tasks (one encoder pass, five decoders);
* ``single_task_x5``: the five single-task networks, one pass each.

FLOPs are counted as PyTorch counts them: two per multiply-add (many papers print multiply-adds as "FLOPs": half
these numbers); attention matrix products are included. Patch models are measured at the padded size they run at
(DINOv2's patch 14: 518 x 518). Writes ``benchmarks/results/backbones.json`` and prints the Markdown table of
docs/backbones.md.

    python benchmarks/backbone_table.py          # about a minute on 2 cores
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from tsn.models import build_model, model_config
from tsn.models.backbone import default_decoder_channels, encoder_feature_info
from tsn.utils.io import atomic_write_json

RESULT = Path(__file__).resolve().parent / "results" / "backbones.json"
FAMILIES = ("r18_pascal", "convnextt_pascal", "swint_pascal", "dinov2s_pascal", "mambaoutt_pascal")
SIZE = 512


def _flops(model: torch.nn.Module, tasks: list[str]) -> int:
    image = torch.empty(1, 3, SIZE, SIZE, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(image, tasks)
    return int(counter.get_total_flops())


def _meta(preset: str, **overrides: Any) -> torch.nn.Module:
    with torch.device("meta"):
        return build_model(model_config(preset, **overrides)).eval()


def measure(family: str) -> dict[str, Any]:
    tsn = _meta(f"tsn_{family}")
    tasks = list(tsn.tasks)
    multihead = _meta(f"multihead_{family}")
    singles = [_meta(f"single_{family}.{task}") for task in tasks]
    encoder = sum(p.numel() for p in tsn.encoder.parameters())
    levels = list(encoder_feature_info(tsn.encoder).channels())
    return {
        "preset": f"tsn_{family}",
        "backbone": tsn.config.backbone,
        "encoder_channels": levels,
        "decoder_channels": list(tsn.config.decoder_channels or default_decoder_channels(levels)),
        "parameters": {
            "encoder": encoder,
            "tsn": tsn.num_parameters(),
            "multihead": multihead.num_parameters(),
            "single_task_x5": sum(model.num_parameters() for model in singles),
        },
        "gflops_512": {
            "tsn_one_task": _flops(tsn, tasks[:1]) / 1e9,
            "tsn_all_tasks": _flops(tsn, tasks) / 1e9,
            "multihead": _flops(multihead, tasks) / 1e9,
            "single_task_x5": sum(_flops(model, [task]) for model, task in zip(singles, tasks, strict=True)) / 1e9,
        },
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| preset | backbone (timm) | params TSN | params multi-head | params 5 single-task | GFLOPs TSN, 1 task "
        "| GFLOPs TSN, 5 tasks | GFLOPs multi-head | GFLOPs 5 single-task |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        p, g = row["parameters"], row["gflops_512"]
        lines.append(
            f"| `{row['preset']}` | `{row['backbone']}` | {p['tsn'] / 1e6:.1f} M | {p['multihead'] / 1e6:.1f} M "
            f"| {p['single_task_x5'] / 1e6:.1f} M | {g['tsn_one_task']:.0f} | {g['tsn_all_tasks']:.0f} "
            f"| {g['multihead']:.0f} | {g['single_task_x5']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    rows = [measure(family) for family in FAMILIES]
    atomic_write_json(RESULT, {
        "input_size": [SIZE, SIZE],
        "flops": "torch.utils.flop_counter.FlopCounterMode, 2 per multiply-add, on the meta device",
        "torch": torch.__version__,
        "machine": platform.machine(),
        "rows": rows,
    })
    print(markdown(rows))


if __name__ == "__main__":
    main()
