"""Inference: load a generator (EMA weights by default), translate photos, stream PNGs into images.zip."""
from __future__ import annotations

import argparse
import io
import os
import sys
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .checkpoint import CheckpointError, atomic_write, load_checkpoint, load_weights
from .colour import KEEP_COLOUR_GRID
from .config import ConfigError, TrainConfig, data_folders
from .data import DEMO_PHOTOS, DataError, list_images, load_rgb, resize_square, to_tensor, to_uint8, to_uint8_chw
from .hardware import resolve_amp, resolve_device
from .jobs import JobFailed, JobParser, require_positive, run_job
from .nets import build_generator
from .painting import PAINT_BORDER, paint
from .stopping import release_held_signals, signals_held

SUBMISSION_MIN, SUBMISSION_MAX = 7_000, 10_000
# The demo has 200 photos, so Kaggle's window is scaled to them; params/demo.yaml uses the same window and
# the size the demo trains at (a test keeps the two equal).
DEMO_WINDOW = (DEMO_PHOTOS, DEMO_PHOTOS * 3 // 2)
DEMO_GEN_SIZE = 64
VARIANTS = ("", "_flip", "_crop", "_flipcrop")  # top-up views of a photo when there are too few photos


class ZipValidationError(ValueError):
    """images.zip does not meet the submission rules; the message says which rule and which entry."""


def resolve_checkpoint(spec: str | os.PathLike, run_dir: str | os.PathLike | None = None) -> Path:
    """'latest' / 'best' inside <run_dir>/ckpt, 'auto' (best if it exists, else latest), or a path."""
    if str(spec) == "auto" and run_dir is not None:
        spec = "best" if (Path(run_dir) / "ckpt" / "best.pt").is_file() else "latest"
    if str(spec) in ("latest", "best", "auto"):
        if run_dir is None:
            raise CheckpointError(f"checkpoint={spec!r} needs a run folder (run_dir)")
        path = Path(run_dir) / "ckpt" / f"{spec}.pt"
    else:
        path = Path(spec)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def load_generator(path: str | os.PathLike, weights: str = "ema", device: str | torch.device = "cpu"):
    """(G in eval mode, info). weights='ema' (default) or 'raw'; info says which were loaded."""
    if weights not in ("ema", "raw"):
        raise ConfigError(f"weights={weights!r}: accepted values are ('ema', 'raw')")
    ckpt = load_checkpoint(path)
    cfg = TrainConfig.of_generator(ckpt["config"])
    G = build_generator(cfg)  # the checkpoint's weights replace the fresh init
    state = ckpt["ema_G"]["shadow"] if weights == "ema" else ckpt["G"]
    load_weights(G, state, "EMA generator" if weights == "ema" else "generator", path)
    info = {"path": str(path), "weights": weights, "step": int(ckpt["step"]), "image_size": cfg.image_size}
    return G.to(device).eval().requires_grad_(False), info


def _view(im: Image.Image, variant: str, size: int) -> torch.Tensor:
    """The photo as one submission variant sees it: uint8 CHW, size x size."""
    x = to_uint8_chw(im)
    if "crop" in variant:  # central 87.5% crop: a different framing, not a copy
        h, w = x.shape[-2:]
        x = x[:, h // 16:h - h // 16, w // 16:w - w // 16]
    if "flip" in variant:
        x = x.flip(-1)
    if x.shape[-2:] != (size, size):
        x = resize_square(x, size)
    return x


def plan_jobs(files: list[Path], min_count: int, max_count: int, top_up: bool, strict: bool):
    """(candidates, target): translate candidates in order until `target` images are written.

    Extra photos beyond max_count are not used; with fewer than min_count photos, flipped/cropped views
    top the count up (unless top_up=False); candidates also cover photos that turn out undecodable."""
    n = len(files)
    if strict and not min_count <= n <= max_count:
        raise DataError(f"{n} photos, but a submission needs {min_count}..{max_count} images (strict=True)")
    target = min(n, max_count) if n >= min_count or not top_up else min_count
    candidates = [(f, v) for v in (VARIANTS if top_up else VARIANTS[:1]) for f in files]
    if len(candidates) < target:
        raise DataError(f"{n} photos x {len(VARIANTS)} views = {len(candidates)} < min_count={min_count}: "
                         f"lower min_count (--min-count {n}), or leave top-ups out (--no-top-up) to write "
                         f"only the {n} photos")
    return candidates, target


class _Decoded(torch.utils.data.Dataset):
    def __init__(self, jobs, size):
        self.jobs, self.size = jobs, size

    def __len__(self):
        return len(self.jobs)

    def __getitem__(self, i):
        f, v = self.jobs[i]
        try:
            return to_tensor(_view(load_rgb(f), v, self.size)), i
        except OSError as e:
            warnings.warn(f"skipping photo: {e}", stacklevel=2)
            return torch.zeros(3, self.size, self.size), -1


def auto_batch(device: torch.device) -> int:
    """Photos per generator batch when none is given: 8 on a GPU; 1 on a CPU, where a batch of 8 painted
    17-29 % slower (its convs' working set outgrows the caches; bench/README.md)."""
    return 8 if device.type == "cuda" else 1


def translate_files(G: torch.nn.Module, jobs, gen_size: int = 256, out_size: int = 256, batch_size: int = 0,
                    device="cpu", amp_dtype=None, num_workers: int = 0, progress: bool = False,
                    limit: int | None = None, border: int = PAINT_BORDER, keep_colour: int = KEEP_COLOUR_GRID):
    """Yield (job_index, uint8 HxWx3 at out_size) for decodable jobs, in order, at most `limit` of them;
    G paints each photo with `border` reflected pixels above and to the left (cutlib.painting.paint; 0: off),
    in the photo's colour layout over keep_colour x keep_colour cells (0: G's colours)."""
    from tqdm.auto import tqdm

    from .progress import redraw

    device = torch.device(device)
    limit = len(jobs) if limit is None else limit
    loader = torch.utils.data.DataLoader(_Decoded(jobs, gen_size), batch_size=batch_size or auto_batch(device),
                                         num_workers=num_workers, pin_memory=device.type == "cuda",
                                         worker_init_fn=release_held_signals if num_workers else None)
    with signals_held():  # a stop as the workers fork would hang the job or orphan a worker
        batches = iter(loader)
    done = 0
    with tqdm(total=limit, disable=not progress, desc="translate", dynamic_ncols=True, **redraw()) as bar:
        for x, idx in batches:
            with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                                 enabled=amp_dtype is not None):
                y = paint(G, x.to(device, non_blocking=True), border, keep_colour).float()
            if out_size != gen_size:
                y = torch.nn.functional.interpolate(y, size=(out_size, out_size), mode="bicubic",
                                                    align_corners=False)
            for i, img in zip(idx.tolist(), to_uint8(y)):
                if i >= 0 and done < limit:
                    done += 1
                    bar.update(1)
                    yield i, img
            if done >= limit:
                return


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)  # entries are stored: PNG is the codec
    return buf.getvalue()


def entry_name(job) -> str:
    f, variant = job
    return f"{Path(f).stem}{variant}.png"


def clean_stale_temps(path: Path) -> int:
    """Remove temp files a killed earlier run left beside `path`."""
    stale = list(path.parent.glob(f".{path.name}.*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def write_zip(named_images, zip_path: str | os.PathLike, workers: int | None = None) -> dict:
    """Encode (name, uint8 image) pairs to PNG in worker threads and stream them into zip_path,
    written under a temp name and renamed only once complete."""
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(zip_path)
    workers = workers or min(8, os.cpu_count() or 1)
    count = 0

    def write(tmp):
        nonlocal count
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf, \
                ThreadPoolExecutor(workers) as pool:
            pending = []
            for name, img in named_images:
                pending.append((name, pool.submit(png_bytes, img)))
                if len(pending) >= 4 * workers:  # bounded: memory stays flat for any image count
                    n, fut = pending.pop(0)
                    zf.writestr(n, fut.result())
                    count += 1
            for n, fut in pending:
                zf.writestr(n, fut.result())
                count += 1

    try:
        atomic_write(zip_path, write)
    except OSError as e:
        raise OSError(f"could not write {zip_path} ({e.strerror or e}); no partial file was left under that "
                      f"name") from e
    return {"path": str(zip_path), "count": count, "bytes": zip_path.stat().st_size}


def validate_zip(zip_path: str | os.PathLike, min_count: int = SUBMISSION_MIN, max_count: int = SUBMISSION_MAX,
                 size: int = 256) -> dict:
    """Check the submission rules: count in range, unique names, each entry a size x size RGB PNG."""
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise ZipValidationError(f"{zip_path} does not exist")
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        if len(set(names)) != len(names):
            raise ZipValidationError(f"{zip_path}: duplicate entry names")
        if not min_count <= len(names) <= max_count:
            raise ZipValidationError(f"{zip_path}: {len(names)} images, needs {min_count}..{max_count}")
        # every entry fully decoded (a truncated PNG passes a header check), in threads: zlib releases the GIL
        with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
            for i in range(0, len(names), 256):  # in chunks: memory stays flat for any count
                chunk = names[i:i + 256]
                for n, problem in zip(chunk, pool.map(_png_problem, [zf.read(n) for n in chunk], repeat(size))):
                    if problem:
                        raise ZipValidationError(f"{zip_path}: entry {n} {problem}")
    return {"path": str(zip_path), "count": len(names), "valid": True}


def _png_problem(data: bytes, size: int) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.format == "PNG" and im.mode == "RGB" and im.size == (size, size):
                return None
            return f"is {im.format} {im.mode} {im.size}, needs PNG RGB ({size}, {size})"
    except Exception as e:  # noqa: BLE001
        return f"does not decode: {e}"


def generate_zip(checkpoint: str | os.PathLike, photo_dir: str | os.PathLike, zip_path: str | os.PathLike,
                 weights: str = "ema", min_count: int = SUBMISSION_MIN, max_count: int = SUBMISSION_MAX,
                 top_up: bool = True, strict: bool = False, gen_size: int = 256, batch_size: int = 0,
                 device: str = "auto", num_workers: int = 2, progress: bool = True,
                 border: int = PAINT_BORDER, keep_colour: int = KEEP_COLOUR_GRID) -> dict:
    """Checkpoint + photo folder -> a validated images.zip. Returns counts, the weights used and timings."""
    import time

    t0 = time.time()
    dev = resolve_device(device)
    G, info = load_generator(checkpoint, weights, dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one batch shape throughout: pick the fastest convs once
    files = list_images(photo_dir, "photo folder (photo_dir)")
    candidates, target = plan_jobs(files, min_count, max_count, top_up, strict)
    if target < min_count:
        print(f"warning: only {target} images (< {min_count}) with top_up=False: not a valid submission",
              file=sys.stderr)
    amp = resolve_amp("auto", dev)  # bf16 where the GPU or CPU has it natively, fp16 on a T4 or P100, else fp32
    translated = translate_files(G, candidates, gen_size, 256, batch_size, dev, amp, num_workers, progress,
                                 limit=target, border=border, keep_colour=keep_colour)
    stream = ((entry_name(candidates[i]), img) for i, img in translated)
    written = write_zip(stream, zip_path)
    report = validate_zip(zip_path, min(min_count, target), max_count)
    return {**written, **report, "photos": len(files), "target": target, "generator": info,
            "seconds": round(time.time() - t0, 2)}


def translate_folder(checkpoint: str | os.PathLike, photo_dir: str | os.PathLike, out_dir: str | os.PathLike,
                     weights: str = "ema", gen_size: int = 256, out_size: int = 256, batch_size: int = 0,
                     device: str = "auto", num_workers: int = 2, progress: bool = True,
                     border: int = PAINT_BORDER, keep_colour: int = KEEP_COLOUR_GRID) -> dict:
    """Every photo of a folder through the generator, as <out_dir>/<photo name>.png (out_size square),
    each written atomically: a stopped run leaves finished PNGs and no partial one."""
    import time

    t0 = time.time()
    dev = resolve_device(device)
    G, info = load_generator(checkpoint, weights, dev)
    files = list_images(photo_dir, "photo folder")
    stems = [p.stem for p in files]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise DataError(f"photo folder {photo_dir}: {clash[:3]} each name two files (.jpg and .png?); their "
                         f"outputs would overwrite each other as <name>.png")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(p, "") for p in files]
    written = 0
    for i, img in translate_files(G, jobs, gen_size, out_size, batch_size, dev, resolve_amp("auto", dev),
                                  num_workers, progress, border=border, keep_colour=keep_colour):
        atomic_write(out / f"{files[i].stem}.png", lambda tmp: Path(tmp).write_bytes(png_bytes(img)))
        written += 1
    return {"out_dir": str(out), "count": written, "photos": len(files), "skipped": len(files) - written,
            "generator": info, "seconds": round(time.time() - t0, 2)}


def _zip_pairs(zip_path, photo_dir, names, size):
    """(source, output) uint8 pairs for zip entries, the source rebuilt with the entry's variant."""
    photos = {p.stem: p for p in list_images(photo_dir)}
    pairs = []
    with zipfile.ZipFile(zip_path) as zf:
        for n in names:
            stem = Path(n).stem
            variant = next((v for v in VARIANTS[1:] if stem.endswith(v)), "")
            src = photos.get(stem[: len(stem) - len(variant)] if variant else stem)
            if src is None:
                continue
            with Image.open(io.BytesIO(zf.read(n))) as im:
                out = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))
            pairs.append((_view(load_rgb(src), variant, size).permute(1, 2, 0).numpy(), out))
    return pairs


def preview_pairs(zip_path, photo_dir, n: int = 6, seed: int = 0, size: int = 128) -> Image.Image:
    """A grid of random (source photo | generated painting) rows from a finished images.zip."""
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(zf.namelist())
    picks = np.random.default_rng(seed).choice(len(names), min(n, len(names)), replace=False)
    pairs = _zip_pairs(zip_path, photo_dir, [names[i] for i in sorted(picks)], size)
    return Image.fromarray(np.concatenate([np.concatenate(p, axis=1) for p in pairs], axis=0))


def diversity(zip_path, photo_dir, n: int = 64, seed: int = 0) -> dict:
    """Mean pairwise distance between outputs vs between their source photos (32x32, [0, 1] pixels).
    A ratio far below 1 means the generator collapsed toward one image."""
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(zf.namelist())
    picks = np.random.default_rng(seed).choice(len(names), min(n, len(names)), replace=False)
    pairs = _zip_pairs(zip_path, photo_dir, [names[i] for i in sorted(picks)], 32)
    if len(pairs) < 2:
        raise DataError(f"diversity needs 2+ zip entries that match photos in {photo_dir}")

    def spread(arrs):
        x = np.stack(arrs).reshape(len(arrs), -1).astype(np.float64) / 255
        d = np.sqrt(((x[:, None] - x[None]) ** 2).mean(-1))
        return float(d[np.triu_indices(len(x), 1)].mean())

    src, out = spread([p[0] for p in pairs]), spread([p[1] for p in pairs])
    return {"output_spread": round(out, 4), "source_spread": round(src, 4), "ratio": round(out / src, 3),
            "collapsed": out / src < 0.25, "pairs": len(pairs)}


# ---------------------------------------------------------------- the command line: python -m cutlib.generate

def parser(prog: str = "python -m cutlib.generate") -> argparse.ArgumentParser:
    ap = JobParser(prog=prog, description="Translate photos with a trained generator (EMA weights by default): into "
                 "a validated images.zip for Kaggle, or with --out into a folder of PNGs named after the photos.")
    ap.add_argument("--run-dir", default="", help="run folder written by training (holds ckpt/)")
    ap.add_argument("--checkpoint", default="auto",
                    help="'auto' (best.pt if present, else latest.pt), 'best', 'latest', or a .pt path (default: auto)")
    ap.add_argument("--data", default="demo", help="folder laid out like Kaggle's (photo_jpg/), or 'demo'")
    ap.add_argument("--photos", default="", help="photo folder to translate (default: <data>/photo_jpg)")
    ap.add_argument("--zip", default="", help="output zip (default: <run-dir>/images.zip)")
    ap.add_argument("--out", default="", help="write PNGs into this folder instead of a zip, keeping photo names")
    ap.add_argument("--weights", default="ema", choices=["ema", "raw"], help="EMA generator (default) or raw")
    ap.add_argument("--min-count", type=int, help=f"fewest zip entries; top-ups fill in (default {SUBMISSION_MIN}; "
                    f"{DEMO_WINDOW[0]} with --data demo)")
    ap.add_argument("--max-count", type=int, help=f"most zip entries; extra photos left out (default {SUBMISSION_MAX}; "
                    f"{DEMO_WINDOW[1]} with --data demo)")
    ap.add_argument("--no-top-up", action="store_true", help="no flipped/cropped views when photos are too few")
    ap.add_argument("--strict", action="store_true", help="error instead of adjusting when the count is out of range")
    ap.add_argument("--gen-size", type=int, help=f"translate at this size (outputs are 256x256; default 256, "
                    f"{DEMO_GEN_SIZE} with --data demo)")
    ap.add_argument("--border", type=int, default=PAINT_BORDER,
                    help=f"translate each photo with this many reflected pixels above and to the left, then crop "
                    f"them off: keeps the corner mark long-trained generators paint off the picture (default "
                    f"{PAINT_BORDER}; 0: off)")
    ap.add_argument("--keep-colour", type=int, default=KEEP_COLOUR_GRID, metavar="CELLS",
                    help=f"give each painting its photo's colour layout over CELLS x CELLS cells (G's strokes and "
                    f"lightness, the photo's colours: a sunset stays orange; default {KEEP_COLOUR_GRID}; 0: G's own "
                    f"colours)")
    ap.add_argument("--batch", type=int, default=0, help="images per generator batch (0: 1 on a CPU, 8 on a GPU)")
    ap.add_argument("--workers", type=int, default=2, help="JPEG decoding processes")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return ap


def main(argv=None, prog: str = "python -m cutlib.generate") -> int:
    ap = parser(prog)
    a = ap.parse_args(argv)
    demo = a.data == "demo" and not a.photos
    defaults = {"min_count": DEMO_WINDOW[0], "max_count": DEMO_WINDOW[1], "gen_size": DEMO_GEN_SIZE} if demo \
        else {"min_count": SUBMISSION_MIN, "max_count": SUBMISSION_MAX, "gen_size": 256}
    taken = {k: v for k, v in defaults.items() if getattr(a, k) is None}
    for k, v in taken.items():
        setattr(a, k, v)
    if demo and taken and not a.out:
        print(f"generate: --data demo: {a.min_count}..{a.max_count} images at --gen-size {a.gen_size}, the demo's "
              f"(Kaggle's window is {SUBMISSION_MIN}..{SUBMISSION_MAX}; --min-count/--max-count change it)",
              file=sys.stderr)
    require_positive(ap, a, "gen-size", "min-count", "max-count")
    for name in ("workers", "batch"):
        if getattr(a, name) < 0:
            ap.error(f"--{name} must be >= 0, not {getattr(a, name)}")
    if a.border < 0:
        ap.error(f"--border must be >= 0, not {a.border}")
    if a.keep_colour < 0:
        ap.error(f"--keep-colour must be >= 0, not {a.keep_colour}")
    if not a.run_dir and a.checkpoint in ("auto", "best", "latest"):
        ap.error(f"--checkpoint {a.checkpoint} needs --run-dir (or give a .pt path)")
    if not a.out and not a.zip and not a.run_dir:
        ap.error("say where to write: --zip FILE, --out DIR, or --run-dir (then <run-dir>/images.zip)")

    def job():
        photos = Path(a.photos) if a.photos else data_folders(a.data)[0]
        ckpt = resolve_checkpoint(a.checkpoint, a.run_dir or None)
        common = dict(weights=a.weights, gen_size=a.gen_size, batch_size=a.batch, device=a.device,
                      num_workers=a.workers, progress=sys.stderr.isatty(), border=a.border,
                      keep_colour=a.keep_colour)
        if a.out:
            return translate_folder(ckpt, photos, a.out, **common)
        zip_file = Path(a.zip) if a.zip else Path(a.run_dir) / "images.zip"
        try:
            return generate_zip(ckpt, photos, zip_file, min_count=a.min_count, max_count=a.max_count,
                                top_up=not a.no_top_up, strict=a.strict, **common)
        except ZipValidationError as e:  # the photos were read; what came out is not a submission
            raise JobFailed(f"the zip is not a valid submission: {e}") from e

    return run_job(job)


if __name__ == "__main__":
    sys.exit(main())
