"""The few collective operations the training loop needs under torchrun; all are no-ops in one process."""
from __future__ import annotations

import torch


def rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def all_ranks_any(flag: bool, device: torch.device, world: int) -> bool:
    """True on every rank if it is True on any rank (so all ranks stop together)."""
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def rank_mean(x: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        torch.distributed.all_reduce(x)
        x = x / world
    return x


def broadcast_from_rank0(obj, world: int):
    """rank 0's Python object on every rank (rank 0 alone scans the data folders)."""
    if world == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


_SYNC_TENSORS: dict[str, torch.Tensor] = {}


def barrier(world: int, device: torch.device) -> None:
    """Every rank waits here for every other. Not `torch.distributed.barrier()`: on gloo its work object
    holds the previous collectives' tensors, and when a worker thread drops it after the Python tensors
    are gone it needs the GIL, which `destroy_process_group()` right after holds while it joins that
    thread: a deadlock (seen on torch 2.4.1 in CI, rank 1 hung after training; pytorch#154976 later made
    the destructor release the GIL). An all-reduce of a tensor this module keeps alive leaves the worker
    nothing to free; reading it back makes the host wait (on NCCL the all-reduce returns once queued)."""
    if world > 1:
        if str(device) not in _SYNC_TENSORS:
            _SYNC_TENSORS[str(device)] = torch.zeros(1, device=device)
        t = _SYNC_TENSORS[str(device)]
        torch.distributed.all_reduce(t)
        t.item()
