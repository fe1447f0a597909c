"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to every image D sees, so a
discriminator trained on 300 paintings cannot simply memorise them. Each sample draws its own parameters."""
from __future__ import annotations

import torch


def diff_augment(x: torch.Tensor, policy: str = "color,translation,cutout") -> torch.Tensor:
    for op in [p.strip() for p in policy.split(",") if p.strip()]:
        x = _OPS[op](x)
    return x


def _rand(x: torch.Tensor) -> torch.Tensor:
    # drawn in fp32, then cast: a bf16 draw is another stream on some torch versions (2.4.1 on CPU), so
    # the same seed would augment a bf16 fake (under autocast) unlike an fp32 one
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device).to(x.dtype)


def color(x: torch.Tensor) -> torch.Tensor:
    x = x + (_rand(x) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x) + 0.5) + mean  # contrast


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio * size pixels, filling with zeros."""
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (b, 1, 1), device=x.device)
    yy = (torch.arange(h, device=x.device)[None, :, None] + dy + 1).clamp(0, h + 1)  # +1: the zero border
    xx = (torch.arange(w, device=x.device)[None, None, :] + dx + 1).clamp(0, w + 1)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    bb = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[bb, yy, xx].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ratio * size per image, at a random centre."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    yy = torch.arange(h, device=x.device)[None, :, None]
    xx = torch.arange(w, device=x.device)[None, None, :]
    inside = (yy >= cy - ch // 2) & (yy < cy - ch // 2 + ch) & (xx >= cx - cw // 2) & (xx < cx - cw // 2 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_OPS = {"color": color, "translation": translation, "cutout": cutout}
