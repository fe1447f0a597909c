"""Periodic texture, found in the frequency domain: a fine regular grid in images is a narrow peak in their
mean power spectrum, invisible to FID tables and easy to miss in a downscaled grid.

    python bench/spectrum.py grad --photos DIR [--size 128] [--n 32]       # what each D teaches G at init
    python bench/spectrum.py grad RUN_DIR --photos DIR --steps 2000 [--n 32]   # ... once trained
    python bench/spectrum.py outputs RUN_DIR --photos DIR [--steps 1000,2000] [--n 64] [--shifts 1,4,8]  # what G paints
    python bench/spectrum.py taps --photos DIR [--n 8] [--push-size 1024]   # which backbone strides must blur
    python bench/spectrum.py sees --photos DIR [--n 8]                      # which lattices the backbone sees

`grad`: for each discriminator of a freshly built `patch+projected` model (its trained-from-scratch
parts at init, the projected one's backbone pretrained), the mean power spectrum of the gradient of
G's hinge loss (minus its mean logit) with respect to real photo crops: the signal G follows. A stride-2 conv
without a low-pass filter in front passes that gradient through its transposed conv, which puts energy
on the stride's lattice (periods 2, 4, 8 px); G learns to paint it.
With run folders, the same for each checkpoint's trained discriminators, at its own G's outputs (the
raw G, on central image_size crops of photos resized to load_size, the training unit; the step averaged
over 8 draws of the run's DiffAugment, whose translations move the lattice against D's strides),
plus `push`: where the painting already has a lattice, does the step G takes down this gradient (scaled by
the D's weight in G's loss) grow it or fight it? Per lattice period, the cosine between the output's
spectrum and the step's at those frequencies over all images (+1: grows it, -1: erases it, ~0: blind
to it), and `step_power`, the step's mean power there, to say whose push is the stronger (`step_rms`:
the whole step's size, per pixel; `edges`: its size along each border over its size inside).
`outputs`: the same measure on the EMA generator's outputs (256 px, or `--gen-size`) for held-out photos, beside the
photos themselves; with `--shifts`, also on the mean of that many paints over the phases of G's 4-px
grid (cutlib.painting.paint), which cancels a lattice locked to that grid.
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
period-4 and period-8 lattice frequencies (p4_anti: the period-4 anti-diagonal) and as the maximum over
the whole plane above a quarter of Nyquist.
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
from cutlib.augment import diff_augment  # noqa: E402
from cutlib.checkpoint import load_checkpoint, load_weights  # noqa: E402
from cutlib.config import TrainConfig  # noqa: E402
from cutlib.data import eval_image, list_images  # noqa: E402
from cutlib.discriminators import adversarial_weights  # noqa: E402
from cutlib.generate import load_generator  # noqa: E402
from cutlib.model import build_networks  # noqa: E402
from cutlib.painting import paint  # noqa: E402
from cutlib.projection import _strided, frozen_lite0  # noqa: E402

# lattice frequencies in cycles per pixel (fy, fx): where grids of period 2, 4 and 8 px put their energy
LATTICE = {"p2": [(0.5, 0.0), (0.0, 0.5), (0.5, 0.5)], "p4": [(0.25, 0.0), (0.0, 0.25), (0.25, 0.25)],
           "p8": [(0.125, 0.0), (0.0, 0.125), (0.125, 0.125)], "p4_anti": [(0.25, -0.25)]}


def spectra(images: torch.Tensor) -> torch.Tensor:
    """Complex spectra of (N, C, H, W) images (per-image mean removed, Hann window), zero frequency at
    [H//2, W//2]."""
    x = images.double()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    h, w = x.shape[-2:]
    window = torch.hann_window(h, periodic=False, dtype=x.dtype)[:, None] * torch.hann_window(w, periodic=False, dtype=x.dtype)[None]
    return torch.fft.fftshift(torch.fft.fft2(x * window), dim=(-2, -1))


def mean_power(images: torch.Tensor) -> np.ndarray:
    """Mean power spectrum of (N, C, H, W) images, zero frequency at [H//2, W//2]."""
    return spectra(images).abs().square().mean(dim=(0, 1)).numpy()


def lattice_bin(f: tuple[float, float], h: int, w: int) -> tuple[int, int]:
    """Index of frequency f (cycles/px) in a shifted h x w spectrum; fftfreq puts +0.5 at -0.5, so the
    Nyquist bin is index 0 after the shift."""
    return (int(round((f[0] if f[0] < 0.5 else -0.5) * h)) + h // 2,
            int(round((f[1] if f[1] < 0.5 else -0.5) * w)) + w // 2)


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

    out = {name: round(max(float(ratio[lattice_bin(f, h, w)]) for f in freqs), 2) for name, freqs in LATTICE.items()}

    def line(f):  # the bin against the bins two away along both axes (past the Hann window's main lobe)
        i, j = lattice_bin(f, h, w)
        around = [power[(i + di) % h, (j + dj) % w] for di, dj in ((2, 0), (-2, 0), (0, 2), (0, -2))]
        return float(power[i, j]) / max(float(np.mean(around)), 1e-30)

    # a lattice is a line (>> 1); broad texture with the same orientation (strokes, edges) is ~1
    out.update({f"{name}_line": round(max(line(f) for f in freqs), 2) for name, freqs in LATTICE.items()
                if name != "p4_anti"})
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


def lattice_push(images: torch.Tensor, steps: torch.Tensor) -> dict:
    """Per lattice period: the cosine between the images' spectra and the steps' at its frequencies, over
    all images and channels (+1: the step grows the lattice the images have), and the steps' mean power there."""
    y, d = spectra(images), spectra(steps)
    h, w = images.shape[-2:]
    out = {}
    for name, freqs in LATTICE.items():
        idx = [lattice_bin(f, h, w) for f in freqs]
        yv = torch.stack([y[..., i, j] for i, j in idx])
        dv = torch.stack([d[..., i, j] for i, j in idx])
        cos = (yv.conj() * dv).real.sum() / (yv.abs().square().sum() * dv.abs().square().sum()).sqrt().clamp_min(1e-30)
        out[name] = round(float(cos), 3)
        out[f"{name}_step_power"] = float(f"{float(dv.abs().square().mean()):.3g}")
    return out


def edge_push(step: torch.Tensor, width: int = 2) -> dict:
    """The step's size along each border (its outer `width` pixels), over its size inside: a D that sees
    one border unlike the others (TF 'SAME' padding pads stride-2 convs on the right and bottom only)
    pushes that border apart, and G paints a streak there."""
    rms = lambda x: x.square().mean().sqrt()  # noqa: E731
    inner = rms(step[..., 2 * width:-2 * width, 2 * width:-2 * width]).clamp_min(1e-30)
    borders = {"left": step[..., :width], "right": step[..., -width:], "top": step[..., :width, :],
               "bottom": step[..., -width:, :]}
    return {name: round(float(rms(x) / inner), 2) for name, x in borders.items()}


def load_trained(ckpt_path: Path):
    """(config, G, D, PatchNCE MLP) of a checkpoint, raw weights, frozen in eval mode."""
    ckpt = load_checkpoint(ckpt_path)
    cfg = TrainConfig.from_dict(ckpt["config"])
    nets = build_networks(cfg)[:3]
    for key, net in zip(("G", "D", "F"), nets):
        load_weights(net, ckpt[key], key, ckpt_path)
        net.eval().requires_grad_(False)
    return (cfg, *nets)


def training_crops(cfg: TrainConfig, photo_files: list[Path]) -> torch.Tensor:
    """Central image_size crops of the photos resized to load_size: the unit the run trained on."""
    c, s = (cfg.load_size - cfg.image_size) // 2, cfg.image_size
    return torch.cat([eval_image(f, cfg.load_size)[None, :, c:c + s, c:c + s] for f in photo_files])


def trained_d_gradients(ckpt_path: Path, photo_files: list[Path], augment_draws: int = 8) -> dict:
    """For one checkpoint: per trained discriminator, the lattice peaks of the G-loss gradient at its own
    G's outputs and its `push` on the lattice those outputs carry; the same for the weighted sum of the
    discriminators' steps, which is what G follows (PatchNCE aside)."""
    cfg, G, D, _ = load_trained(ckpt_path)
    with torch.no_grad():
        fakes = G(training_crops(cfg, photo_files))
    weights = adversarial_weights(cfg, D.names)
    steps = {name: torch.zeros_like(fakes) for name in D.names}
    torch.manual_seed(0)
    for _ in range(augment_draws):  # G's step in expectation over the training step's DiffAugment draws
        x = fakes.detach().requires_grad_(True)
        logits = D(diff_augment(x, cfg.diffaug))
        for i, name in enumerate(D.names):
            grad, = torch.autograd.grad(-logits[i].mean(), x, retain_graph=True)  # the hinge G loss
            # the way G moves its painting: down the gradient, as the training step weights each D
            steps[name] -= cfg.lambda_gan * weights[i] * grad / augment_draws
    steps["total"] = sum(steps.values())
    out = {"fakes": peak_ratios(mean_power(fakes))}
    for name, step in steps.items():
        out[f"grad_{name}"] = {**peak_ratios(mean_power(step)), "push": lattice_push(fakes, step),
                               "step_rms": float(f"{float(step.square().mean().sqrt()):.3g}"),
                               "edges": edge_push(step)}
    return out


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


def lattice_visibility(photos: torch.Tensor, amplitude: float = 0.05) -> dict:
    """Per lattice period and backbone (plain, antialiased): the relative change of each tapped map when
    horizontal lines of that period are added to the photos."""
    size = photos.shape[-1]
    out = {}
    for name, antialias in (("plain", False), ("antialiased", True)):
        net = frozen_lite0("", antialias=antialias)  # loaded once: both periods share it and its clean maps
        with torch.no_grad():
            before = net(photos)
            for period in (2, 4):
                pattern = torch.zeros(period)
                pattern[0], pattern[period // 2] = 1.0, -1.0
                lattice = amplitude * pattern.repeat(size // period)[:, None].expand(size, size)
                after = net(photos + lattice)
                out[f"p{period}_{name}"] = [round(float((b - a).norm() / a.norm()), 4) for a, b in zip(before, after)]
    return out


def checkpoint_steps(run: Path, steps: str) -> list[int]:
    return [int(s) for s in steps.split(",") if s] or [max(int(f.stem.split("_")[1]) for f in (run / "ckpt").glob("step_*.pt"))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("grad", "outputs", "taps", "sees"))
    p.add_argument("runs", nargs="*", type=Path)
    p.add_argument("--photos", type=Path, required=True)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--size", type=int, default=128, help="grad, taps: crop size D sees (the training unit)")
    p.add_argument("--push-size", type=int, default=1024, help="taps: the flat image's size (the stride-32 "
                   "map's receptive field must leave its centre free of border effects)")
    p.add_argument("--gen-size", type=int, default=256, help="outputs: the size photos are painted at (64 for "
                   "the 64 px screen's runs, as bench/curve.py --gen-size)")
    p.add_argument("--steps", default="", help="outputs, grad with runs: comma-separated checkpoint steps (default: the last)")
    p.add_argument("--shifts", default="1", help="outputs: comma-separated paints per photo averaged over the "
                   "phases of G's grid (cutlib.painting.paint), each scored as run@step/shiftsN")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="grad: config overrides, e.g. --set discriminator=patch+projected")
    a = p.parse_args(argv)
    result: dict = {"mode": a.mode, "n": a.n}
    if a.mode == "grad" and a.runs:
        files = list_images(a.photos)[:a.n]
        for run in a.runs:
            for step in checkpoint_steps(run, a.steps):
                result[f"{run.name}@{step}"] = trained_d_gradients(run / "ckpt" / f"step_{step:07d}.pt", files)
    elif a.mode == "grad":
        overrides = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in a.set)}
        cfg = TrainConfig(**{"discriminator": "patch+projected", "image_size": a.size, "device": "cpu", **overrides})
        photos = photo_batch(a.photos, a.n, a.size)
        result["photos"] = peak_ratios(mean_power(photos))
        for name, g in d_gradients(cfg, photos).items():
            result[f"grad_{name}"] = peak_ratios(mean_power(g))
    elif a.mode == "sees":
        result.update(lattice_visibility(photo_batch(a.photos, a.n, a.size)))
    elif a.mode == "taps":
        result.update(tap_table(photo_batch(a.photos, a.n, a.size), a.push_size))
    else:
        photos = photo_batch(a.photos, a.n, a.gen_size)
        result["photos"] = peak_ratios(mean_power(photos))
        for run in a.runs:
            for step in checkpoint_steps(run, a.steps):
                G, _ = load_generator(run / "ckpt" / f"step_{step:07d}.pt")
                for shifts in map(int, a.shifts.split(",")):
                    with torch.no_grad():
                        out = torch.cat([paint(G, x, border=0, shifts=shifts) for x in photos.split(8)])
                    key = f"{run.name}@{step}" + (f"/shifts{shifts}" if shifts > 1 else "")
                    result[key] = peak_ratios(mean_power(out))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
