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


_CONTROL: dict = {}


def control_group(world: int):
    """The group for host-side flags the ranks agree on every step (a stop request): the default group on
    gloo, a gloo group beside NCCL, whose device flag would make the host wait for the GPU every step.
    Every rank must call it at the same point (creating a group is collective)."""
    if world == 1 or torch.distributed.get_backend() == "gloo":
        return None
    key = id(torch.distributed.distributed_c10d._get_default_group())
    if key not in _CONTROL:
        _CONTROL.clear()
        _CONTROL[key] = torch.distributed.new_group(backend="gloo")
    return _CONTROL[key]


_FLAG = torch.zeros(1, dtype=torch.int64)  # kept alive for the reason barrier() gives


def max_over_ranks(value: int, world: int, group=None) -> int:
    """The largest of every rank's `value` (an int on the host), on every rank."""
    if world == 1:
        return value
    _FLAG.fill_(int(value))
    torch.distributed.all_reduce(_FLAG, op=torch.distributed.ReduceOp.MAX, group=group)
    return int(_FLAG.item())
