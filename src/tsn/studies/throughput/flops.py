"""FLOPs counted from the shapes the layers see (meta device, no arithmetic): per configuration, and split into what
the tasks share and what each task computes."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def count_gflop(preset: str, size: int, batch: int, tasks: str, *, backward: bool = False,
                backbone: str | None = None) -> float:
    """Convolution and matmul GFLOP of one pass of ``preset`` on a ``batch x 3 x size x size`` input.

    ``tasks`` is ``"one"`` (the network once for one task) or ``"all"`` (the all-task path); counted on the meta
    device, so no arithmetic is done.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tsn.models import create_model

    with torch.device("meta"):
        model = create_model(preset, **({"backbone": backbone} if backbone else {}))
        image = torch.empty(batch, 3, size, size)
    # Inference runs without autograd, and then the all-task path streams its tasks (decode_bytes): count that.
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(backward):
        outputs = model(image, None if tasks == "all" else model.tasks[0])
        if backward:
            values = outputs.values() if isinstance(outputs, dict) else [outputs]
            torch.stack([v.float().mean() for v in values]).sum().backward()
    return counter.get_total_flops() / 1e9


def _layer_flops(module: Any, inputs: Any, output: Any) -> int:
    """FLOPs of one call of a convolution or linear layer from its shapes: 2 x multiply-adds, as FlopCounterMode."""
    import torch

    if isinstance(module, torch.nn.Conv2d):
        per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        return 2 * output.numel() * per_output
    return 2 * output.numel() * inputs[0].shape[-1]  # a linear layer: rows x out features x in features


@functools.cache
def flop_split(preset: str, size: int, batch: int = 1) -> dict[str, Any]:
    """Exact FLOPs of ``preset``'s TSN on ``batch x 3 x size x size``: what every task shares and what each adds.

    Counted from the shapes each layer sees on the meta device (no arithmetic): every convolution and linear layer
    (forward hooks, ``2 x`` multiply-adds as :class:`torch.utils.flop_counter.FlopCounterMode` counts them) and the
    channel pooling of the output layer (:func:`tsn.models.layers.pool_channels`, a matrix product). Shared, i.e.
    computed once for any number of tasks: the encoder and the lateral blocks' 1x1 convolutions. Everything else
    depends on the task: the fusion convolutions see AdaIN-modulated, LeakyReLU-activated lateral maps, which
    differ between tasks (tests/perf/test_sharing.py). ``unattributed`` is whatever FlopCounterMode counts beyond
    these layers (an encoder's attention matmuls; 0 for CNN encoders), run once and so shared as well.

    Returns integer FLOPs: ``encoder``, ``lateral_convs``, ``unattributed``, ``shared`` (their sum), ``per_task``
    (task -> FLOPs), ``all_tasks`` (shared + every task, one decoder call), ``per_task_way`` (the network once per
    task) and ``tasks``.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tsn.models import create_model
    from tsn.models.layers import EqualLinear

    with torch.device("meta"):
        model: Any = create_model(preset)
        image = torch.empty(batch, 3, size, size)
    model.decode_bytes = 2**62  # every task in one decoder call: the lateral convolutions run once
    heads = model.head.out_channels
    tasks = list(model.tasks)
    counts: dict[str, int] = {}
    names = {module: name for name, module in model.named_modules()}

    def record(module: Any, inputs: Any, output: Any) -> None:
        counts[names[module]] = counts.get(names[module], 0) + _layer_flops(module, inputs, output)
        if module is model.head:  # the pooling of every task's output to its channels, per task in this pass
            for name in pass_tasks:
                channels = model.task_specs[name].channels
                if channels != heads:
                    pixels = output.numel() // (output.shape[1] * len(pass_tasks))
                    counts[f"pool.{name}"] = 2 * channels * heads * pixels

    layers = (torch.nn.Conv2d, torch.nn.Linear, EqualLinear)
    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, layers)]
    per_pass: dict[str, int] = {}
    try:
        for pass_tasks in [[t] for t in tasks] + [tasks]:
            counts.clear()
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(image, pass_tasks)
            per_pass[",".join(pass_tasks)] = counter.get_total_flops()
            one = dict(counts)
            if len(pass_tasks) == 1:
                per_pass["layers:" + pass_tasks[0]] = sum(one.values())
    finally:
        for hook in hooks:
            hook.remove()
    encoder = sum(v for k, v in one.items() if k.startswith("encoder."))
    lateral = sum(v for k, v in one.items() if k.startswith("decoder.laterals.") and k.endswith(".conv"))
    unattributed = per_pass[",".join(tasks)] - sum(one.values())
    shared = encoder + lateral + unattributed
    per_task = {t: per_pass["layers:" + t] - encoder - lateral for t in tasks}
    return {"tasks": tasks, "encoder": encoder, "lateral_convs": lateral, "unattributed": unattributed,
            "shared": shared, "per_task": per_task, "all_tasks": shared + sum(per_task.values()),
            "per_task_way": sum(per_pass[t] for t in tasks)}
