"""The few collective operations the training loop needs under torchrun; all are no-ops in one process."""
from __future__ import annotations

import collections

import torch


def rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# The handles of this process's last collectives, newest last; see wait_and_keep.
RECENT_WORKS: collections.deque = collections.deque(maxlen=64)


def wait_and_keep(work) -> None:
    """Wait for a collective, then keep its work handle until 64 later ones have pushed it out.

    Why (issue 27): the gloo worker thread that ran a collective lets go of its work just after the
    caller's wait returns. When its reference is the work's last, the worker destroys the tensors the
    work holds, and on torch 2.14 dropping any C++ reference to a tensor Python made can take the GIL
    (`c10/util/intrusive_ptr.h`: a count going from 2 to 1 decrefs the Python object). A rank
    whose main thread goes on to exit without blocking again leaves that worker waiting for the GIL until
    the interpreter finalizes; CPython then ends the thread inside the work's noexcept destructor and
    the C++ runtime aborts the rank (SIGABRT, "terminate called without an active exception"; the stack
    is in bench/README.md). With the handle held here the worker's reference is never the last: the
    work dies on the main thread, with the GIL, when pushed out (64 collectives after every worker let go
    of it) or when the interpreter clears this module. Destroying the process group does not end the
    race: torch keeps a group DDP has used, and its worker threads, alive until the process exits."""
    work.wait()
    RECENT_WORKS.append(work)


def all_reduce(t: torch.Tensor, op=None, group=None) -> torch.Tensor:
    """`t` summed (or reduced by `op`) over ranks, in place. Every all-reduce of cutlib's goes through here
    (tests/test_imports.py checks); broadcast_from_rank0 runs once, at the start, with waits to follow."""
    op = torch.distributed.ReduceOp.SUM if op is None else op
    wait_and_keep(torch.distributed.all_reduce(t, op=op, group=group, async_op=True))
    return t


def all_ranks_any(flag: bool, device: torch.device, world: int) -> bool:
    """True on every rank if it is True on any rank (so all ranks stop together)."""
    if world == 1:
        return flag
    t = all_reduce(torch.tensor([1.0 if flag else 0.0], device=device), torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def rank_mean(x: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        x = all_reduce(x) / world
    return x


def broadcast_from_rank0(obj, world: int):
    """rank 0's Python object on every rank (rank 0 alone scans the data folders)."""
    if world == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: int, device: torch.device) -> None:
    """Every rank waits here for every other. Not `torch.distributed.barrier()`: on gloo its work holds
    the previous collectives' works, which a worker thread may then free at any time (their tensors
    need the GIL; on torch 2.4.1 that deadlocked against `destroy_process_group()`, seen in CI). An
    all-reduce through wait_and_keep leaves the worker nothing to free; reading it back makes the host
    wait (on NCCL the all-reduce returns once queued)."""
    if world > 1:
        all_reduce(torch.zeros(1, device=device)).item()


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


def max_over_ranks(values: list[int], world: int, group=None) -> list[int]:
    """Each of `values` (ints on the host) at its largest over ranks, on every rank: one collective."""
    if world == 1:
        return list(values)
    t = all_reduce(torch.tensor([int(v) for v in values], dtype=torch.int64), torch.distributed.ReduceOp.MAX, group)
    return t.tolist()
