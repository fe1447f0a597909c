"""The machine's own peak for a workload, measured on the workload's convolutions: each distinct Conv2d
call (found by hooks while the workload runs once) timed alone in the workload's dtype, forward and then
backward to whatever needed a gradient there, contiguous and channels_last. The best of them is the peak
every other figure is read against; the FLOP-weighted rate of all of them (each at its own speed, called
as often as the workload calls it) is the "conv ceiling": what the workload would reach if nothing but its
convolutions cost anything. Used by bench/step_profile.py (training) and bench/generate.py (generation)."""
from __future__ import annotations

import copy
import statistics
import time
from collections import defaultdict

import torch
from torch.utils.flop_counter import FlopCounterMode


def conv_shapes(parts: dict[str, torch.nn.Module], run) -> dict[tuple, dict]:
    """Every distinct Conv2d call that `run()` makes in the networks of `parts` (part name -> module; a
    module listed inside another is counted in its own part): (part, geometry, input shape, what needs a
    gradient) -> the module and how many times it is called."""
    owner = {m: part for part, net in parts.items() for m in net.modules()}  # later (inner) parts win
    seen: dict[tuple, dict] = {}

    def hook(mod, args):
        x = args[0]
        grad = torch.is_grad_enabled()
        key = (owner.get(mod, "other"), type(mod).__name__, mod.in_channels, mod.out_channels, mod.kernel_size,
               mod.stride, mod.groups, tuple(x.shape), grad and mod.weight.requires_grad, grad and x.requires_grad)
        seen.setdefault(key, {"module": mod, "calls": 0})["calls"] += 1

    handles = [m.register_forward_pre_hook(hook) for m in owner if isinstance(m, torch.nn.Conv2d)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


def time_it(fn, min_seconds: float = 0.2, max_reps: int = 20) -> float:
    fn()  # warm-up: oneDNN picks and caches its kernel
    times, t_end = [], time.perf_counter() + min_seconds
    while len(times) < 3 or (time.perf_counter() < t_end and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def conv_rate(key: tuple, module: torch.nn.Module, dtype, memory_format) -> tuple[float, float]:
    """(FLOPs, seconds) of one conv call of this kind alone (a copy of the step's module, so its own
    padding and weight parametrisation run too): forward, then backward to whatever needed a gradient."""
    shape, weight_grad, input_grad = key[-3:]
    conv = copy.deepcopy(module).to(memory_format=memory_format).requires_grad_(weight_grad)
    x = torch.randn(shape).contiguous(memory_format=memory_format).requires_grad_(input_grad)
    backward = weight_grad or input_grad

    def run():
        with torch.set_grad_enabled(backward), torch.autocast("cpu", dtype=dtype or torch.float32,
                                                              enabled=dtype is not None):
            y = conv(x)
        if backward:
            y.backward(torch.ones_like(y))
            x.grad = None
            conv.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as fc:
        run()
    return fc.get_total_flops(), time_it(run)


def conv_peak(shapes: dict, dtype) -> dict:
    """The peak (the best conv), the conv ceiling (all of the step's convs at their own rates) and the conv
    FLOPs of each part, contiguous and channels_last."""
    rows, out, part_flops = [], {}, defaultdict(float)
    for fmt_name, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        total_flops = total_s = best = 0.0
        for key, info in shapes.items():
            flops, s = conv_rate(key, info["module"], dtype, fmt)
            calls = info["calls"]
            total_flops, total_s = total_flops + flops * calls, total_s + s * calls
            best = max(best, flops / s)
            if fmt is torch.contiguous_format:
                part, _, cin, cout, k, stride, groups, shape, wg, ig = key
                part_flops[part] += flops * calls
                rows.append({"part": part, "conv": f"{cin}->{cout} k{k[0]} s{stride[0]} g{groups} @ "
                             f"{shape[2]}x{shape[3]} b{shape[0]}" + ("" if wg else " (weight frozen)") +
                             ("" if wg or ig else " (forward only)"),
                             "calls": calls, "gflop": round(flops / 1e9, 3),
                             "gflop_per_s": round(flops / s / 1e9, 1)})
        out[fmt_name] = {"best_gflop_per_s": round(best / 1e9, 1),
                         "ceiling_gflop_per_s": round(total_flops / total_s / 1e9, 1),
                         "conv_seconds_per_step": round(total_s, 4)}
    rows.sort(key=lambda r: -r["gflop"] * r["calls"])
    peak = max(v["best_gflop_per_s"] for v in out.values())
    return {"peak_gflop_per_s": peak, **out, "top_shapes": rows[:12], "shapes": len(rows)}, dict(part_flops)
