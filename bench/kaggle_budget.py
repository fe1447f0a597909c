"""The terms of a Kaggle notebook's time budget, measured on this machine: prints one JSON line.

    python bench/kaggle_budget.py --data /path/to/gan-getting-started [--nproc 2] [--amp fp16] [--size 256]
    python bench/kaggle_budget.py --quick     # CI-sized: demo data, 32 px, tiny widths, 2 ranks on CPU

Runs the notebook's own DDP path (cutlib.launch.train_ddp: torchrun started from this process, one rank
per GPU, gloo on CPU) for --steps steps, then reports:
  launch_to_ranks_s   launch -> each rank's first line (interpreter, imports), from the rank banners
  outside_train_s     train_ddp's wall time minus train()'s own: start-up before train() and teardown
  setup_s             train() before its first step (data scan, networks), from metrics.jsonl
  seconds_per_step    steady state: time between the last two metrics.jsonl lines / steps between them
  checkpoint_s        one full checkpoint write at this size (a timed save of the run's own state)
  loader_pairs_per_s  photo+painting pairs one DataLoader worker makes per second at this size
  expected_steps      steps that fit in --budget-hours once the terms above and a checkpoint every
                      --ckpt-every steps (and a final one) are paid for
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cutlib.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from cutlib.config import TrainConfig  # noqa: E402
from cutlib.data import UnpairedDataset, make_demo_data, scan_images  # noqa: E402
from cutlib.launch import rank_starts, train_ddp  # noqa: E402

QUICK = dict(image_size=32, load_size=36, ngf=8, ndf=8, n_blocks=5, num_patches=16)


def loader_pairs_per_s(cfg: TrainConfig, n: int) -> float:
    """What one worker process does per item (decode both JPEGs, resize, crop, flip), in this process."""
    photos, _ = scan_images(cfg.photo_path)
    monets, _ = scan_images(cfg.monet_path)
    ds = UnpairedDataset(photos, monets, cfg.image_size, cfg.load_size, cfg.flip, cfg.seed, 10**6)
    ds[0]
    t0 = time.perf_counter()
    for k in range(1, n + 1):
        ds[k]
    return n / (time.perf_counter() - t0)


def expected_steps(budget_s: float, fixed_s: float, s_per_step: float, ckpt_s: float, ckpt_every: int) -> int:
    """Largest N with fixed + N * s_per_step + (N / ckpt_every + 2) * ckpt_s <= budget: the loop keeps
    room for two checkpoints when it decides to stop, and writes a checkpoint every ckpt_every steps."""
    return max(0, int((budget_s - fixed_s - 2 * ckpt_s) / (s_per_step + ckpt_s / ckpt_every)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="demo", help="Kaggle-layout folder (photo_jpg/, monet_jpg/) or demo")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--amp", default="fp16", help="TrainConfig.amp (fp16 on a T4)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--num-workers", type=int, default=1)
    ap.add_argument("--budget-hours", type=float, default=4.0)
    ap.add_argument("--ckpt-every", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="CI size: demo data, 32 px, tiny nets, 6 steps, CPU")
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="kaggle_budget_"))
    kw = dict(steps=a.steps, log_every=a.log_every, image_size=a.size, load_size=a.size * 286 // 256,
              amp=a.amp, num_workers=a.num_workers)
    if a.quick:
        kw.update(QUICK, steps=6, log_every=2, amp="off", num_workers=0, device="cpu")
    data = str(make_demo_data(tmp / "demo", n_photos=12, n_paintings=8, size=64)) if a.data == "demo" else a.data
    cfg = TrainConfig(data=data, out_dir=str(tmp / "run"), ckpt_every=10**9, sample_every=0, eval_every=0, **kw)

    lines: list[str] = []
    t0 = time.time()
    summary = train_ddp(cfg, a.nproc, echo=lines.append)
    outside = time.time() - t0 - summary["seconds"]
    to_ranks = sorted(rank_starts("".join(lines)).values())
    logs = [json.loads(x) for x in (Path(cfg.out_dir) / "metrics.jsonl").read_text().splitlines()]
    first, prev, last = logs[0], logs[-2], logs[-1]
    s_per_step = (last["time"] - prev["time"]) / (last["step"] - prev["step"])
    setup = max(0.0, first["time"] - first["step"] * s_per_step)

    state = load_checkpoint(Path(cfg.out_dir) / "ckpt/latest.pt")  # the run's own full state
    t1 = time.perf_counter()
    path = save_checkpoint(state, tmp / "timed.pt")
    ckpt_s = time.perf_counter() - t1
    budget_s = a.budget_hours * 3600
    print(json.dumps({
        "device": summary["device"], "world_size": summary["world_size"], "amp": summary["amp"],
        "size": cfg.image_size, "steps": summary["step"], "launch_to_ranks_s": to_ranks,
        "outside_train_s": round(outside, 2), "setup_s": round(setup, 2),
        "seconds_per_step": round(s_per_step, 4), "images_per_s": last["images_per_s"],
        "checkpoint_s": round(ckpt_s, 3), "checkpoint_mb": round(path.stat().st_size / 2**20, 1),
        "loader_pairs_per_s": round(loader_pairs_per_s(cfg, 8 if a.quick else 64), 1),
        "budget_hours": a.budget_hours, "ckpt_every": a.ckpt_every,
        "expected_steps": expected_steps(budget_s, outside + setup, s_per_step, ckpt_s, a.ckpt_every),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
