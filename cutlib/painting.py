"""How a trained generator paints a photo for output (samples, previews, evaluation, the zip): a border
that keeps the corner mark off the picture, and the phase mean that cancels a grid-locked lattice (a
diagnostic). Training's forward pass is cutlib.nets'."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .colour import KEEP_COLOUR_GRID, keep_photo_colour

# From ~3,000 training steps G paints the same saturated bars into the top-left ~10 px of every output,
# whatever the photo (bench/README.md, "The left-edge streak is a top-left corner mark"): its
# downsampling is asymmetric, so that corner is the one place it can tell apart. Translating the photo
# with a reflected border above and to the left, then cropping it away, moves the mark off the picture
# (16 px: none left at 3,000 or 6,000 steps; 8 px leaves a trace), for 13% more pixels at 256. Only
# there: every mirrored pixel also enters the whole-image statistics of G's instance norms.
PAINT_BORDER = 16

# The fine grid long runs paint (bench/README.md: lines of period 2 and 4 px, deepened by the projected
# D) is locked to G's own 4-px grid, the stride of its two 2x downsamplings: paint the photo moved by k
# pixels and the content moves back when cropped while the lattice stays k pixels out of phase. So the
# mean of paints over phases cancels it exactly: the diagonal (k, k) cancels lines along rows and
# columns, the 8 phases of even sum the diagonal lines too; only a period-2 checkerboard is left then.
# A diagnostic, not a default: the phases also place G's strokes differently, and their mean is a
# smoother picture Inception scores far worse (FID 116 -> 180 at 7,000 steps; one shifted paint: 118).
PAINT_PHASES = {1: ((0, 0),), 4: tuple((k, k) for k in range(4)),
                8: tuple((a, b) for a in range(4) for b in range(4) if (a + b) % 2 == 0),
                16: tuple((a, b) for a in range(4) for b in range(4))}


def paint(G: nn.Module, x: torch.Tensor, border: int = PAINT_BORDER, shifts: int = 1,
          keep_colour: int = KEEP_COLOUR_GRID) -> torch.Tensor:
    """G's translation of x for output (samples, evaluation, the zip): G applied to x with `border`
    reflected pixels above and to the left (a multiple of 4, less than the side), cropped off the result;
    with shifts 4, 8 or 16 the mean of that many paints at the phases of PAINT_PHASES (float32), each
    costing a forward of G. With keep_colour N > 0 the painting then takes the photo's colour layout over
    N x N cells (cutlib.colour.keep_photo_colour, float32): G's strokes and lightness in the photo's own
    colours; 0 gives G's colours."""
    if keep_colour < 0:
        raise ValueError(f"keep_colour={keep_colour!r}: cells per side of the photo's colour layout (0: off)")
    y = _painted(G, x, border, shifts)
    return keep_photo_colour(y, x, keep_colour) if keep_colour else y


def _painted(G: nn.Module, x: torch.Tensor, border: int, shifts: int) -> torch.Tensor:
    if shifts not in PAINT_PHASES:
        raise ValueError(f"shifts={shifts!r}: one of {sorted(PAINT_PHASES)} (1: a single paint)")
    h, w = x.shape[-2:]
    b = min(border, (min(h, w) - 1)) // 4 * 4
    if shifts == 1:
        if b <= 0:
            return G(x)
        return G(F.pad(x, (b, 0, b, 0), mode="reflect"))[..., b:, b:]
    if min(h, w) < 8:
        raise ValueError(f"shifts={shifts} needs images of at least 8 px, got {h}x{w}")
    b = min(b, (min(h, w) - 4) // 4 * 4)  # room for the phase's extra pixels in a reflection
    total = None
    for dy, dx in PAINT_PHASES[shifts]:
        top, left = b + dy, b + dx
        # padded to a multiple of 4 below and right, so every phase's output covers the picture
        y = G(F.pad(x, (left, -(w + left) % 4, top, -(h + top) % 4), mode="reflect"))
        y = y[..., top:top + h, left:left + w].float()
        total = y if total is None else total + y
    return total / len(PAINT_PHASES[shifts])
