"""Quality at a fixed budget: train one or several configurations for the same budget (concurrently on a
GPU, one after another on CPU), optionally beside the official CUT code, then score each EMA generator
on a fixed named photo set against the Monet paintings (offline FID / KID ± std / MiFID / memorization)
next to reference baselines computed in the same run. Prints one JSON line and a markdown table, and
saves each run's sample grid (photo | output) as <out>/<run>_grid.png.

    python bench/quality.py --data ../shared/data/gan-getting-started --photos 1000 --size 128 --budget 30m
    python bench/quality.py --data ... --size 256 --budget 4m \\
        --run "base: -f params/baseline.yaml" --run "resid: -f params/residual.yaml" \\
        --official ../shared/reference/official-cut --fid-weights default_1.fp16.pt.xz
    python bench/quality.py --quick          # CI-sized: demo data, 32 px, 4 steps

--run "NAME: ARGS": ARGS as `python -m cutlib.train` takes them (-f file.yaml, --field value); without
--run, one run "model" of the default config plus any --set KEY=VALUE. The harness then fixes the data,
size, budget and output fields. --budget: N steps, or Nm minutes of wall time per run (then each run
stops on its time budget; its lr follows its own `lr_schedule`).

Baselines: `identity` (the photos), `color_transfer` (Lab mean/std to the paintings). Below 256 px also
the resolution-matched ones: `identity_at_size` and `color_transfer_at_size` (the photos through the
same downscale -> upscale path a model's outputs take, then colour transfer) and `paintings_at_size`
(the paintings through that path, scored against themselves: what the resolution alone costs real
paintings). Each run gets `vs_color_transfer`: FID and relative KID gains over the colour-transfer
baseline at its resolution, and `gap_closed`: the share of the gap from the resolution-matched identity
to the offline sampling floor (60.3) that it closed.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cutlib.baselines import color_transfer, lab_stats  # noqa: E402
from cutlib.data import eval_image, list_images, load_rgb, make_demo_data  # noqa: E402
from cutlib.generate import load_generator, translate_files  # noqa: E402
from cutlib.hardware import resolve_amp  # noqa: E402
from cutlib.metrics import InceptionFeatures, default_cache_dir  # noqa: E402
from cutlib.swd import swd  # noqa: E402
from cutlib.train import parse_cli  # noqa: E402
from cutlib.viz import save_pairs_grid  # noqa: E402
from scoring import (cached_measures, fid_weights_file, measured, reference_measures, scored,  # noqa: E402
                     swd_descs, weights_key)

FID_FLOOR_OFFLINE = 60.3  # two disjoint real photo sets of 300 and 6,738 (docs/metrics.md, the FID floor)
GRID_PHOTOS = 6


def photo_subset(data: Path, n: int, out: Path, skip: int = 0, name: str = "photos") -> Path:
    """The first n photos by name after `skip`, as a folder of links."""
    photos = list_images(data / "photo_jpg")[skip:]
    photos = photos[:n] if n else photos
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    for p in photos:
        link = folder / p.name
        if not link.exists():
            link.symlink_to(p.resolve())
    return folder


def run_argv(spec: str, forced: list[str]) -> tuple[str, list[str]]:
    name, _, args = spec.partition(":")
    name = name.strip()
    if not name.replace("_", "").replace("-", "").isalnum():
        raise SystemExit(f"--run {spec!r}: start with a name of letters, digits, '-' or '_', then ':'")
    argv = shlex.split(args) + forced
    parse_cli(argv)  # every run's parameters are checked before any training starts
    return name, argv


def official_command(path: str, root: Path, name: str, size: int, device: str, budget_steps: int | None,
                     extra: list[str]) -> list[str]:
    load = size * 286 // 256 // 2 * 2
    return [sys.executable, "train.py", "--dataroot", str(root), "--name", name, "--checkpoints_dir",
            str(root / "ckpt"), "--CUT_mode", "CUT", "--display_id", "0", "--no_html", "--load_size", str(load),
            "--crop_size", str(size), "--gpu_ids", "0" if device == "cuda" else "-1", "--print_freq", "100",
            "--save_latest_freq", str(max(1, min(200, (budget_steps or 10**9) // 4))), "--num_threads", "2",
            "--n_epochs", str(10**4 if budget_steps is None else 1 + budget_steps // 1000), "--n_epochs_decay", "0",
            *extra]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="demo")
    ap.add_argument("--budget", default="600", help="steps, or minutes with an m suffix (30m)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--photos", type=int, default=0, help="train on the first N photos by name (0 = all)")
    ap.add_argument("--eval-photos", type=int, default=0,
                    help="score on the N photos that follow the training ones (held out); 0: on the training photos")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--run", action="append", default=[], metavar="'NAME: ARGS'")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for the single run")
    ap.add_argument("--official", default="", metavar="PATH", help="official CUT checkout to train beside ours")
    ap.add_argument("--official-args", default="", help="extra options for the official code")
    ap.add_argument("--concurrent", choices=["auto", "yes", "no"], default="auto", help="auto: yes on CUDA")
    ap.add_argument("--fid-weights", default="", help="TorchScript FID Inception (.pt, or the fp16 .pt.xz)")
    ap.add_argument("--raw", action="store_true", help="also score the raw (non-EMA) generators")
    ap.add_argument("--out", default="", help="output folder (default: a temp folder)")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    tiny = []
    if a.quick:
        a.size, a.budget, a.photos = 32, "4", 8
        tiny = ["--ngf", "8", "--ndf", "8", "--n_blocks", "5", "--num_patches", "16"]
        if a.data == "demo":
            a.data = str(make_demo_data(Path(tempfile.mkdtemp(prefix="bench-q-")), 16, 12, 64))
    data = make_demo_data(Path(tempfile.mkdtemp(prefix="bench-q-"))) if a.data == "demo" else Path(a.data)
    out = Path(a.out or tempfile.mkdtemp(prefix="bench-quality-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if a.device == "auto" and torch.cuda.is_available() else ("cpu" if a.device == "auto" else a.device)
    concurrent = a.concurrent == "yes" or (a.concurrent == "auto" and device == "cuda")
    minutes = float(a.budget[:-1]) if a.budget.endswith("m") else None
    budget_steps = None if minutes else int(a.budget)
    photo_dir = photo_subset(data, a.photos, out)
    if a.eval_photos and not a.photos:
        raise SystemExit("--eval-photos needs --photos: the held-out photos are the ones after the first N")
    eval_dir = photo_subset(data, a.eval_photos, out, a.photos, "eval_photos") if a.eval_photos else photo_dir
    load = a.size * 286 // 256 // 2 * 2

    # --- the runs: `python -m cutlib.train` with the harness's fields last, so they win ---
    def forced(name):
        f = ["--data", str(data), "--photo_dir", str(photo_dir), "--monet_dir", str(data / "monet_jpg"),
             "--image_size", str(a.size), "--load_size", str(load), "--out_dir", str(out / name), "--device", device,
             "--sample_every", "0", "--eval_every", "0", "--log_every", "50", "--resume", "false",
             "--num_workers", "2" if device == "cuda" else "0"]
        if minutes:  # stop on time; the step count is only a bound (its decay starts later than any run gets)
            f += ["--time_budget_hours", str(minutes / 60), "--steps", str(int(minutes * 60 * 400)),
                  "--ckpt_every", str(10**9)]
        else:
            f += ["--steps", str(budget_steps), "--ckpt_every", str(budget_steps)]
        return tiny + f

    specs = a.run or ["model: " + " ".join(f"--{k} {shlex.quote(v)}" for k, v in (s.split("=", 1) for s in a.set))]
    runs = [run_argv(s, forced(s.partition(":")[0].strip())) for s in specs]
    if len({n for n, _ in runs}) != len(runs):
        raise SystemExit("--run names must differ")
    jobs = [(name, [sys.executable, "-m", "cutlib.train", *args], ROOT) for name, args in runs]
    if a.official:
        root = out / "official_data"
        root.mkdir(exist_ok=True)
        for sub, target in (("trainA", photo_dir), ("trainB", data / "monet_jpg")):
            if not (root / sub).exists():
                (root / sub).symlink_to(Path(target).resolve())
        extra = shlex.split(a.official_args) + (["--ngf", "8", "--ndf", "8", "--netF_nc", "32"] if a.quick else [])
        jobs.append(("official", official_command(a.official, root, "official", a.size, device, budget_steps, extra),
                     Path(a.official)))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if concurrent and device == "cpu":  # runs sharing the cores: one thread each is the fair split
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(jobs)))

    def start(name, cmd, cwd):
        log = open(out / f"{name}.log", "w")
        return subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env), log

    def finish(name, proc, log, t0):
        if name == "official" and minutes:  # it has no time budget of its own: stop it at ours
            try:
                proc.wait(timeout=max(1.0, minutes * 60 - (time.time() - t0)))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
        else:
            proc.wait()
        log.close()
        if proc.returncode != 0 and name != "official":
            raise SystemExit(f"run {name} failed; see {out / (name + '.log')}:\n"
                             + (out / f"{name}.log").read_text()[-2000:])

    t0 = time.time()
    if concurrent:
        started = [(n, *start(n, c, d), time.time()) for n, c, d in jobs]
        for name, proc, log, ts in started:
            finish(name, proc, log, ts)
    else:
        for name, cmd, cwd in jobs:
            proc, log = start(name, cmd, cwd)
            finish(name, proc, log, time.time())
    train_seconds = time.time() - t0

    # --- scoring: the same photos, the same path to 256 px, for every run and baseline ---
    weights = fid_weights_file(a.fid_weights)
    extractor = InceptionFeatures(weights, device=device)
    cache = default_cache_dir()
    wkey = weights_key(extractor)
    monets = list_images(data / "monet_jpg")
    photos = list_images(eval_dir)
    jobs_photos = [(p, "") for p in photos]
    names_key = wkey + ",".join(p.name for p in photos) + str(Path(data).resolve())
    grid_src = torch.stack([eval_image(p, a.size) for p in photos[:GRID_PHOTOS]])

    def at_size(files):
        return [img for _, img in translate_files(torch.nn.Identity(), [(p, "") for p in files], a.size, 256, 8)]

    refs = reference_measures(photos, monets, extractor, cache)
    real = refs["real"]
    base = {"identity": refs["identity"], "color_transfer": refs["color_transfer"]}
    if a.size != 256:
        mean, std = lab_stats(np.asarray(load_rgb(p)) for p in monets)  # for the resolution-matched transfer
        base["identity_at_size"] = cached_measures(f"identity_at_size:{a.size}:" + names_key,
                                                   lambda: measured(at_size(photos), extractor), cache)
        base["color_transfer_at_size"] = cached_measures(
            f"color_transfer_at_size:{a.size}:" + names_key,
            lambda: measured((color_transfer(x, mean, std) for x in at_size(photos)), extractor), cache)
        base["paintings_at_size"] = cached_measures(f"paintings_at_size:{a.size}:{wkey}{data.resolve()}",
                                                    lambda: measured(at_size(monets), extractor), cache)
    baselines = {k: scored(v, real) for k, v in base.items()}
    # the floor: the paintings split in two halves (first / second by name), each against the other
    half = len(monets) // 2
    baselines["painting_halves"] = {"n": half, **swd([d[:half * 128] for d in swd_descs(real)],
                                                    [d[half * 128:] for d in swd_descs(real)])}
    ref_id = baselines["identity_at_size" if a.size != 256 else "identity"]
    ref_ct = baselines["color_transfer_at_size" if a.size != 256 else "color_transfer"]

    def judged(s: dict) -> dict:
        return {**s, "vs_color_transfer": {"fid_gain": round(ref_ct["fid"] - s["fid"], 2),
                                           "kid_gain_rel": round(1 - s["kid_x1000"] / max(ref_ct["kid_x1000"], 1e-9), 3)},
                "gap_closed": round((ref_id["fid"] - s["fid"]) / (ref_id["fid"] - FID_FLOOR_OFFLINE), 3)}

    results = {}
    for name, _, _ in jobs:
        t1 = time.time()
        if name == "official":
            ckpt = out / "official_data" / "ckpt" / "official" / "latest_net_G.pth"
            log = (out / "official.log").read_text()
            steps = max([int(x.split(")")[0]) for x in log.split("total_iters ")[1:]] or [0])
            if not ckpt.is_file():
                results[name] = {"error": "no checkpoint saved (budget too short?)", "log_tail": log[-1500:]}
                continue
            gen_dir = out / "official_images"
            r = subprocess.run([sys.executable, str(ROOT / "bench" / "official_generate.py"), "--ckpt", str(ckpt),
                                "--photos", str(photo_dir), "--size", str(a.size), "--out", str(gen_dir),
                                "--device", device, *extra], cwd=a.official, capture_output=True, text=True)
            if r.returncode != 0:
                results[name] = {"error": r.stderr[-1500:]}
                continue
            m = measured((np.asarray(Image.open(gen_dir / f"{p.stem}.png").convert("RGB")) for p in photos), extractor)
            results[name] = {"steps_saved": steps, **judged(scored(m, real))}
            continue
        summary = json.loads([x for x in (out / f"{name}.log").read_text().splitlines() if x.startswith("{")][-1])
        entry = {"steps": summary["step"], "train_seconds": summary["seconds"], "stop_reason": summary["stop_reason"],
                 "cuda_graph": summary.get("cuda_graph"), "amp": summary["amp"]}
        for weights_kind in ("ema", "raw") if a.raw else ("ema",):
            G, info = load_generator(out / name / "ckpt" / "latest.pt", weights_kind, device)
            amp = resolve_amp(parse_cli(dict(runs)[name]).amp, torch.device(device))
            m = measured((img for _, img in translate_files(G, jobs_photos, a.size, 256, 16, device, amp)), extractor)
            entry[weights_kind] = judged(scored(m, real))
            if weights_kind == "ema":
                with torch.no_grad(), torch.autocast(device, dtype=amp or torch.float32, enabled=amp is not None):
                    fakes = G(grid_src.to(device)).float().cpu()
                save_pairs_grid(grid_src, fakes, out / f"{name}_grid.png")
        entry["score_seconds"] = round(time.time() - t1, 1)
        results[name] = entry

    result = {"bench": "quality", "data": str(data), "photos": a.photos, "eval_photos": len(photos),
              "held_out": bool(a.eval_photos), "size": a.size, "budget": a.budget,
              "device": device, "concurrent": concurrent, "train_seconds": round(train_seconds, 1),
              "fid_weights": Path(extractor.weights).name, "runs": {n: " ".join(c[3:] if c[1] == "-m" else c[2:])
                                                                     for n, c, _ in jobs},
              "results": results, "baselines": baselines, "out": str(out)}
    print(json.dumps(result))
    print(markdown(result), file=sys.stderr)
    return result


def markdown(result: dict) -> str:
    rows = ["| run | steps | FID | KID×1000 ± std | mem. d | SWD | SWD levels (px: ×1e3) | ΔFID vs colour transfer "
            "| ΔKID vs c.t. | gap closed |", "|---|---|---|---|---|---|---|---|---|---|"]

    def swd_cells(s):
        return f"{s['swd']} | " + " / ".join(f"{v:g}" for v in s["swd_levels"].values())

    for name, r in result["results"].items():
        s = r.get("ema", r)
        if "fid" not in s:
            rows.append(f"| {name} | — | failed | | | | | | | |")
            continue
        rows.append(f"| {name} | {r.get('steps', r.get('steps_saved', '—'))} | {s['fid']} | {s['kid_x1000']} ± "
                    f"{s['kid_std_x1000']} | {s['mem_distance']} | {swd_cells(s)} | "
                    f"{s['vs_color_transfer']['fid_gain']:+} | {s['vs_color_transfer']['kid_gain_rel']:+.0%} | "
                    f"{s['gap_closed']} |")
    for name, s in result["baselines"].items():
        if "fid" not in s:
            rows.append(f"| *{name}* | — | | | | {swd_cells(s)} | | | |")
            continue
        rows.append(f"| *{name}* | — | {s['fid']} | {s['kid_x1000']} ± {s['kid_std_x1000']} | {s['mem_distance']} "
                    f"| {swd_cells(s)} | | | |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
