"""The corner mark: from ~3,000 steps every output carries the same saturated bars along its top rows and
left columns, whatever the photo. Who pays G to paint it, per checkpoint:

    python bench/corner_mark.py RUN_DIR [RUN_DIR ...] --photos DIR [--steps 2500,4000] [--n 8]

On central image_size crops of photos resized to load_size (the training unit), the raw G's outputs as
they are ("marked") and with their top 1/16 rows and left 7/64 columns replaced by the mirrored pixels
next to them ("cleaned"), then:
- `chroma`: mean max-min of RGB (0-255) in the top-left corner's top and left strips, the bottom-right
  corner's bottom and right strips, and the centre: the mark reads 3-4x the rest; also for the outputs as
  cutlib.generate paints them (`painted`: reflected pixels above and left, cropped off);
- `d_realness`: each trained discriminator's mean logit (no DiffAugment), marked vs cleaned: higher
  means more real, so a D that scores the mark higher pays G for it;
- `nce`: per PatchNCE tap, the cross-entropy of the output's patches against the photo's (the training
  loss, the same trained MLP and temperature), for the patches inside the marked strips (`corner`) and
  for 256 others (`rest`), marked vs cleaned: lower means PatchNCE pays G for the mark. G's instance
  norms take statistics over the whole image, so a mark can move the features of every patch.

Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cutlib.data import list_images  # noqa: E402
from cutlib.painting import paint  # noqa: E402
from spectrum import checkpoint_steps, load_trained, training_crops  # noqa: E402

ROWS, COLS = 1 / 16, 7 / 64  # the mark's extent at 128 px: 8 rows, 14 columns


def strips(size: int) -> tuple[int, int]:
    return max(1, round(ROWS * size)), max(1, round(COLS * size))


def clean_corner(x: torch.Tensor) -> torch.Tensor:
    """The top rows and left columns replaced by the mirror image of the pixels next to them."""
    rows, cols = strips(x.shape[-1])
    out = x.clone()
    out[..., :rows, :] = x[..., rows:2 * rows, :].flip(-2)
    out[..., :, :cols] = out[..., :, cols:2 * cols].flip(-1)
    return out


def corner_chroma(x: torch.Tensor) -> dict:
    """Mean max-min of RGB, 0-255, of images in [-1, 1]: the top-left corner's strips, the bottom-right
    corner's, and the centre."""
    s = x.shape[-1]
    rows, cols = strips(s)
    span = 3 * cols  # the strips' length along the border
    c = (x.amax(1) - x.amin(1)) * 127.5
    return {k: round(v.mean().item(), 1) for k, v in {
        "top_left_top": c[:, :rows, :span], "top_left_left": c[:, :span, :cols],
        "bottom_right_bottom": c[:, -rows:, -span:], "bottom_right_right": c[:, -span:, -cols:],
        "centre": c[:, 3 * s // 8:5 * s // 8, 3 * s // 8:5 * s // 8]}.items()}


def per_patch_nce(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    """cutlib.losses.patch_nce without its mean: (B, P) cross-entropies."""
    sim = torch.bmm(q, k.transpose(1, 2))
    p = sim.shape[1]
    logits = torch.cat([sim.diagonal(dim1=1, dim2=2).unsqueeze(-1),
                        sim.masked_fill(torch.eye(p, dtype=torch.bool), -10.0)], dim=2) / tau
    target = torch.zeros(logits.shape[0] * p, dtype=torch.long)
    return F.cross_entropy(logits.flatten(0, 1), target, reduction="none").view(-1, p)


def patch_ids(h: int, w: int, size: int, count: int, seed: int) -> tuple[torch.Tensor, int]:
    """Up to `count` random positions of a tap map inside the strips `clean_corner` replaces, then `count`
    outside them (the training step samples `count` in all: the cross-entropies stay comparable)."""
    rows, cols = strips(size)
    r, c = max(1, rows * h // size), max(1, cols * w // size)
    order = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed)).tolist()
    inside = [i for i in order if i // w < r or i % w < c][:count]
    outside = [i for i in order if not (i // w < r or i % w < c)][:count]
    return torch.tensor(inside + outside), len(inside)


@torch.no_grad()
def mark_effects(ckpt_path: Path, photo_files: list[Path]) -> dict:
    cfg, G, D, mlp = load_trained(ckpt_path)
    s = cfg.image_size
    photos = training_crops(cfg, photo_files)
    taps = tuple(cfg.nce_layers)
    marked, keys_feats = G(photos, taps=taps)
    images = {"marked": marked, "cleaned": clean_corner(marked)}
    picks = [patch_ids(k.shape[2], k.shape[3], s, cfg.num_patches, seed=t) for t, k in enumerate(keys_feats)]
    ids = [i for i, _ in picks]
    keys = mlp(keys_feats, ids)
    out: dict = {"chroma": {}, "d_realness": {}, "nce": {}}
    for tag, x in images.items():
        out["chroma"][tag] = corner_chroma(x)
        out["d_realness"][tag] = {n: round(v.mean().item(), 4) for n, v in zip(D.names, D(x))}
        queries = mlp(G.encode(x, taps), ids)
        out["nce"][tag] = {}
        for t, q, k, (_, inside) in zip(taps, queries, keys, picks):
            ce = per_patch_nce(q, k, cfg.nce_t)
            out["nce"][tag][f"tap{t}"] = {"corner": round(ce[:, :inside].mean().item(), 4),
                                          "rest": round(ce[:, inside:].mean().item(), 4)}
    out["chroma"]["painted"] = corner_chroma(paint(G, photos))  # as cutlib.generate paints: the border cropped off
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--photos", type=Path, required=True)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--steps", default="", help="comma-separated checkpoint steps (default: the last)")
    a = p.parse_args(argv)
    files = list_images(a.photos)[:a.n]
    result = {"bench": "corner_mark", "n": len(files)}
    for run in a.runs:
        for step in checkpoint_steps(run, a.steps):
            result[f"{run.name}@{step}"] = mark_effects(run / "ckpt" / f"step_{step:07d}.pt", files)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
