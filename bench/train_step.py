"""Training-step speed against the hardware: prints one JSON line.

    python bench/train_step.py --size 256 --batch 1 --mode cut [--amp off|bf16|fp16] [--no-antialias] [--compile]
    python bench/train_step.py --quick      # CI-sized: 64 px, tiny widths, 2 timed steps

Reports median seconds per step after warm-up, FLOPs per step (torch.utils.flop_counter), achieved
FLOP/s, peak memory, and the machine's own throughput on the dominant convolution (256->256, 3x3,
64x64, forward+backward, same dtype) measured in the same run -> fraction_of_reference.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cutlib.config import TrainConfig  # noqa: E402
from cutlib.train import CUTModel  # noqa: E402


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--mode", default="cut", choices=["cut", "fastcut"])
    ap.add_argument("--amp", default="auto", choices=["auto", "off", "bf16", "fp16"])
    ap.add_argument("--no-antialias", action="store_true", help="the 'fast' architecture: strided convs")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the generator (compile time not timed)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--quick", action="store_true", help="CI-sized smoke run")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    widths = dict(ngf=8, ndf=8, num_patches=32) if a.quick else {}
    if a.quick:
        a.size, a.warmup, a.reps = 64, 1, 2
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    cfg = TrainConfig(image_size=a.size, load_size=a.size, batch_size=a.batch, mode=a.mode, amp=a.amp,
                      antialias=not a.no_antialias, channels_last=not a.no_channels_last, compile=a.compile,
                      device=device.type, **widths)
    model = CUTModel(cfg, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    photo = torch.rand(a.batch, 3, a.size, a.size) * 2 - 1
    monet = torch.rand(a.batch, 3, a.size, a.size) * 2 - 1
    # identity warm-up changes the step's work; time the steady state (identity weight 0) like most steps
    model.step = cfg.identity_warmup + 1

    def step():
        model.train_step(photo, monet)

    # FLOPs belong to the algorithm: count them on an eager twin (a compiled graph hides its ops)
    twin = CUTModel(cfg.replace(compile=False), device) if cfg.compile else model
    twin.step = model.step
    with FlopCounterMode(display=False) as fc:
        twin.train_step(photo, monet)
    flops = fc.get_total_flops()
    del twin
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = timed(step, device, a.warmup, a.reps)
    t = statistics.median(times)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    ref = reference_conv(device, model.amp_dtype)
    out = {
        "bench": "train_step", "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "size": a.size, "batch": a.batch,
        "mode": a.mode, "amp": str(model.amp_dtype).replace("torch.", "") if model.amp_dtype else "off",
        "antialias": cfg.antialias, "compile": cfg.compile, "quick": a.quick,
        "seconds_per_step": round(t, 4), "steps_per_s": round(1 / t, 3), "images_per_s": round(a.batch / t, 3),
        "step_times": [round(x, 4) for x in times],
        "gflop_per_step": round(flops / 1e9, 2), "achieved_gflop_per_s": round(flops / t / 1e9, 2),
        "ref_gflop_per_s": round(ref["ref_flops_per_s"] / 1e9, 2),
        "fraction_of_reference": round(flops / t / ref["ref_flops_per_s"], 3),
        "peak_memory_mb": round(peak / 2**20, 1),
        "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_max_rss",
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
