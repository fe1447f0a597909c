"""Non-learned baselines for the quality benchmark: colour transfer in CIE Lab (Reinhard et al. 2001)."""
from __future__ import annotations

import numpy as np
import torch

from .colour import lab_to_srgb, srgb_to_lab


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB (..., 3) -> CIE Lab (D65), float64: cutlib.colour's conversion, channels last."""
    pixels = torch.from_numpy(rgb.reshape(-1, 3).T.astype(np.float64) / 255.0)[:, :, None]  # (3, N, 1)
    return srgb_to_lab(pixels)[:, :, 0].T.numpy().reshape(rgb.shape)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE Lab (D65), channels last -> uint8 sRGB, clipped to the gamut: cutlib.colour's conversion."""
    rgb = lab_to_srgb(torch.from_numpy(np.moveaxis(lab.astype(np.float64), -1, 0)))
    return np.clip(np.round(np.moveaxis(rgb.numpy(), 0, -1) * 255), 0, 255).astype(np.uint8)


def lab_stats(images) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel Lab mean and std pooled over all pixels of all images."""
    n, s, s2 = 0, np.zeros(3), np.zeros(3)
    for img in images:
        lab = rgb_to_lab(img).reshape(-1, 3)
        n += len(lab)
        s += lab.sum(0)
        s2 += (lab ** 2).sum(0)
    mean = s / n
    return mean, np.sqrt(np.maximum(s2 / n - mean ** 2, 0))


def color_transfer(img: np.ndarray, target_mean: np.ndarray, target_std: np.ndarray) -> np.ndarray:
    """Match one image's Lab mean and std to the target's, channel by channel."""
    lab = rgb_to_lab(img)
    mean, std = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0)
    return lab_to_rgb((lab - mean) / np.maximum(std, 1e-6) * target_std + target_mean)
