"""Quality curves: score the EMA generator of a run's numbered checkpoints on a fixed held-out photo set
(FID / KID / MiFID / memorisation / SWD), next to the baselines on the same photos, so recipes are
compared at equal steps. Runs trained anywhere (CPU, a GPU call, a Kaggle output) score alike: a run is
a folder with ckpt/step_*.pt.

    python bench/curve.py --photos HELD_OUT/ --paintings monet_jpg/ --out curves/ RUN_DIR [RUN_DIR ...]
        [--steps 1000,2000,3000 | --steps all] [--gen-size 256] [--border 16] [--keep-colour 4]
        [--fid-weights FILE]
    python bench/curve.py --quick     # CI-sized: trains a 2-checkpoint demo run, scores it

Writes <out>/curve.json (also printed as one JSON line, without each output's colour point), curve.md
(the table, also on stderr), curve.png (FID, SWD at 128 / 64 px, mean chroma and hue kept against steps,
the baselines as lines), colour.png (each image's mean a*, b*: paintings, photos and each run's outputs at
its last scored step), grids/<run>_step_<k>.png (the same six held-out photos, photo | output, for every
scored checkpoint: first a colour panel of a sunset, foliage, water..., cutlib.colour.colour_panel) and
grids.png (all of them, a row each). Scores are kept in curve.json by checkpoint file, size and
modification time: a rerun scores only what is new. Colour figures: cutlib.colour (chroma C*,
colourfulness M, palette spread, hue kept a* / b*, all at 128 px).

Baselines on the same photos: `identity` (untouched photos), `color_transfer` (Lab mean/std moved to
the paintings'), `painting_halves` (the paintings' two halves against each other: the SWD floor).
"""
from __future__ import annotations

import argparse
import json
import re
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
sys.path.insert(0, str(ROOT / "bench"))
from scoring import fid_weights_file, measured, reference_measures, scored, swd_descs, weights_key  # noqa: E402

from cutlib.checkpoint import atomic_write  # noqa: E402
from cutlib.colour import KEEP_COLOUR_GRID, colour_panel, palette_report  # noqa: E402
from cutlib.data import eval_image, list_images  # noqa: E402
from cutlib.generate import load_generator, translate_files  # noqa: E402
from cutlib.hardware import resolve_amp, resolve_device  # noqa: E402
from cutlib.metrics import InceptionFeatures, default_cache_dir  # noqa: E402
from cutlib.painting import PAINT_BORDER, paint  # noqa: E402
from cutlib.swd import swd  # noqa: E402
from cutlib.viz import colour_scatter, save_pairs_grid  # noqa: E402

GRID_PHOTOS = 6
STEP_FILE = re.compile(r"step_(\d+)\.pt$")


def checkpoints(run: Path, wanted: set[int] | None) -> dict[int, Path]:
    """{step: file} of the run's numbered checkpoints, those in `wanted` (None: all kept)."""
    found = {int(m.group(1)): p for p in sorted((run / "ckpt").glob("step_*.pt")) if (m := STEP_FILE.search(p.name))}
    if not found:
        raise SystemExit(f"{run}: no ckpt/step_*.pt (is it a cutlib run folder?)")
    if wanted is None:
        return found
    missing = sorted(wanted - set(found))
    if missing:
        print(f"curve: {run.name}: no checkpoint kept for step(s) {missing}; kept: {sorted(found)}", file=sys.stderr)
    return {s: p for s, p in found.items() if s in wanted}


def baselines(photos: list[Path], monets: list[Path], extractor, cache: Path) -> tuple:
    """The paintings' measures, the photos' colour rows, and the reference sets scored beside the runs."""
    refs = reference_measures(photos, monets, extractor, cache)
    real, identity, transfer = refs["real"], refs["identity"], refs["color_transfer"]
    # colour figures: the paintings are the target; a translation's hue kept is against its photo
    base = {"identity": {**scored(identity, real), "colour": palette_report(torch.from_numpy(identity["colour"]))},
            "color_transfer": {**scored(transfer, real), "colour": palette_report(
                torch.from_numpy(transfer["colour"]), torch.from_numpy(identity["colour"]))}}
    half = len(monets) // 2
    per = len(swd_descs(real)[0]) // len(monets)  # descriptors per image
    base["painting_halves"] = {"n": half, **swd([d[:half * per] for d in swd_descs(real)],
                                                [d[half * per:] for d in swd_descs(real)]),
                               "colour": palette_report(torch.from_numpy(real["colour"]))}
    return real, identity["colour"], plain(base)


def score_checkpoint(path: Path, photos, grid_src, real, photo_colour, extractor, gen_size: int, device: str,
                     amp: str, grid_file: Path, border: int = PAINT_BORDER,
                     keep_colour: int = KEEP_COLOUR_GRID) -> dict:
    t0 = time.time()
    G, info = load_generator(path, "ema", device)
    dtype = resolve_amp(amp, torch.device(device))
    images = [img for _, img in translate_files(G, [(p, "") for p in photos], gen_size, 256, 8, device, dtype,
                                                border=border, keep_colour=keep_colour)]
    m = measured(images, extractor)
    s = {**scored(m, real), "colour": palette_report(torch.from_numpy(m["colour"]), torch.from_numpy(photo_colour)),
         "ab": np.round(m["colour"][:, 1:3], 2).tolist()}  # each output's mean a*, b*: the colour plot's points
    with torch.no_grad(), torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
        fakes = paint(G, grid_src.to(device), border, keep_colour).float().cpu()
    save_pairs_grid(grid_src, fakes, grid_file)
    return {**plain(s), "step": info["step"], "train_size": info["image_size"], "gen_size": gen_size, "border": border,
            "keep_colour": keep_colour,
            "amp": str(dtype).replace("torch.", "") if dtype else "off", "grid": str(grid_file),
            "score_seconds": round(time.time() - t0, 1)}


def result_of(a, n_photos: int, device: str, extractor, runs: dict, base: dict, cache_keys: dict) -> dict:
    return {"bench": "curve", "photos": str(a.photos), "n_photos": n_photos, "paintings": str(a.paintings),
            "device": device, "fid_weights": Path(extractor.weights).name, "runs": runs, "baselines": base,
            "cache_keys": cache_keys}


def save(result: dict, path: Path) -> None:
    """Atomically, and with the SWD levels' keys as strings, as a reread would have them."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)))


def plain(s: dict) -> dict:
    return json.loads(json.dumps(s))  # int keys (SWD levels) become the strings a reread gives


def colour_cells(s: dict) -> str:
    c = s.get("colour", {})
    kept = f"{c['hue_kept_a']:.2f} / {c['hue_kept_b']:.2f}" if "hue_kept_a" in c else ""
    return f"{c.get('chroma', '')} | {c.get('colourfulness', '')} | {c.get('palette_spread', '')} | {kept}"


def markdown(result: dict) -> str:
    rows = ["| run | step | FID | KID×1000 | MiFID | SWD 256 / 128 / 64 / 32 / 16 | ΔFID vs c.t. | "
            "C* | M | palette spread | hue kept a* / b* | grid |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ct = result["baselines"]["color_transfer"]["fid"]

    def levels(s):
        return " / ".join(f"{v:g}" for v in s["swd_levels"].values())

    for run, points in result["runs"].items():
        for step, s in sorted(points.items(), key=lambda kv: int(kv[0])):
            rows.append(f"| {run} | {int(step):,} | {s['fid']} | {s['kid_x1000']} | {s['mifid']} | {levels(s)} | "
                        f"{ct - s['fid']:+.1f} | {colour_cells(s)} | {Path(s['grid']).name} |")
    for name, s in result["baselines"].items():
        rows.append(f"| *{name}* | — | {s.get('fid', '')} | {s.get('kid_x1000', '')} | {s.get('mifid', '')} | "
                    f"{levels(s)} | | {colour_cells(s)} | |")
    return "\n".join(rows)


def hue_kept(s: dict):
    c = s.get("colour", {})
    return (c["hue_kept_a"] + c["hue_kept_b"]) / 2 if "hue_kept_a" in c else None


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("FID", lambda s: s.get("fid")), ("SWD at 128 px ×1e3", lambda s: s["swd_levels"].get("128")),
              ("SWD at 64 px ×1e3", lambda s: s["swd_levels"].get("64")),
              ("mean chroma C*", lambda s: s.get("colour", {}).get("chroma")),
              ("hue kept (mean of a*, b*)", hue_kept)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2))
    styles = {"identity": ":", "color_transfer": "--", "painting_halves": "-."}
    for ax, (title, get) in zip(axes, panels):
        for run, points in result["runs"].items():
            steps = [k for k in sorted(points, key=int) if get(points[k]) is not None]
            ax.plot([int(k) for k in steps], [get(points[k]) for k in steps], marker="o", label=run)
        for name, s in result["baselines"].items():
            value = get({"swd_levels": {}, **s})
            if value is not None:
                ax.axhline(value, color="grey", linestyle=styles.get(name, ":"), linewidth=1,
                           label="paintings" if name == "painting_halves" and "C*" in title else name)
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    axes[3].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def colour_plot(result: dict, paintings: np.ndarray, photos: np.ndarray, path: Path) -> None:
    """Each image's mean (a*, b*): the paintings, the photos, and each run's outputs at its last scored
    step, a panel per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {run: (step, points[step]) for run, points in result["runs"].items()
            for step in [max((k for k in points if "ab" in points[k]), key=int, default=None)] if step}
    if not runs:
        return
    fig, axes = plt.subplots(1, len(runs), figsize=(4.8 * len(runs), 4.6), squeeze=False)
    for ax, (run, (step, s)) in zip(axes[0], runs.items()):
        outputs = np.concatenate([np.zeros((len(s["ab"]), 1)), np.asarray(s["ab"])], 1)  # image_stats' a, b columns
        c = s["colour"]
        colour_scatter({"paintings": paintings, "photos": photos, f"outputs @ {int(step):,}": outputs},
                       f"{run}: C* {c['chroma']}, spread {c['palette_spread']}, hue kept "
                       f"{c.get('hue_kept_a', float('nan')):.2f} / {c.get('hue_kept_b', float('nan')):.2f}", ax)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def without_points(result: dict) -> dict:
    """The result without each output's (a*, b*) points (curve.json keeps them for the colour plot)."""
    return {**result, "runs": {run: {k: {f: v for f, v in s.items() if f != "ab"} for k, s in points.items()}
                               for run, points in result.get("runs", {}).items()}}


def contact_sheet(result: dict, path: Path, width: int = 1200) -> None:
    """Every scored checkpoint's grid in one image, a row each (run and step written above it): progress
    at a glance, and one file where only a few come back (a device call)."""
    from PIL import ImageDraw

    rows = []
    for run, points in result["runs"].items():
        for step in sorted(points, key=int):
            grid_file = Path(points[step]["grid"])
            if grid_file.is_file():
                im = Image.open(grid_file).convert("RGB")
                im = im.resize((width, max(1, im.height * width // im.width)))
                row = Image.new("RGB", (width, im.height + 18), "white")
                row.paste(im, (0, 18))
                fid = points[step].get("fid")
                ImageDraw.Draw(row).text((4, 3), f"{run}  step {int(step):,}  FID {fid}", fill="black")
                rows.append(row)
    if rows:
        sheet = Image.new("RGB", (width, sum(r.height for r in rows)), "white")
        y = 0
        for r in rows:
            sheet.paste(r, (0, y))
            y += r.height
        atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))


def quick_run(root: Path) -> tuple[Path, Path, Path]:
    """A 4-step demo run with checkpoints at 2 and 4, its photos and paintings (CI size)."""
    from cutlib.data import make_demo_data

    data = make_demo_data(root / "demo", n_photos=10, n_paintings=8, size=64, seed=0)
    run = root / "run"
    args = ["--data", str(data), "--out_dir", str(run), "--image_size", "32", "--load_size", "36", "--ngf", "8",
            "--ndf", "8", "--n_blocks", "2", "--nce_layers", "0,4,8,12", "--num_patches", "16", "--steps", "4",
            "--ckpt_every", "2", "--sample_every", "0", "--num_workers", "0", "--keep_ckpts", "5"]
    subprocess.run([sys.executable, "-m", "cutlib.train", *args], cwd=ROOT, check=True, capture_output=True)
    return run, data / "photo_jpg", data / "monet_jpg"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", type=Path, help="run folders (each with ckpt/step_*.pt)")
    ap.add_argument("--photos", type=Path, help="held-out photo folder (photos no run trained on)")
    ap.add_argument("--paintings", type=Path, help="painting folder (monet_jpg)")
    ap.add_argument("--steps", default="all", help="comma-separated steps to score, or 'all' kept checkpoints")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: curves/; --quick: a temp one)")
    ap.add_argument("--gen-size", type=int, default=256, help="apply G at this size (outputs are 256 px)")
    ap.add_argument("--border", type=int, default=PAINT_BORDER,
                    help=f"G paints photos with this many reflected pixels above and left, as the zip does "
                    f"(default {PAINT_BORDER}; 0: as G paints them, the curves before 2026-12-06)")
    ap.add_argument("--keep-colour", type=int, default=KEEP_COLOUR_GRID, metavar="CELLS",
                    help=f"each output takes its photo's colour layout over CELLS x CELLS cells, as the zip does "
                    f"(default {KEEP_COLOUR_GRID}; 0: G's own colours, the curves before 2026-12-07)")
    ap.add_argument("--fid-weights", default="", help="FID TorchScript (.pt, or the fp16 .pt.xz copy)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", default="auto", choices=["auto", "off", "bf16", "fp16"], help="G's autocast")
    ap.add_argument("--quick", action="store_true", help="CI-sized: a demo run trained here, scored at 32 px")
    a = ap.parse_args(argv)
    tmp = None
    if a.quick:
        tmp = tempfile.TemporaryDirectory()
        run, a.photos, a.paintings = quick_run(Path(tmp.name))
        a.runs, a.gen_size, a.out = [run], 32, a.out or Path(tmp.name) / "curves"
    a.out = a.out or Path("curves")
    if not a.runs or a.photos is None or a.paintings is None:
        ap.error("give run folders, --photos and --paintings (or --quick)")
    device = resolve_device(a.device).type
    wanted = None if a.steps == "all" else {int(s) for s in a.steps.split(",") if s.strip()}
    photos, monets = list_images(a.photos, "--photos"), list_images(a.paintings, "--paintings")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "grids").mkdir(exist_ok=True)
    kept_file = a.out / "curve.json"
    kept = json.loads(kept_file.read_text()) if kept_file.is_file() else {}
    cache_keys = kept.get("cache_keys", {})

    extractor = InceptionFeatures(fid_weights_file(a.fid_weights), device=device)
    wkey = weights_key(extractor)
    real, photo_colour, base = baselines(photos, monets, extractor, default_cache_dir())
    panel = colour_panel(photos, 4)  # a sunset, foliage, water... then the first photos by name
    grid_photos = (panel + [p for p in photos if p not in panel])[:GRID_PHOTOS]
    grid_src = torch.stack([eval_image(p, a.gen_size) for p in grid_photos])
    runs = kept.get("runs", {})
    for run in a.runs:
        name = run.resolve().name
        points = runs.setdefault(name, {})
        for step, path in checkpoints(run, wanted).items():
            key = f"{path.resolve()}:{path.stat().st_mtime_ns}:{a.gen_size}:{a.amp}:{wkey}:{len(photos)}"
            key += f":border{a.border}" if a.border else ""  # border 0 keeps the keys of earlier scores
            key += f":keep{a.keep_colour}" if a.keep_colour else ""  # 0 keeps the keys of earlier scores
            if cache_keys.get(f"{name}/{step}") == key and str(step) in points:
                continue
            points[str(step)] = score_checkpoint(path, photos, grid_src, real, photo_colour, extractor, a.gen_size, device,
                                                 a.amp, a.out / "grids" / f"{name}_step_{step:07d}.png", a.border,
                                                 a.keep_colour)
            cache_keys[f"{name}/{step}"] = key
            print(f"curve: {name} step {step}: FID {points[str(step)]['fid']} SWD "
                  f"{points[str(step)]['swd_levels']}", file=sys.stderr)
            save(result_of(a, len(photos), device, extractor, runs, base, cache_keys), kept_file)  # point by point
    result = result_of(a, len(photos), device, extractor, runs, base, cache_keys)
    save(result, kept_file)
    atomic_write(a.out / "curve.md", lambda tmp: Path(tmp).write_text(markdown(result) + "\n"))
    plot(result, a.out / "curve.png")
    colour_plot(result, real["colour"], photo_colour, a.out / "colour.png")
    contact_sheet(result, a.out / "grids.png")
    print(json.dumps(without_points({k: v for k, v in result.items() if k != "cache_keys"})))
    print(markdown(result), file=sys.stderr)
    if tmp:
        tmp.cleanup()
    return result


if __name__ == "__main__":
    main()
