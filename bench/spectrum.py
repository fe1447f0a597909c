"""Periodic texture, found in the frequency domain: a fine regular grid in images is a narrow peak in their
mean power spectrum, invisible to FID tables and easy to miss in a downscaled grid.

    python bench/spectrum.py grad --photos DIR [--size 128] [--n 32]       # what each D teaches G
    python bench/spectrum.py outputs RUN_DIR --photos DIR [--steps 1000,2000] [--n 64]   # what G paints
    python bench/spectrum.py taps --photos DIR [--n 8] [--push-size 1024]   # which backbone strides must blur

`grad`: for each discriminator of a freshly built `patch+projected` model (its trained-from-scratch
parts at init, the projected one's backbone pretrained), the mean power spectrum of the gradient of
G's hinge loss (minus its mean logit) with respect to real photo crops: the signal G follows. A stride-2 conv
without a low-pass filter in front passes that gradient through its transposed conv, which puts energy
on the stride's lattice (periods 2, 4, 8 px); G learns to paint it.
`outputs`: the same measure on the EMA generator's outputs (256 px) for held-out photos, beside the
photos themselves.
`taps`: which of the projected D's frozen EfficientNet stride-2 convs must blur for each of its four
tapped maps (strides 4, 8, 16, 32) to send G a gradient without a lattice. For the plain backbone and
with its first k stride-2 convs blurred (k = 1..5, the stem first; k = 5 is `backbone_antialias`), per
tap: the spread of the "more of this feature everywhere" push (d mean(map) / d input on a flat grey
image of --push-size px, std over mean in the central eighth, far from the borders: a lattice reads
~1, a flat answer 0), and the map's cosine to the ImageNet (plain) map on --n photos at --size: what
blurring costs in features.

The measure, `peak_ratio`: the mean power spectrum (per-image mean removed, Hann window, colour channels
averaged) divided by its radial median (the median power of all frequencies at the same distance from
zero), so a smooth 1/f falloff reads ~1 everywhere and a lattice peak stands out; reported at the period-2,
period-4 and period-8 lattice frequencies and as the maximum over the whole plane above a quarter of Nyquist.
Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cutlib.config import TrainConfig  # noqa: E402
from cutlib.data import eval_image, list_images  # noqa: E402
from cutlib.generate import load_generator  # noqa: E402
from cutlib.model import build_networks  # noqa: E402
from cutlib.projection import _strided, frozen_lite0  # noqa: E402

# lattice frequencies in cycles per pixel (fy, fx): where grids of period 2, 4 and 8 px put their energy
LATTICE = {"p2": [(0.5, 0.0), (0.0, 0.5), (0.5, 0.5)], "p4": [(0.25, 0.0), (0.0, 0.25), (0.25, 0.25)],
           "p8": [(0.125, 0.0), (0.0, 0.125), (0.125, 0.125)]}


def mean_power(images: torch.Tensor) -> np.ndarray:
    """Mean power spectrum of (N, C, H, W) images, zero frequency at [H//2, W//2]."""
    x = images.double()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    h, w = x.shape[-2:]
    window = torch.hann_window(h, periodic=False, dtype=x.dtype)[:, None] * torch.hann_window(w, periodic=False, dtype=x.dtype)[None]
    power = torch.fft.fft2(x * window).abs().square().mean(dim=(0, 1))
    return torch.fft.fftshift(power).numpy()


def peak_ratios(power: np.ndarray) -> dict:
    """Power over the radial median at the lattice frequencies, and the largest such ratio found."""
    h, w = power.shape
    fy = np.fft.fftshift(np.fft.fftfreq(h))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(w))[None, :]
    radius = np.hypot(fy, fx)
    ring = np.round(radius * max(h, w)).astype(int)
    median = np.zeros(ring.max() + 1)
    for r in range(ring.max() + 1):
        median[r] = np.median(power[ring == r])
    ratio = power / np.maximum(median[ring], 1e-30)

    def at(f):  # fftfreq puts +0.5 at -0.5: the Nyquist bin is index 0 after the shift
        iy = int(round((f[0] if f[0] < 0.5 else -0.5) * h)) + h // 2
        ix = int(round((f[1] if f[1] < 0.5 else -0.5) * w)) + w // 2
        return float(ratio[iy, ix])

    out = {name: round(max(at(f) for f in freqs), 2) for name, freqs in LATTICE.items()}
    high = radius > 0.125
    k = np.unravel_index(np.argmax(np.where(high, ratio, 0)), ratio.shape)
    out["max"] = round(float(ratio[k]), 2)
    out["max_at"] = [round(float(fy[k[0], 0]), 3), round(float(fx[0, k[1]]), 3)]
    return out


def photo_batch(photos: Path, n: int, size: int, offset: int = 0) -> torch.Tensor:
    files = list_images(photos)[offset:offset + n]
    return torch.stack([eval_image(f, size) for f in files])


def d_gradients(cfg: TrainConfig, photos: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per discriminator: d(-mean logit)/d(input), what the hinge G loss sends back, for each photo; D at init, one seed."""
    torch.manual_seed(seed)
    D = build_networks(cfg)[1]
    grads = {name: [] for name in D.names}
    for x in photos.split(1):
        for i, name in enumerate(D.names):
            x = x.detach().requires_grad_(True)
            logits = D(x)[i]
            (-logits.mean()).backward()  # the hinge G loss: what G follows
            grads[name].append(x.grad.detach())
    return {name: torch.cat(g) for name, g in grads.items()}


def blur_first(k: int) -> torch.nn.Module:
    """The pretrained backbone with only its first k stride-2 convs antialiased, as `backbone_antialias`
    does to all of them (stride 1, then a [1,2,1] blur subsampling at the 'SAME' sample centres)."""
    net = frozen_lite0()
    strided = [(net._conv_stem, net, "stem_pool")] + [
        (b._depthwise_conv, b, "pool") for b in net._blocks if b._depthwise_conv.stride == (2, 2)]
    for conv, owner, pool in strided[:k]:
        stride, blur = _strided(2, True, conv.out_channels)  # the library's own blur, not a copy of it
        conv.stride = (stride, stride)
        setattr(owner, pool, blur)
    return net


def push_spread(net: torch.nn.Module, stages: int, size: int) -> float:
    x = torch.full((1, 3, size, size), 0.2, requires_grad=True)
    net(x, stages=stages)[-1].mean().backward()
    lo, hi = size * 7 // 16, size * 9 // 16
    centre = x.grad[0].mean(0)[lo:hi, lo:hi]
    return float(centre.std() / centre.abs().mean())


def tap_table(photos: torch.Tensor, push_size: int) -> dict:
    cos = torch.nn.functional.cosine_similarity
    with torch.no_grad():
        imagenet = [blur_first(0)(x[None]) for x in photos]
    out = {}
    for k in range(6):
        net = blur_first(k)
        with torch.no_grad():
            sims = [[float(cos(a.flatten(), b.flatten(), dim=0)) for a, b in zip(ref, net(x[None]))]
                    for ref, x in zip(imagenet, photos)]
        out[f"blur_first_{k}"] = {
            "push_spread": [round(push_spread(net, t, push_size), 4) for t in range(1, 5)],
            "imagenet_cos": [round(float(np.mean([s[t] for s in sims])), 3) for t in range(4)]}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("grad", "outputs", "taps"))
    p.add_argument("runs", nargs="*", type=Path)
    p.add_argument("--photos", type=Path, required=True)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--size", type=int, default=128, help="grad, taps: crop size D sees (the training unit)")
    p.add_argument("--push-size", type=int, default=1024, help="taps: the flat image's size (the stride-32 "
                   "map's receptive field must leave its centre free of border effects)")
    p.add_argument("--steps", default="", help="outputs: comma-separated checkpoint steps (default: the last)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="grad: config overrides, e.g. --set discriminator=patch+projected")
    a = p.parse_args(argv)
    result: dict = {"mode": a.mode, "n": a.n}
    if a.mode == "grad":
        overrides = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in a.set)}
        cfg = TrainConfig(**{"discriminator": "patch+projected", "image_size": a.size, "device": "cpu", **overrides})
        photos = photo_batch(a.photos, a.n, a.size)
        result["photos"] = peak_ratios(mean_power(photos))
        for name, g in d_gradients(cfg, photos).items():
            result[f"grad_{name}"] = peak_ratios(mean_power(g))
    elif a.mode == "taps":
        result.update(tap_table(photo_batch(a.photos, a.n, a.size), a.push_size))
    else:
        photos = photo_batch(a.photos, a.n, 256)
        result["photos"] = peak_ratios(mean_power(photos))
        for run in a.runs:
            steps = [int(s) for s in a.steps.split(",") if s] or [max(int(f.stem.split("_")[1]) for f in (run / "ckpt").glob("step_*.pt"))]
            for step in steps:
                G, _ = load_generator(run / "ckpt" / f"step_{step:07d}.pt")
                with torch.no_grad():
                    out = torch.cat([G(x) for x in photos.split(8)])
                result[f"{run.name}@{step}"] = peak_ratios(mean_power(out))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
