"""Scoring for bench/curve.py: one set's measures (Inception features, SWD descriptors, colour rows), cached by key, scored against the
paintings', and the reference sets every score sits beside: the paintings, the untouched photos and
their Lab colour transfer to the paintings."""
from __future__ import annotations

import hashlib
import lzma
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cutlib.baselines import color_transfer, lab_stats  # noqa: E402
from cutlib.checkpoint import atomic_write  # noqa: E402
from cutlib.colour import stats_of  # noqa: E402
from cutlib.data import load_rgb  # noqa: E402
from cutlib.metrics import default_cache_dir, scores  # noqa: E402
from cutlib.swd import descriptors, swd  # noqa: E402


def fid_weights_file(path: str) -> str | None:
    """A usable TorchScript weights file: the fp16 .pt.xz copy (reference/fid-weights-fp16) is unpacked
    and converted to fp32 once, next to the feature cache."""
    if not path or not path.endswith(".xz"):
        return path or None
    out = default_cache_dir() / (Path(path).name[:-3].replace(".fp16", "") + ".fp32-from-fp16.pt")
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        with lzma.open(path) as f, tempfile.NamedTemporaryFile(suffix=".pt") as tmp:
            tmp.write(f.read())
            tmp.flush()
            torch.jit.save(torch.jit.load(tmp.name, map_location="cpu").float(), str(out))
    return str(out)


def measured(images, extractor) -> dict[str, np.ndarray]:
    """Inception features and SWD patch descriptors of one image set, each image decoded once."""
    images = list(images)
    return {"feats": extractor(images), **{f"swd{i}": d for i, d in enumerate(descriptors(images))},
            "colour": stats_of(images).numpy()}


def cached_measures(key: str, make, cache: Path) -> dict[str, np.ndarray]:
    """make()'s measures, kept under `cache` by key (written whole or not at all)."""
    path = cache / f"bench-{hashlib.sha1(('colour:' + key).encode()).hexdigest()}.npz"  # older files: no colour
    if path.is_file():
        with np.load(path) as z:
            return dict(z)
    m = make()
    path.parent.mkdir(parents=True, exist_ok=True)

    def save(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
            np.savez(f, **m)

    atomic_write(path, save)
    return m


def swd_descs(m: dict) -> list[np.ndarray]:
    return [m[f"swd{i}"] for i in range(sum(k.startswith("swd") for k in m))]


def summarize(s: dict) -> dict:
    return {"fid": round(s["fid"], 2), "kid_x1000": round(max(s["kid"], 0.0) * 1000, 2),
            "kid_std_x1000": round(s["kid_std"] * 1000, 2), "mifid": round(s["mifid"], 2),
            "mem_distance": round(s["mem_distance"], 4), "n": s["n_generated"]}


def scored(m: dict, real: dict) -> dict:
    return {**summarize(scores(m["feats"], real["feats"])), **swd(swd_descs(m), swd_descs(real))}


def weights_key(extractor) -> str:
    return f"{Path(extractor.weights).name}:{extractor.weights.stat().st_size}:"


def reference_measures(photos: list[Path], monets: list[Path], extractor, cache: Path) -> dict[str, dict]:
    """Measures of the paintings (`real`), the photos at 256 px (`identity`) and their Lab colour
    transfer to the paintings' statistics (`color_transfer`), each cached by the files and the weights."""
    wkey = weights_key(extractor)
    real = cached_measures(f"paintings:{wkey}" + ",".join(str(p.resolve()) for p in monets),
                           lambda: measured((np.asarray(load_rgb(p)) for p in monets), extractor), cache)
    key = wkey + ",".join(str(p.resolve()) for p in photos)
    mean, std = lab_stats(np.asarray(load_rgb(p)) for p in monets)
    full = lambda p: np.asarray(load_rgb(p).resize((256, 256), Image.BICUBIC))  # noqa: E731
    return {"real": real,
            "identity": cached_measures("identity:" + key, lambda: measured((full(p) for p in photos), extractor),
                                        cache),
            "color_transfer": cached_measures("color_transfer:" + key, lambda: measured(
                (color_transfer(full(p), mean, std) for p in photos), extractor), cache)}
