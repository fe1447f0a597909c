"""Replaying the training step from CUDA graphs.

At batch 1 a CUT step is about 2,000 small kernels; launched one by one from Python, the GPU spends
most of the step waiting for the host. Captured once into a CUDA graph, the whole step (both backward
passes, clipping, fused Adam, the EMA update) goes to the GPU as one launch. The step function must be
replayable: fixed input buffers, no host syncs, per-step values in device tensors, random draws from
generators the graph knows (cutlib.model says how the step meets this)."""
from __future__ import annotations

import collections
import warnings

import torch


class StepGraphs:
    """Runs `step_fn(photo, monet, plan)` from one CUDA graph per plan, captured after `warmup` eager
    runs of that plan (they create the optimizer state and let cuDNN pick its algorithms, neither of
    which may happen inside a capture). Every run, eager or replayed, is a real training step."""

    def __init__(self, step_fn, generators=(), warmup: int = 2):
        self.step_fn, self.generators, self.warmup = step_fn, list(generators), warmup
        self.side = torch.cuda.Stream()
        self.failed: str | None = None  # why a capture failed; the steps then run eagerly
        self.reset()

    def reset(self) -> None:
        """Forget captured graphs (after the state they point at was replaced, e.g. a checkpoint load)."""
        self.graphs: dict = {}  # plan -> (graph, its output: a dict of tensors)
        self.eager_runs: collections.Counter = collections.Counter()
        self.inputs: list[torch.Tensor] | None = None

    @property
    def captured(self) -> int:
        return len(self.graphs)

    def run(self, plan, photo: torch.Tensor, monet: torch.Tensor) -> dict[str, torch.Tensor]:
        photo, monet = self._load(photo, monet)
        if plan in self.graphs:
            graph, out = self.graphs[plan]
            graph.replay()
            return {k: v.clone() for k, v in out.items()}  # the next replay writes over `out`
        if self.failed or self.eager_runs[plan] < self.warmup:
            self.eager_runs[plan] += 1
            return self._eager(photo, monet, plan)
        graph = torch.cuda.CUDAGraph()
        register_generators(graph, self.generators)
        try:
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                out = self.step_fn(photo, monet, plan)
        except RuntimeError as e:
            self.failed = str(e).splitlines()[0]
            warnings.warn(f"CUDA graph capture of the training step failed ({self.failed}); training goes on "
                          f"eagerly. Set cuda_graph='off' to skip the attempt.", stacklevel=2)
            raise CaptureFailed(self.failed) from e
        self.graphs[plan] = (graph, out)
        graph.replay()  # capturing recorded the step without running it
        return {k: v.clone() for k, v in out.items()}

    def _load(self, photo, monet) -> list[torch.Tensor]:
        """Copy the batch into the fixed buffers the graphs read."""
        if self.inputs is None or any(b.shape != x.shape for b, x in zip(self.inputs, (photo, monet))):
            if self.inputs is not None:
                self.graphs.clear()  # another batch shape: graphs of the old one would read stale sizes
            self.inputs = [torch.empty(x.shape, dtype=x.dtype, device="cuda") for x in (photo, monet)]
        for buf, x in zip(self.inputs, (photo, monet)):
            buf.copy_(x, non_blocking=True)
        return self.inputs

    def _eager(self, photo, monet, plan) -> dict[str, torch.Tensor]:
        # on a side stream, as steps before a capture must be (CUDA graphs semantics, "whole network capture")
        self.side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side):
            out = self.step_fn(photo, monet, plan)
        torch.cuda.current_stream().wait_stream(self.side)
        for v in out.values():
            v.record_stream(torch.cuda.current_stream())
        return out


def register_generators(graph, generators) -> None:
    """Tell the graph about generators other than the default one (which a capture registers itself).
    torch up to 2.13 needs this (2.11 was measured); 2.14 registers them on first use and deprecates the
    call; on a torch older than the call the capture fails and the step runs eagerly."""
    if hasattr(graph, "register_generator_state"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for gen in generators:
                graph.register_generator_state(gen)


class CaptureFailed(RuntimeError):
    """A capture failed before the step ran; the caller re-runs that step eagerly."""
