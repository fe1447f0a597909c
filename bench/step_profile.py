"""Where a CPU training step's (or generation batch's) time goes, read against the machine's own peak:
prints one JSON line.

    python bench/step_profile.py --size 128 --threads 2 [--amp auto|off|bf16] [--discriminator D] [--steps 3]
    python bench/step_profile.py --generate --size 256 --batch 8 --threads 2 [--steps 2]   # G painting a batch
    python bench/step_profile.py --quick [--generate]     # CI-sized: 64 px, narrow networks, one profiled call

The peak (bench/peak.py): the FLOP/s of every distinct convolution the workload runs, each timed alone in
its dtype (forward, and backward where the workload has one), contiguous and channels_last; the best is the
machine's reference, and the FLOP-weighted rate of all of them is what the workload's convolutions could
reach if nothing else cost anything ("conv ceiling").

The profile: `--steps` real training steps (or batches of `cutlib.painting.paint` with the border and the
kept colour, in the dtype `cutlib generate` picks) under torch.profiler after warm-up. Every op's own (self)
time goes to a part (which network or loss it runs in; a backward op to the part whose forward op created
it) and to a kind (convolution, normalisation, padding, activation, resampling, matmul, elementwise, casts,
optimizer, ...). Each network's conv FLOPs (counted shape by shape) over its time read as a fraction of the
peak. Profiled time runs slower than plain time (the profiler's own cost); the shares are of profiled
time, the seconds of plain time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import cutlib.model as model_module  # noqa: E402
import cutlib.painting as painting_module  # noqa: E402
from cutlib import losses  # noqa: E402
from cutlib.config import DISCRIMINATORS, TrainConfig  # noqa: E402
from cutlib.ema import EMA  # noqa: E402
from cutlib.hardware import resolve_amp  # noqa: E402
from cutlib.model import CUTModel  # noqa: E402
from cutlib.nets import Generator, init_weights  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak import conv_peak, conv_shapes, time_it  # noqa: E402

SCOPE = "part:"
# Op name fragments -> kind, first match wins (names are aten's, lower-cased).
KINDS = (
    ("conv", ("convolution", "conv2d", "mkldnn_conv", "conv_depthwise")),
    ("norm", ("batch_norm", "instance_norm", "group_norm", "native_norm", "_batch_norm_impl", "batch_norm_backward")),
    ("pad", ("reflection_pad", "replication_pad", "constant_pad", "aten::pad")),
    ("resample", ("upsample", "interpolate", "avg_pool", "max_pool")),
    ("matmul", ("mm", "matmul", "linear", "addmm", "bmm", "baddbmm")),
    ("activation", ("relu", "leaky_relu", "threshold_backward", "tanh", "sigmoid", "silu", "hardswish",
                    "elu", "clamp")),
    ("cast", ("aten::to", "_to_copy", "copy_", "contiguous", "clone")),
    ("optimizer", ("_foreach", "adam", "lerp", "addcdiv", "addcmul", "sqrt")),
    ("reduction", ("sum", "mean", "norm", "var", "std", "amax", "max", "min", "logsumexp", "softmax",
                   "cross_entropy", "nll_loss")),
    ("elementwise", ("add", "sub", "mul", "div", "neg", "abs", "pow", "exp", "log", "where", "fill_", "zero_",
                     "sign", "rand", "normal_", "uniform_", "flip", "roll", "cat", "stack", "index",
                     "gather", "scatter", "masked")),
    ("memory", ("empty", "view", "reshape", "as_strided", "expand", "permute", "transpose", "slice",
                "select", "unsqueeze", "squeeze", "t", "detach", "resize_", "split", "chunk", "narrow",
                "unbind", "alias", "set_")),
)


def kind_of(name: str) -> str:
    n = name.lower()
    if n.startswith("autograd::engine::evaluate_function") or n.endswith("backward0") or "accumulategrad" in n:
        return "autograd"
    if n.startswith(SCOPE) or n.startswith("optimizer.") or "##" in n:
        return "python"
    for kind, frags in KINDS:
        if any(f in n for f in frags):
            return kind
    return "other"


# ----------------------------------------------------------------------------------------------- the parts
def networks(model: CUTModel) -> dict[str, torch.nn.Module]:
    """The step's networks by part name; the projected D's frozen backbone apart from its heads."""
    nets = {"G": model.G, "MLP": model.F}
    for name in model.D.names:
        net = getattr(model.D, name)
        nets[f"D.{name}"] = net
        if hasattr(net, "features"):
            nets[f"D.{name}.backbone"] = net.features
    return nets


@contextmanager
def named_parts(nets: dict, functions: list):
    """Name parts for the profiler while inside: each network's forward (module hooks) and each function
    (owner, attribute, part name) wrapped in a record_function scope; all restored on exit."""
    handles, saved = [], []
    for name, net in nets.items():
        stack = []

        def enter(mod, args, name=name, stack=stack):
            rf = record_function(SCOPE + name)
            rf.__enter__()
            stack.append(rf)

        def leave(mod, args, out, stack=stack):
            stack.pop().__exit__(None, None, None)

        handles += [net.register_forward_pre_hook(enter), net.register_forward_hook(leave)]
    for owner, attr, name in functions:
        fn = getattr(owner, attr)

        def scoped(*a, fn=fn, name=name, **k):
            with record_function(SCOPE + name):
                return fn(*a, **k)

        saved.append((owner, attr, fn))
        setattr(owner, attr, scoped)
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for owner, attr, fn in reversed(saved):
            if isinstance(owner, (type, types.ModuleType)):
                setattr(owner, attr, fn)
            else:  # an instance: drop the wrapper, its class's method shows again
                delattr(owner, attr)


def part_scopes(model: CUTModel):
    """The training step's parts: the networks, DiffAugment, the losses, the EMA update, and the optimizer's
    clipping and GradScaler calls (the optimizer steps name themselves)."""
    functions = [(model_module, "diff_augment", "DiffAugment"), (model_module, "clip_grad_norm_", "optimizer"),
                 (EMA, "update", "EMA")]
    functions += [(scaler, attr, "optimizer") for scaler in (model.scaler_G, model.scaler_D)
                  for attr in ("unscale_", "step", "update")]  # unscale, the non-finite check, the skip
    functions += [(losses, fn, "losses") for fn in ("patch_nce", "d_loss", "g_adv_loss", "identity_l1",
                                                    "lattice_excess")]
    return named_parts(networks(model), functions)


def part_of(event, by_seq: dict) -> str:
    """The innermost named part around an op; a backward op takes its forward op's part."""
    e = event
    while e is not None:
        if e.name.startswith(SCOPE):
            return e.name[len(SCOPE):]
        if e.name.startswith("Optimizer."):
            return "optimizer"
        if e.name.startswith("autograd::engine::evaluate_function"):
            if "AccumulateGrad" in e.name:
                return "optimizer"  # the gradients' accumulation into .grad: the optimizer's side
            return by_seq.get(e.sequence_nr, "other") + " (backward)"
        e = e.cpu_parent
    return "other"


def attribute(events) -> tuple[dict, dict, dict, float]:
    """(part -> kind -> self microseconds, part -> op -> the same, part -> total, all) over the profiled ops."""
    by_seq: dict[int, str] = {}
    for e in events:  # forward ops that made an autograd node: sequence number -> their part
        if e.sequence_nr >= 0 and not e.name.startswith("autograd::") and e.sequence_nr not in by_seq:
            if not e.name.endswith("Backward0"):
                by_seq[e.sequence_nr] = part_of(e, {})
    table: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    ops: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in events:
        part = part_of(e, by_seq)
        table[part][kind_of(e.name)] += e.self_cpu_time_total
        ops[part][e.name] += e.self_cpu_time_total
    totals = {p: sum(k.values()) for p, k in table.items()}
    return table, ops, totals, sum(totals.values())


def profiled(run, scopes, nets: dict, dtype, reps: int, warmup: int) -> dict:
    """Time `run` plainly, count its FLOPs, find its convs and the peak on them, and profile `reps` calls
    under `scopes` (a context naming its parts): the figures common to a training step and a generation batch."""
    for _ in range(warmup):
        run()
    plain = time_it(run, min_seconds=0.0, max_reps=3)
    with FlopCounterMode(display=False) as fc:
        run()
    flops = fc.get_total_flops()
    shapes = conv_shapes(nets, run)
    with scopes, profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(reps):
            run()
        seconds_profiled = (time.perf_counter() - t0) / reps
    table, ops, totals, traced = attribute(prof.events())
    peak, conv_flops = conv_peak(shapes, dtype)
    p = peak["peak_gflop_per_s"] * 1e9
    parts = {}
    for part, total in sorted(totals.items(), key=lambda kv: -kv[1]):
        share = total / traced
        row = {"share": round(share, 4), "ms": round(share * plain * 1e3, 1),
               "kinds": {k: round(v / total, 3) for k, v in sorted(table[part].items(), key=lambda kv: -kv[1])
                         if v / total >= 0.01},
               "top_ops": {k: round(v / total, 3) for k, v in sorted(ops[part].items(), key=lambda kv: -kv[1])[:4]}}
        if conv_flops.get(part):  # the part's conv FLOPs (forward, and backward if any) over its time, both ways
            secs = (total + totals.get(f"{part} (backward)", 0.0)) / traced * plain
            row["conv_gflop"] = round(conv_flops[part] / 1e9, 2)
            row["conv_fraction_of_peak"] = round(conv_flops[part] / secs / p, 3)
        parts[part] = row
    kinds: dict[str, float] = defaultdict(float)
    for k in table.values():
        for kind, v in k.items():
            kinds[kind] += v / traced
    return {
        "device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "amp": str(dtype).replace("torch.", "") if dtype else "off",
        "seconds_per_step": round(plain, 4), "profiled_seconds_per_step": round(seconds_profiled, 4),
        "traced_share_of_profiled": round(traced / 1e6 / reps / seconds_profiled, 3),
        "gflop_per_step": round(flops / 1e9, 2), "conv_gflop_per_step": round(sum(conv_flops.values()) / 1e9, 2),
        "achieved_gflop_per_s": round(flops / plain / 1e9, 1),
        "fraction_of_peak": round(flops / plain / p, 3),
        "fraction_of_conv_ceiling": round(flops / plain / (peak["contiguous"]["ceiling_gflop_per_s"] * 1e9), 3),
        "peak": peak, "kinds": {k: round(v, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
        "parts": parts,
    }


def measure(cfg: TrainConfig, steps: int, warmup: int) -> dict:
    """The training step (the steady state: identity L1 off, as most steps are), on random images."""
    model = CUTModel(cfg, "cpu")
    model.step = cfg.identity_warmup + 1
    s, b = cfg.image_size, cfg.batch_size
    photo, monet = torch.rand(b, 3, s, s) * 2 - 1, torch.rand(b, 3, s, s) * 2 - 1
    out = profiled(lambda: model.train_step(photo, monet), part_scopes(model), networks(model),
                   model.amp_dtype, steps, warmup)
    return {"bench": "step_profile", "size": s, "batch": b, "discriminator": cfg.discriminator, **out}


def painting_scopes(G):
    """Generation's parts: G, and the photo's colour layout put back (`keep_colour`); the border's reflection
    pad and the crop are what is left ("other")."""
    return named_parts({"G": G}, [(painting_module, "keep_photo_colour", "keep_colour")])


def measure_generation(size: int, batch: int, reps: int, warmup: int, ngf: int = 64) -> dict:
    """One batch of G's painting as generation runs it (border, kept colour, generate's dtype), no autograd."""
    G = init_weights(Generator(ngf)).eval().requires_grad_(False)
    dtype = resolve_amp("auto", torch.device("cpu"))
    x = torch.rand(batch, 3, size, size) * 2 - 1

    def run():
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            return painting_module.paint(G, x, painting_module.PAINT_BORDER)

    out = profiled(run, painting_scopes(G), {"G": G}, dtype, reps, warmup)
    return {"bench": "generation_profile", "size": size, "batch": batch, "border": painting_module.PAINT_BORDER,
            "images_per_s": round(batch / out["seconds_per_step"], 3), **out}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--amp", default="auto", choices=["auto", "off", "bf16"])
    ap.add_argument("--discriminator", default="patch+projected", choices=list(DISCRIMINATORS))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--steps", type=int, default=3, help="profiled steps")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--generate", action="store_true", help="profile generation instead: G painting a batch "
                    "of --batch photos at --size (+ the border), as `cutlib generate` runs it")
    ap.add_argument("--batch", type=int, default=8, help="--generate: photos per batch")
    ap.add_argument("--quick", action="store_true", help="CI-sized smoke run")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    widths = {}
    if a.quick:
        a.size, a.steps, a.warmup = 64, 1, 1
        widths = dict(ngf=8, ndf=8, num_patches=32)
    if a.generate:
        out = measure_generation(a.size, 2 if a.quick else a.batch, a.steps, a.warmup, widths.get("ngf", 64))
    else:
        cfg = TrainConfig(image_size=a.size, load_size=a.size, amp=a.amp, device="cpu",
                          discriminator=a.discriminator, **widths)
        out = measure(cfg, a.steps, a.warmup)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
