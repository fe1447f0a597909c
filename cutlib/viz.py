"""Image grids and loss curves for runs and notebooks."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image


def pairs_grid(sources: torch.Tensor, outputs: torch.Tensor) -> Image.Image:
    """Rows of (source | output) pairs; inputs are (B, 3, H, W) in [-1, 1]."""
    from torchvision.utils import make_grid  # here, not at import: torchvision's import costs ~1.3 s

    pairs = torch.stack([sources.detach().float().cpu(), outputs.detach().float().cpu()], 1).flatten(0, 1)
    grid = make_grid(pairs, nrow=2, padding=0, normalize=True, value_range=(-1, 1))  # clamps, as to_uint8
    return Image.fromarray(grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy())


def save_pairs_grid(sources: torch.Tensor, outputs: torch.Tensor, path: str | Path) -> Path:
    from .checkpoint import atomic_write

    img = pairs_grid(sources, outputs)
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _panels(recs: list[dict], keys, **plot_kw):
    """One matplotlib figure, a panel per key, value over step; None when there is nothing to plot."""
    import matplotlib.pyplot as plt

    keys = [k for k in keys if recs and k in recs[0]]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 2.6), squeeze=False)
    for ax, k in zip(axes[0], keys):
        ax.plot([r["step"] for r in recs], [r[k] for r in recs], **plot_kw)
        ax.set_title(k)
        ax.set_xlabel("step")
    fig.tight_layout()
    return fig


def plot_losses(run_dir: str | Path, keys=("d_loss", "g_loss", "g_adv", "nce", "identity", "r1", "style", "lattice")):
    """Every logged loss over steps."""
    return _panels([r for r in read_metrics(run_dir) if not r.get("eval")], keys)


def plot_eval(run_dir: str | Path, keys=("mifid", "fid", "kid", "swd")):
    """MiFID (and FID, KID, SWD) of the in-training evaluations over steps; None when there are none."""
    return _panels([r for r in read_metrics(run_dir) if r.get("eval")], keys, marker="o")


def preview_run(cfg, n: int = 6, checkpoint: str = "latest"):
    """(photo | painting) rows from the run's EMA generator, on the first n photos at the training size."""
    from .data import eval_image, list_images
    from .generate import load_generator, resolve_checkpoint
    from .nets import paint

    G, _ = load_generator(resolve_checkpoint(checkpoint, cfg.out_dir))
    photos = torch.stack([eval_image(p, cfg.image_size) for p in list_images(cfg.photo_path)[:n]])
    with torch.no_grad():
        return pairs_grid(photos, paint(G, photos))
