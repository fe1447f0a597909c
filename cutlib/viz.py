"""Image grids and loss curves for runs and notebooks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


def plot_losses(run_dir: str | Path, keys=("d_loss", "g_loss", "g_adv", "nce", "identity", "lattice")):
    """Every logged loss over steps."""
    return _panels([r for r in read_metrics(run_dir) if not r.get("eval")], keys)


def plot_eval(run_dir: str | Path, keys=("mifid", "fid", "kid", "swd")):
    """MiFID (and FID, KID, SWD) of the in-training evaluations over steps; None when there are none."""
    return _panels([r for r in read_metrics(run_dir) if r.get("eval")], keys, marker="o")


def preview_photos(cfg, n: int) -> list:
    """The colour panel (cutlib.colour.colour_panel: a sunset, foliage, water...) then the first photos by
    name, n in all: the same rows in every preview and sample grid of a data set."""
    from .colour import colour_panel
    from .data import list_images

    photos = list_images(cfg.photo_path)
    panel = colour_panel(photos, min(n, 4))
    return (panel + [p for p in photos if p not in panel])[:n]


def preview_run(cfg, n: int = 6, checkpoint: str = "latest"):
    """(photo | painting) rows from the run's EMA generator at the training size: the colour panel, then
    the first photos by name."""
    from .data import eval_image
    from .generate import load_generator, resolve_checkpoint
    from .painting import paint

    G, _ = load_generator(resolve_checkpoint(checkpoint, cfg.out_dir))
    photos = torch.stack([eval_image(p, cfg.image_size) for p in preview_photos(cfg, n)])
    with torch.no_grad():
        return pairs_grid(photos, paint(G, photos))


def colour_scatter(sets: dict, title: str = "", ax=None):
    """Each image's mean (a*, b*) as a point, a colour per set ({name: image_stats rows}): paintings,
    photos and outputs. A palette collapsed to one cast shows as a tight cluster; kept colours spread
    as the photos do. Draws into `ax` when given; returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.4)) if ax is None else (ax.figure, ax)
    for (name, stats), colour in zip(sets.items(), ("tab:purple", "tab:green", "tab:orange", "tab:blue")):
        ax.scatter(stats[:, 1], stats[:, 2], s=9, alpha=0.6, color=colour, label=f"{name} ({len(stats)})")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.axvline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("mean a* (green - red)")
    ax.set_ylabel("mean b* (blue - yellow)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def colour_table(report: dict) -> str:
    """cutlib.metrics.colour_report as a small markdown table (a notebook shows it as text)."""
    cols = ("chroma", "colourfulness", "palette_spread", "hue_kept_a", "hue_kept_b", "L", "a", "b", "images")
    rows = ["| set | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, figures in report.items():
        rows.append(f"| {name} | " + " | ".join(str(figures.get(c, "")) for c in cols) + " |")
    return "\n".join(rows)


def colour_check(cfg, n: int = 64, checkpoint: str = "latest"):
    """The run's EMA generator on the first n photos by name (training size): each picture's mean colour
    in G's own colours (keep_colour 0: what training taught it; generation then gives each painting its
    photo's colour layout) beside its photo's and the paintings', as a scatter, the figures in the title."""
    from .colour import palette_report, stats_of
    from .data import eval_image, list_images, load_rgb
    from .generate import load_generator, resolve_checkpoint
    from .painting import paint

    G, _ = load_generator(resolve_checkpoint(checkpoint, cfg.out_dir))
    photos = torch.stack([eval_image(p, cfg.image_size) for p in list_images(cfg.photo_path)[:n]])
    with torch.no_grad():
        outputs = paint(G, photos, keep_colour=0)
    uint8 = lambda x: x.float().add(1).mul(127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()  # noqa: E731
    src, out = stats_of(uint8(photos)), stats_of(uint8(outputs))
    paintings = stats_of(np.asarray(load_rgb(p)) for p in list_images(cfg.monet_path)[:300])
    r, target = palette_report(out, src), palette_report(paintings)
    title = (f"G's own colours: chroma {r['chroma']:.1f}, spread {r['palette_spread']:.1f}, hue kept a*/b* "
             f"{r['hue_kept_a']:.2f} / {r['hue_kept_b']:.2f}\npaintings: chroma {target['chroma']:.1f}, "
             f"spread {target['palette_spread']:.1f}")
    return colour_scatter({"paintings": paintings, "photos": src, "G's own colours": out}, title)
