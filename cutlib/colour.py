"""Colour without an ImageNet network: CIELAB from sRGB (D65) in torch, so the same conversion serves the
training loss (differentiable) and the colour report (docs/recipes.md's colour test: a sunset keeps its
orange).

The report's figures, per image at a common size, then over a set:
- chroma: mean CIELAB C* = sqrt(a*^2 + b*^2) over pixels, averaged over images;
- colourfulness: Hasler and Suesstrunk (2003) M on 0-255 sRGB, averaged over images;
- palette spread: how much the pictures' dominant colours differ, sqrt(sd_a^2 + sd_b^2) where sd_a (sd_b)
  is the standard deviation over images of each picture's mean a* (b*); one global colour cast gives ~0;
- hue kept (translations only): the correlation over images of each source's mean a* (b*) with its
  output's; 1 when every output keeps its photo's cast, ~0 when all go to one cast.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image

REPORT_SIZE = 128  # every image is measured at this size, so a set's figures do not depend on its resolution

# sRGB's linear RGB -> XYZ (IEC 61966-2-1) and the D65 white it maps (1, 1, 1) to.
RGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375),
               (0.2126729, 0.7151522, 0.0721750),
               (0.0193339, 0.1191920, 0.9503041))
D65_WHITE = (0.95047, 1.0, 1.08883)
# and back (lab_to_srgb), inverted once here rather than on every call
XYZ_TO_RGB = tuple(map(tuple, torch.tensor(RGB_TO_XYZ, dtype=torch.float64).inverse().tolist()))
_DELTA = 6 / 29
# Cells per side of the colour layout keep_photo_colour takes from the photo (64 px screen, bench/README.md:
# 1 and 4 scored alike, 4 a little better on FID / KID / SWD and keeps a sky's colour apart from its shore's).
KEEP_COLOUR_GRID = 4


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    # both branches are evaluated; the clamp keeps the unused one's gradient finite
    return torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


def _lab_f(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _DELTA ** 3, t.clamp_min(_DELTA ** 3) ** (1 / 3), t / (3 * _DELTA ** 2) + 4 / 29)


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) sRGB in [0, 1] -> CIELAB (L* in [0, 100], a*, b* roughly in [-128, 127]), D65; fp32,
    or fp64 for fp64 input."""
    r, g, b = srgb_to_linear(rgb.to(torch.promote_types(rgb.dtype, torch.float32)).clamp(0, 1)).unbind(-3)
    # sums of tensors times Python floats: no constant tensor to copy to the device (a host-to-device copy
    # cannot run inside a captured CUDA graph, where the training step may run)
    fx, fy, fz = (_lab_f((m0 * r + m1 * g + m2 * b) / white) for (m0, m1, m2), white in zip(RGB_TO_XYZ, D65_WHITE))
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def _lab_f_inverse(f: torch.Tensor) -> torch.Tensor:
    return torch.where(f > _DELTA, f.clamp_min(_DELTA) ** 3, 3 * _DELTA ** 2 * (f - 4 / 29))


def lab_to_srgb(lab: torch.Tensor) -> torch.Tensor:
    """CIELAB (D65), (..., 3, H, W) -> sRGB in [0, 1], colours outside the sRGB gamut clipped to it."""
    L, a, b = lab.unbind(-3)
    fy = (L + 16) / 116
    x, y, z = (_lab_f_inverse(f) * white for f, white in zip((fy + a / 500, fy, fy - b / 200), D65_WHITE))
    lin = torch.stack([m0 * x + m1 * y + m2 * z for m0, m1, m2 in XYZ_TO_RGB], dim=-3).clamp(0, 1)
    return torch.where(lin > 0.0031308, 1.055 * lin.clamp_min(0.0031308) ** (1 / 2.4) - 0.055, 12.92 * lin)


def colourfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler and Suesstrunk's M per image: (B, 3, H, W) sRGB in [0, 1] -> (B,), on the 0-255 scale."""
    r, g, b = (rgb.float() * 255).unbind(1)
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    spread = (rg.var(1, unbiased=False) + yb.var(1, unbiased=False)).sqrt()
    cast = (rg.mean(1).square() + yb.mean(1).square()).sqrt()
    return spread + 0.3 * cast


def image_stats(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB in [0, 1] -> (B, 5): mean L*, mean a*, mean b*, mean C*, colourfulness M."""
    lab = srgb_to_lab(rgb)
    chroma = lab[:, 1:].square().sum(1).sqrt()
    return torch.cat([lab.mean((-2, -1)), chroma.mean((-2, -1))[:, None], colourfulness(rgb)[:, None]], 1)


STAT_NAMES = ("L", "a", "b", "chroma", "colourfulness")


def _correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    den = (x.square().sum() * y.square().sum()).sqrt()
    return float((x * y).sum() / den) if den > 0 else float("nan")


def palette_report(stats: torch.Tensor, source_stats: torch.Tensor | None = None) -> dict:
    """A set's colour figures from its per-image `image_stats` rows; with the sources' rows (same order),
    also how much of each source's colour cast its output kept."""
    if stats.ndim != 2 or stats.shape[1] != len(STAT_NAMES) or len(stats) < 2:
        raise ValueError(f"palette_report needs image_stats rows of at least 2 images, got {tuple(stats.shape)}")
    s = stats.double()
    out = {name: round(float(s[:, i].mean()), 3) for i, name in enumerate(STAT_NAMES)}
    out["palette_spread"] = round(float(s[:, 1:3].std(0).square().sum().sqrt()), 3)
    out["images"] = len(stats)
    if source_stats is not None:
        if source_stats.shape != stats.shape:
            raise ValueError(f"hue kept pairs each output with its source: {tuple(stats.shape)} outputs, "
                             f"{tuple(source_stats.shape)} sources")
        out["hue_kept_a"] = round(_correlation(source_stats[:, 1], stats[:, 1]), 4)
        out["hue_kept_b"] = round(_correlation(source_stats[:, 2], stats[:, 2]), 4)
    return out


def _smooth(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Means over a grid x grid layout of cells, spread back over the image bilinearly (no cell edges)."""
    cells = torch.nn.functional.adaptive_avg_pool2d(x, grid)
    return torch.nn.functional.interpolate(cells, size=x.shape[-2:], mode="bilinear", align_corners=False)


def keep_photo_colour(painting: torch.Tensor, photo: torch.Tensor, grid: int = KEEP_COLOUR_GRID) -> torch.Tensor:
    """The painting with its coarse colour replaced by its photo's: (B, 3, H, W) images in [-1, 1], same
    size. In CIELAB, the painting's a* and b* averaged over a grid x grid layout of cells are swapped for
    the photo's; its lightness and the colour of its strokes within a cell stay G's. A sunset keeps its
    orange sky and dark shore under Monet's strokes (Gatys et al. 2016 keep all of the photo's colour in
    style transfer; this keeps only the layout a viewer sees from afar)."""
    if grid < 1:
        raise ValueError(f"keep_photo_colour: grid={grid!r} must be >= 1")
    if painting.shape != photo.shape:
        raise ValueError(f"keep_photo_colour: painting {tuple(painting.shape)} and photo {tuple(photo.shape)} differ")
    with torch.autocast(painting.device.type, enabled=False):  # the Lab conversion's powers: fp32
        lab, source = srgb_to_lab((painting.float() + 1) / 2), srgb_to_lab((photo.float() + 1) / 2)
        ab = lab[:, 1:] + _smooth(source[:, 1:], grid) - _smooth(lab[:, 1:], grid)
        return lab_to_srgb(torch.cat([lab[:, :1], ab], 1)) * 2 - 1


def stats_of(images: Iterable[np.ndarray], size: int = REPORT_SIZE) -> torch.Tensor:
    """`image_stats` rows of uint8 HxWx3 images, each resized to size x size first."""
    rows = []
    for img in images:
        im = Image.fromarray(img).convert("RGB").resize((size, size), Image.BICUBIC)
        rows.append(image_stats(torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 255))
    if not rows:
        raise ValueError("no images to measure")
    return torch.cat(rows)


# Hues (degrees of the a*b* plane) a colour panel looks for, most wanted first: a sunset's red sky (the
# held-out red sunset's mean sits at 13 degrees), green foliage, blue water or sky, orange (a lit wall,
# autumn leaves, a golden sky: ~60), yellow flowers or fields.
PANEL_HUES = {"sunset": 15.0, "green": 135.0, "blue": 255.0, "orange": 60.0, "yellow": 90.0}


def colour_panel(paths: list, n: int = len(PANEL_HUES), scan: int = 300) -> list:
    """A fixed handful of photos of strong, different colours, for grids that must answer "does a sunset
    keep its orange": for each of PANEL_HUES in turn, the not yet chosen photo (among the first `scan` by
    name) whose mean colour lies furthest along that hue, by its mean a*, b*. Deterministic: the same folder
    gives the same panel in every run and curve."""
    from .data import load_rgb

    paths = sorted(paths, key=lambda p: Path(p).name)[:scan]
    if len(paths) <= n:
        return list(paths)
    ab = stats_of([np.asarray(load_rgb(p)) for p in paths], size=64)[:, 1:3].double()
    chosen: list[int] = []
    for hue in list(PANEL_HUES.values())[:n]:
        direction = torch.tensor([math.cos(math.radians(hue)), math.sin(math.radians(hue))], dtype=torch.float64)
        along = ab @ direction - 0.5 * (ab @ torch.tensor([-direction[1], direction[0]])).abs()
        along[chosen] = -math.inf
        chosen.append(int(along.argmax()))
    return [paths[i] for i in chosen]
