"""Fixed-budget quality: train from scratch, translate a fixed named photo set with the EMA generator,
and score offline FID / KID / MiFID / memorization against the Monet paintings, next to two baselines
on the same photos in the same run (the photos untouched, and Lab colour transfer). One JSON line.
When --size is below 256 it also scores `identity_at_size`: the photos sent through the same
downscale -> generator -> bicubic upscale path with an identity generator, i.e. what the resolution
alone costs a model that would change nothing.

    python bench/quality.py --data ../shared/data/gan-getting-started --budget 600 --size 128 --photos 1000
    python bench/quality.py --data ... --budget 30m --size 128 --photos 1000 --set antialias=false --set ngf=32
    python bench/quality.py --quick          # CI-sized: demo data, 32 px, 4 steps

--budget: N (steps) or Nm (minutes of training, converted to steps after timing a few steps, so the lr
schedule still decays to 0 at the end). Images are generated at --size and upsampled to 256 for scoring.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cutlib.baselines import color_transfer, lab_stats  # noqa: E402
from cutlib.config import TrainConfig  # noqa: E402
from cutlib.data import list_images, load_rgb, make_demo_data  # noqa: E402
from cutlib.generate import load_generator, translate_files  # noqa: E402
from cutlib.metrics import InceptionFeatures, default_cache_dir, features_of, scores  # noqa: E402
from cutlib.train import CUTModel, resolve_amp, train  # noqa: E402

FID_FLOOR_OFFLINE = 60.3  # two disjoint real photo sets of 300 and 6,738 (DESIGN.md section 7)


def cached_features(key: str, make, cache: Path) -> np.ndarray:
    path = cache / f"bench-{hashlib.sha1(key.encode()).hexdigest()}.npy"
    if path.is_file():
        return np.load(path)
    feats = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, feats)
    return feats


def summarize(s: dict) -> dict:
    return {"fid": round(s["fid"], 2), "kid_x1000": round(max(s["kid"], 0.0) * 1000, 2),
            "mifid": round(s["mifid"], 2), "mem_distance": round(s["mem_distance"], 4), "n": s["n_generated"]}


def steps_for_minutes(cfg: TrainConfig, minutes: float) -> int:
    """Time a few real steps of this configuration and convert the budget into steps."""
    model = CUTModel(cfg)
    x = torch.rand(cfg.batch_size, 3, cfg.image_size, cfg.image_size) * 2 - 1
    model.train_step(x, x)
    t0 = time.perf_counter()
    for _ in range(3):
        model.train_step(x, x)
    return max(1, int(minutes * 60 / ((time.perf_counter() - t0) / 3)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="demo")
    ap.add_argument("--budget", default="600", help="steps, or minutes with an m suffix (30m)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--photos", type=int, default=0, help="first N photos by name (0 = all)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="TrainConfig override")
    ap.add_argument("--out", default="", help="run folder (default: a temp folder)")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.set)}
    if a.quick:
        a.size, a.budget, a.photos = 32, "4", 8
        overrides = {"ngf": 8, "ndf": 8, "n_blocks": 5, "num_patches": 16, **overrides}
        if a.data == "demo":
            a.data = str(make_demo_data(Path(tempfile.mkdtemp(prefix="bench-q-")), 16, 12, 64))
    data = make_demo_data(Path(tempfile.mkdtemp(prefix="bench-q-"))) if a.data == "demo" else Path(a.data)
    out = Path(a.out or tempfile.mkdtemp(prefix="bench-quality-"))
    device = "cuda" if a.device == "auto" and torch.cuda.is_available() else ("cpu" if a.device == "auto" else a.device)
    load = a.size * 286 // 256 // 2 * 2
    base = dict(data=str(data), image_size=a.size, load_size=load, out_dir=str(out), device=device,
                sample_every=0, log_every=50, num_workers=2 if device == "cuda" else 0, steps=1)
    base.update(overrides)
    cfg = TrainConfig.from_dict(base)
    budget_minutes = float(a.budget[:-1]) if a.budget.endswith("m") else None
    steps = steps_for_minutes(cfg, budget_minutes) if budget_minutes else int(a.budget)
    cfg = cfg.replace(steps=steps, ckpt_every=steps, identity_warmup=min(cfg.identity_warmup, max(steps // 4, 1)),
                      time_budget_hours=budget_minutes * 1.25 / 60 if budget_minutes else 0.0)

    t0 = time.time()
    summary = train(cfg, progress=False)
    train_seconds = time.time() - t0

    photos = list_images(Path(data) / "photo_jpg")
    photos = photos[: a.photos] if a.photos else photos
    names_key = ",".join(p.name for p in photos) + str(Path(data).resolve())
    extractor = InceptionFeatures(device=device)
    cache = default_cache_dir()
    real = features_of(Path(data) / "monet_jpg", extractor, cache)

    G, info = load_generator(Path(out) / "ckpt" / "latest.pt", "ema", device)
    amp = resolve_amp(cfg.amp, torch.device(device))  # generate in the dtype the model trained in
    t1 = time.time()
    gen = extractor((img for _, img in translate_files(G, [(p, "") for p in photos], a.size, 256, 8, device, amp)),
                    total=len(photos))
    eval_seconds = time.time() - t1
    identity = cached_features("identity:" + names_key, lambda: extractor(
        np.asarray(load_rgb(p).resize((256, 256), Image.BICUBIC)) for p in photos), cache)

    def transferred():
        mean, std = lab_stats(np.asarray(load_rgb(p)) for p in list_images(Path(data) / "monet_jpg"))
        return extractor(color_transfer(np.asarray(load_rgb(p).resize((256, 256), Image.BICUBIC)), mean, std)
                         for p in photos)

    color = cached_features("color_transfer:" + names_key, transferred, cache)
    resized = None
    if a.size != 256:
        resized = cached_features(f"identity_at_size:{a.size}:" + names_key, lambda: extractor(
            img for _, img in translate_files(torch.nn.Identity(), [(p, "") for p in photos], a.size, 256, 8)),
            cache)
    model_s, identity_s = summarize(scores(gen, real)), summarize(scores(identity, real))
    result = {
        "bench": "quality", "data": str(data), "photos": len(photos), "size": a.size,
        "budget": a.budget, "steps": summary["step"], "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(eval_seconds, 1), "device": device, "overrides": overrides,
        "model": model_s, "identity": identity_s, "color_transfer": summarize(scores(color, real)),
        **({"identity_at_size": summarize(scores(resized, real))} if resized is not None else {}),
        # share of the identity -> offline-floor FID gap this model closed (negative: worse than photos)
        "gap_closed": round((identity_s["fid"] - model_s["fid"]) / (identity_s["fid"] - FID_FLOOR_OFFLINE), 3),
        "run_dir": str(out), "generator": info,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
