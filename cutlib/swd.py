"""Sliced Wasserstein distance between the Laplacian-pyramid patches of two image sets (ProGAN, Karras et
al., ICLR 2018): a texture measure that no ImageNet network computes.

Per image, a Laplacian pyramid (5-tap binomial filter) from 256 px down to 16 px; at every level 128
random 7x7 patches, 147 values each. Each set's descriptors are normalised per colour channel (mean/std
over all its patches at that level), so a global change of palette barely moves the distance while
brushwork moves the fine levels. Per level, the distance is the mean over 4 repeats of 128 random unit
directions of the mean absolute difference between the two sets' sorted projections; reported x1e3 per
level and as the mean over levels.

Sets may differ in size: the larger one is compared through the quantiles of its sorted projections at
the smaller one's positions."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 256  # images are resized to this (a submission's size) before the pyramid
MIN_LEVEL = 16
PATCHES_PER_IMAGE = 128
PATCH = 7
DIRECTIONS = 128
REPEATS = 4
MAX_IMAGES = 1000  # per set in evaluations: 128k patches a level is plenty, and 7,000 would take GBs
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def level_sizes(size: int = SIZE) -> list[int]:
    sizes = [size]
    while sizes[-1] // 2 >= MIN_LEVEL:
        sizes.append(sizes[-1] // 2)
    return sizes


def _blur(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = (_BINOMIAL[:, None] * _BINOMIAL[None, :]).to(x)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=c)


def laplacian_pyramid(x: torch.Tensor, size: int = SIZE) -> list[torch.Tensor]:
    """(N, 3, size, size) float images -> band-pass levels from `size` down, the last one the 16 px
    low-pass image itself."""
    levels = []
    for _ in level_sizes(size)[:-1]:
        down = _blur(x)[:, :, ::2, ::2]
        up = torch.zeros_like(x)
        up[:, :, ::2, ::2] = down * 4  # zero-insertion upsampling, then the same filter
        levels.append(x - _blur(up))
        x = down
    levels.append(x)
    return levels


def descriptors(images: Iterable[np.ndarray], seed: int = 0, batch: int = 32) -> list[np.ndarray]:
    """Per pyramid level, an (images * 128, 3, 7, 7) float32 array of random patches of uint8 HxWx3
    images (resized to 256 px where they differ). Patch positions are drawn from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    per_level: list[list[torch.Tensor]] = [[] for _ in level_sizes()]
    buf: list[np.ndarray] = []

    def flush():
        x = torch.from_numpy(np.stack(buf)).permute(0, 3, 1, 2).float()
        if x.shape[-2:] != (SIZE, SIZE):
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
        for i, level in enumerate(laplacian_pyramid(x)):
            per_level[i].append(_random_patches(level, gen))
        buf.clear()

    for img in images:
        buf.append(np.asarray(img))
        if len(buf) == batch:
            flush()
    if buf:
        flush()
    if not per_level[0]:
        raise ValueError("SWD needs at least one image per set")
    return [torch.cat(d).numpy() for d in per_level]


def _random_patches(level: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n, c, h, w = level.shape
    ys = torch.randint(0, h - PATCH + 1, (n, PATCHES_PER_IMAGE), generator=gen)
    xs = torch.randint(0, w - PATCH + 1, (n, PATCHES_PER_IMAGE), generator=gen)
    patches = level.unfold(2, PATCH, 1).unfold(3, PATCH, 1)  # (n, c, h-6, w-6, 7, 7), a view
    idx = torch.arange(n)[:, None]
    return patches[idx, :, ys, xs].reshape(-1, c, PATCH, PATCH)  # (n * 128, c, 7, 7)


def _normalise(desc: np.ndarray) -> np.ndarray:
    desc = desc.astype(np.float64)
    mean = desc.mean(axis=(0, 2, 3), keepdims=True)
    std = desc.std(axis=(0, 2, 3), keepdims=True)
    return ((desc - mean) / np.maximum(std, 1e-8)).reshape(len(desc), -1)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """SWD x1e3 between two sets of patch descriptors (each (n, 3, 7, 7)), each normalised per channel."""
    a, b = _normalise(a), _normalise(b)
    if len(a) > len(b):
        a, b = b, a
    rng = np.random.default_rng(seed)
    # where the larger set's sorted projections are read: at the smaller set's quantile positions
    q = (np.arange(len(a)) + 0.5) / len(a) * len(b) - 0.5
    lo = np.clip(np.floor(q).astype(int), 0, len(b) - 1)
    hi = np.clip(lo + 1, 0, len(b) - 1)
    frac = np.clip(q - lo, 0.0, 1.0)[:, None]
    dists = []
    for _ in range(REPEATS):
        dirs = rng.standard_normal((a.shape[1], DIRECTIONS))
        dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
        pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
        pb = pb[lo] * (1 - frac) + pb[hi] * frac if len(pb) != len(pa) else pb
        dists.append(np.abs(pa - pb).mean())
    return float(np.mean(dists) * 1e3)


def swd(desc_a: list[np.ndarray], desc_b: list[np.ndarray], seed: int = 0) -> dict:
    """{'swd': mean over levels, 'swd_levels': {size in px: value}} between two sets' descriptors."""
    levels = {size: round(sliced_wasserstein(a, b, seed + i), 2)
              for i, (size, a, b) in enumerate(zip(level_sizes(), desc_a, desc_b))}
    return {"swd": round(float(np.mean(list(levels.values()))), 2), "swd_levels": levels}


def swd_of_images(images_a: Iterable[np.ndarray], images_b: Iterable[np.ndarray], seed: int = 0) -> dict:
    return swd(descriptors(images_a, seed), descriptors(images_b, seed + 1), seed)
