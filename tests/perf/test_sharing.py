"""What the tasks of one image share exactly, and the FLOP count that splits shared from per-task work.

Issue 12 assumed that the lateral half of every fusion convolution, ``conv_l(lateral)`` in
``conv(cat[up(x), lateral]) = conv_x(up(x)) + conv_l(lateral)``, does not depend on the task. In this TSN it does:
the lateral blocks modulate their maps per task (AdaIN) and pass them through a LeakyReLU before the fusion
convolution. What is shared exactly is the encoder and the lateral blocks' convolution + normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from error_model import assert_close_float64
from tsn.models import create_model
from tsn.studies.throughput import flop_split


def test_the_lateral_half_of_a_fusion_conv_depends_on_the_task() -> None:
    """A counterexample: two tasks' lateral maps, and their halves of the fusion conv, differ; the split is exact."""
    torch.manual_seed(0)
    model = create_model("tsn_r18_pascal").double().eval()
    image = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    tasks = ["semseg", "normals"]
    with torch.no_grad():
        features = model.encoder(image)
        style = model.embed(tasks).double()
        level, fuse = 0, model.decoder.fuse[-1]  # the top fusion block: the largest lateral half
        lateral = model.decoder.laterals[level](features[level], style)  # 2 x C x H x W: one map per task
        assert not torch.allclose(lateral[0], lateral[1], atol=1e-3)
        weight = fuse.conv.weight
        width = weight.shape[1] - lateral.shape[1]  # channels of the upsampled path (first in the concatenation)
        lateral_half = F.conv2d(lateral, weight[:, width:], padding=1)
        assert (lateral_half[0] - lateral_half[1]).abs().max() > 0.1 * lateral_half.abs().max()
        # ...while the decomposition of the concatenated convolution itself holds.
        up = torch.randn(2, width, *lateral.shape[-2:], dtype=torch.float64)
        whole = F.conv2d(torch.cat([up, lateral], dim=1), weight, padding=1)
        assert_close_float64(F.conv2d(up, weight[:, :width], padding=1) + lateral_half, whole,
                             reduction=weight[0].numel())
        # What is shared: the lateral convolution + normalisation, before the per-task modulation.
        block = model.decoder.laterals[level]
        normalised = block.norm(block.conv(features[level]))
        scale, shift = block.modulation(style)
        for task in range(2):
            expected = F.leaky_relu(normalised * scale[task, :, None, None] + shift[task, :, None, None], 0.01)
            assert_close_float64(lateral[task : task + 1], expected, reduction=block.conv.weight[0].numel())


def _counted(model: torch.nn.Module, image: torch.Tensor, tasks: list[str]) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(image, tasks)
    return counter.get_total_flops()


def test_flop_split_matches_the_flop_counter() -> None:
    """Shared + per-task FLOPs reproduce torch.utils.flop_counter's totals exactly, however tasks are grouped."""
    size, batch = 64, 2
    split = flop_split("tsn_r18_pascal", size, batch)
    with torch.device("meta"):
        model = create_model("tsn_r18_pascal")
        image = torch.empty(batch, 3, size, size)
    tasks = split["tasks"]
    assert split["unattributed"] == 0 and split["shared"] == split["encoder"] + split["lateral_convs"]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.encoder(image)
    assert split["encoder"] == counter.get_total_flops()
    for task in tasks:  # the network once for one task
        assert split["shared"] + split["per_task"][task] == _counted(model, image, [task])
    assert split["per_task_way"] == sum(_counted(model, image, [t]) for t in tasks)
    model.decode_bytes = 2**62  # one decoder call for every task: the lateral convolutions run once
    assert split["all_tasks"] == _counted(model, image, tasks)
    model.decode_bytes = 0  # one task per call: the lateral convolutions run once per call
    assert _counted(model, image, tasks) == split["all_tasks"] + (len(tasks) - 1) * split["lateral_convs"]
