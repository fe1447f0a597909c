"""Training-step speed against the hardware: prints one JSON line.

    python bench/train_step.py --size 256 --batch 1 --mode cut [--amp off|bf16|fp16] [--cuda-graph on|off]
                               [--no-antialias] [--compile] [--discriminator patch|projected|patch+projected]
    python bench/train_step.py --quick      # CI-sized: 64 px, tiny widths, 2 timed steps
    python bench/train_step.py -f params/cpu.yaml --variant fastcut=mode:fastcut \
        --variant narrow=ngf:32,ndf:32 --rounds 2 --amp off --threads 2
                                            # a params file against one-change variants, alternating

Reports median seconds per step after warm-up, FLOPs per step (torch.utils.flop_counter, counted on an
eager twin: a compiled or graph-replayed step hides its ops), achieved FLOP/s, peak memory, and the
machine's own throughput on the dominant convolution (256->256, 3x3, 64x64, forward+backward, same
dtype) measured in the same run -> fraction_of_reference. On CUDA also: `fraction_of_peak` against a
dense 8192^3 matmul of the step's dtype measured in the same run (TF32 for fp32 steps), and from
torch.profiler the kernels per step, the share of the step the GPU is busy, and the shares of kernel
time spent in copies and in convolutions/GEMMs.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
from cutlib.config import DISCRIMINATORS, TrainConfig  # noqa: E402
from cutlib.model import CUTModel  # noqa: E402
from cutlib.nets import count_params  # noqa: E402


def generator_macs(G, size: int = 256) -> float:
    """Multiply-accumulates of one forward of G on a size x size image (FLOPs / 2)."""
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        G(torch.zeros(1, 3, size, size, device=next(G.parameters()).device))
    return fc.get_total_flops() / 2


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, warmup: int, reps: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def reference_conv(device, dtype, channels=256, hw=64, batch=1, reps=10) -> dict:
    """FLOP/s of forward+backward of the ResNet block conv, the op that is ~90% of the generator."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(device)
    x = torch.randn(batch, channels, hw, hw, device=device, requires_grad=True)
    ctx = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else torch.enable_grad

    def step():
        with ctx():
            y = conv(x)
        y.float().sum().backward()

    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops()
    t = statistics.median(timed(step, device, 2, reps))
    return {"ref_flops": flops, "ref_seconds": t, "ref_flops_per_s": flops / t}


_PEAKS: dict = {}


def matmul_peak(device, dtype) -> tuple[float, str]:
    """FLOP/s of an 8192^3 dense matmul in the step's dtype (fp32 steps run their convs in TF32)."""
    kind = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "tf32"}[dtype]
    if kind not in _PEAKS:
        n = 8192
        a = torch.randn(n, n, device=device, dtype=dtype or torch.float32)
        b = torch.randn(n, n, device=device, dtype=dtype or torch.float32)
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        t = statistics.median(timed(lambda: a @ b, device, 3, 10))
        torch.backends.cuda.matmul.allow_tf32 = old
        _PEAKS[kind] = 2 * n ** 3 / t
    return _PEAKS[kind], kind


def _kind(name: str) -> str:
    n = name.lower()
    if "copy" in n or "nchwtonhwc" in n or "nhwctonchw" in n or n.startswith("memcpy"):
        return "copy"
    if any(k in n for k in ("conv", "xmma", "cudnn", "gemm", "cutlass", "sm90_", "sm80_", "wgrad", "dgrad")):
        return "conv_gemm"
    return "other"


def gpu_profile(step, seconds_per_step: float, steps: int = 5) -> dict:
    """Kernels per step, GPU-busy share of the (unprofiled) step time, and kernel-time shares."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if str(e.device_type).endswith("CUDA")]
    spans = sorted((e.time_range.start, e.time_range.end) for e in kernels)
    busy, end = 0.0, float("-inf")
    for s, e in spans:  # union of kernel intervals: time the GPU was doing something
        if e > end:
            busy += e - max(s, end)
            end = e
    total = sum(e.time_range.end - e.time_range.start for e in kernels) or 1.0
    share = {}
    for e in kernels:
        k = _kind(e.name)
        share[k] = share.get(k, 0.0) + (e.time_range.end - e.time_range.start) / total
    return {"kernels_per_step": round(len(kernels) / steps, 1),
            "kernel_ms_per_step": round(total / steps / 1e3, 3),
            "gpu_busy_share": round(busy / steps / 1e6 / seconds_per_step, 3),
            **{f"{k}_share_of_kernel_time": round(v, 3) for k, v in sorted(share.items())}}


def measure(cfg: TrainConfig, device: torch.device, warmup: int = 2, reps: int = 5, profile: bool = False) -> dict:
    """Time `cfg`'s training step on random inputs; returns the JSON record (without the official code)."""
    model = CUTModel(cfg, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    s, b = cfg.image_size, cfg.batch_size
    photo = torch.rand(b, 3, s, s) * 2 - 1
    monet = torch.rand(b, 3, s, s) * 2 - 1
    if device.type == "cuda":  # as the training loader hands them over
        photo, monet = photo.pin_memory(), monet.pin_memory()
    # identity warm-up changes the step's work; time the steady state (identity weight 0) like most steps
    model.step = cfg.identity_warmup + 1

    def step():
        model.train_step(photo, monet)

    twin = CUTModel(cfg.replace(compile=False, cuda_graph="off"), device)
    twin.step = model.step
    with FlopCounterMode(display=False) as fc:
        twin.train_step(photo, monet)
    flops = fc.get_total_flops()
    del twin
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if model.graphs is not None:
        warmup = max(warmup, model.graphs.warmup + 2)  # eager warm-up steps, the capture, one replay
    times = timed(step, device, warmup, reps)
    t = statistics.median(times)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    ref = reference_conv(device, model.amp_dtype)
    out = {
        "bench": "train_step", "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "size": s, "batch": b,
        "mode": cfg.mode, "discriminator": cfg.discriminator,
        "amp": str(model.amp_dtype).replace("torch.", "") if model.amp_dtype else "off",
        "antialias": cfg.antialias, "g_block": cfg.g_block, "ngf": cfg.ngf, "ndf": cfg.ndf,
        "compile": cfg.compile, "cuda_graph": model.graphs is not None and not model.graphs.failed,
        **({"cuda_graph_failed": model.graphs.failed} if model.graphs is not None and model.graphs.failed else {}),
        "seconds_per_step": round(t, 5), "steps_per_s": round(1 / t, 3), "images_per_s": round(b / t, 3),
        "step_times_min_max": [round(min(times), 5), round(max(times), 5)],
        "gflop_per_step": round(flops / 1e9, 2), "achieved_gflop_per_s": round(flops / t / 1e9, 2),
        "ref_gflop_per_s": round(ref["ref_flops_per_s"] / 1e9, 2),
        "fraction_of_reference": round(flops / t / ref["ref_flops_per_s"], 3),
        "peak_memory_mb": round(peak / 2**20, 1),
        "g_params": count_params(model.G), "g_gmac_256": round(generator_macs(model.G) / 1e9, 2),
        "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_max_rss",
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        peak_flops, kind = matmul_peak(device, model.amp_dtype)
        out.update(peak_tflop_per_s=round(peak_flops / 1e12, 1), peak_kind=kind,
                   fraction_of_peak=round(flops / t / peak_flops, 4))
        if profile:
            try:
                out.update(gpu_profile(step, t))
            except Exception as e:  # noqa: BLE001 - a profiler failure must not lose the timing
                out["profile_error"] = f"{type(e).__name__}: {e}"
    return out


def config_from_args(a, device) -> TrainConfig:
    widths = dict(ngf=8, ndf=8, num_patches=32) if a.quick else {}
    return TrainConfig(image_size=a.size, load_size=a.size, batch_size=a.batch, mode=a.mode, amp=a.amp,
                       antialias=not a.no_antialias, compile=a.compile, cuda_graph=a.cuda_graph,
                       device=device.type, discriminator=a.discriminator, **widths)


def parse_variant(text: str) -> tuple[str, dict]:
    """'name=key:value,key:value' -> (name, {key: value}); values read as YAML scalars."""
    import yaml

    name, _, changes = text.partition("=")
    pairs = [c.split(":", 1) for c in changes.split(",") if c]
    if not name or any(len(p) != 2 for p in pairs):
        raise SystemExit(f"--variant {text!r}: expected name=key:value[,key:value...]")
    return name, {k: yaml.safe_load(v) for k, v in pairs}


def variants(a, device) -> list[dict]:
    """The params file and each one-change variant, timed in turn for `rounds` rounds (alternating, so a
    slow spell of the machine falls on all alike); per variant the median over rounds and its speed-up."""
    from cutlib.nbbuild import training_fields

    base = TrainConfig.from_dict({**training_fields(a.params), "device": device.type,
                                  **({"amp": a.amp} if a.amp != "auto" else {})})
    changes = {"file": {}, **dict(map(parse_variant, a.variant))}
    runs = [(n, base.replace(**c)) for n, c in changes.items()]
    rows: dict[str, list[dict]] = {n: [] for n, _ in runs}
    for _ in range(a.rounds):
        for name, cfg in runs:
            rows[name].append(measure(cfg, device, a.warmup, a.reps))
    base_s = statistics.median(r["seconds_per_step"] for r in rows["file"])
    out = []
    for name, cfg in runs:
        s = statistics.median(r["seconds_per_step"] for r in rows[name])
        out.append({"variant": name, "params": a.params, "changes": changes[name],
                    "seconds_per_step": round(s, 4), "rounds": [r["seconds_per_step"] for r in rows[name]],
                    "gflop_per_step": rows[name][0]["gflop_per_step"], "speedup": round(base_s / s, 3),
                    "g_params": rows[name][0]["g_params"], "g_gmac_256": rows[name][0]["g_gmac_256"],
                    "amp": rows[name][0]["amp"], "threads": rows[name][0]["threads"]})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--mode", default="cut", choices=["cut", "fastcut"])
    ap.add_argument("--amp", default="auto", choices=["auto", "off", "bf16", "fp16"])
    ap.add_argument("--discriminator", default="patch", choices=list(DISCRIMINATORS))
    ap.add_argument("--cuda-graph", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--no-antialias", action="store_true", help="the 'fast' architecture: strided convs")
    ap.add_argument("--compile", action="store_true", help="torch.compile the generator (compile time not timed)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--profile", action="store_true", help="CUDA: kernels per step, busy and copy shares")
    ap.add_argument("--quick", action="store_true", help="CI-sized smoke run")
    ap.add_argument("-f", "--params", default="", help="time this params file (its size, nets and losses)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=KEY:VALUE,...",
                    help="with -f: also time the file with these changes (repeatable)")
    ap.add_argument("--rounds", type=int, default=2, help="with -f: rounds of timing every variant in turn")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.quick:
        a.size, a.warmup, a.reps = 64, 1, 2
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    if a.params:
        rows = variants(a, device)
        for row in rows:
            print(json.dumps(row))
        return rows
    out = measure(config_from_args(a, device), device, a.warmup, a.reps, a.profile)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
