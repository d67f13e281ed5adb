"""Multi-process training: one process per GPU (or CPU worker), started by ``torchrun``.

``torchrun --nproc_per_node=N -m tsn train ...`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
:func:`init_distributed` reads them and joins the process group (NCCL on GPUs, gloo on CPUs). Without them the
run is a plain single process and every helper here is a no-op, so the trainer has one code path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from tsn.utils.device import resolve_device

__all__ = ["DistContext", "init_distributed", "process_device"]

T = TypeVar("T")


def process_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The device of this process: ``name`` as ``tsn`` commands take it, a bare ``cuda`` meaning the local GPU."""
    device = resolve_device(name)
    return torch.device("cuda", local_rank) if device.type == "cuda" and device.index is None else device


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run; ``world_size == 1`` for a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files, logs and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over all ranks, in place (its device must suit the backend)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def max_int(self, value: int) -> int:
        """The largest of every rank's ``value``."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def broadcast(self, obj: T, src: int = 0) -> T:
        """Rank ``src``'s (picklable) ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src, device=self._collective_device)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` as a list on rank 0 (None elsewhere)."""
        if not self.distributed:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Run the block on rank 0 first, then on the others: rank 0 fills the caches (synthetic scenes, downloaded
        weights) that the others then read instead of writing the same files at once."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def sync_buffers(self, module: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

        DDP broadcasts buffers at the start of each forward, then every rank updates its own copy from its own
        micro-batch; before validating or saving, the ranks must agree again.
        """
        if self.distributed:
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)

    @property
    def _collective_device(self) -> torch.device | None:
        return self.device if dist.get_backend() == "nccl" else None

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group ``torchrun`` describes in the environment, or describe a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    run_on = process_device(device, local_rank)
    if world_size <= 1:
        return DistContext(device=run_on)
    if run_on.type == "cuda":
        torch.cuda.set_device(run_on)
    backend = "nccl" if run_on.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=run_on)
