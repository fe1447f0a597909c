"""How a trained generator paints a photo for output (samples, previews, evaluation, the zip): a border
that keeps the corner mark off the picture, and the photo's colour layout kept. Training's forward pass is
cutlib.nets'."""
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


def paint(G: nn.Module, x: torch.Tensor, border: int = PAINT_BORDER, keep_colour: int = KEEP_COLOUR_GRID) -> torch.Tensor:
    """G's translation of x for output (samples, evaluation, the zip): G applied to x with `border`
    reflected pixels above and to the left (a multiple of 4, less than the side), cropped off the result.
    With keep_colour N > 0 the painting then takes the photo's colour layout over N x N cells
    (cutlib.colour.keep_photo_colour, float32): G's strokes and lightness in the photo's own colours; 0
    gives G's colours."""
    if keep_colour < 0:
        raise ValueError(f"keep_colour={keep_colour!r}: cells per side of the photo's colour layout (0: off)")
    b = min(border, (min(x.shape[-2:]) - 1)) // 4 * 4
    y = G(F.pad(x, (b, 0, b, 0), mode="reflect"))[..., b:, b:] if b > 0 else G(x)
    return keep_photo_colour(y, x, keep_colour) if keep_colour else y
