"""Runs the notebook suite 01 -> 02 -> 03 headlessly with papermill, leaving executed copies and images.zip.

    python -m cutlib.suite -f params/demo.yaml --out runs/demo [--data /path/to/gan-getting-started]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .config import DEMO_OUT, ConfigError, closest_keys, load_yaml, suite_layout
from .nbbuild import NOTEBOOK_DIR, NOTEBOOKS
from .progress import PROGRESS_ENV


def notebook_parameters(path: Path) -> dict:
    import papermill

    return papermill.inspect_notebook(str(path))


def split_params(params: dict, notebooks: list[Path]) -> dict[Path, dict]:
    """Give each notebook the parameters it declares; a key no notebook declares is an error (a typo)."""
    declared = {nb: notebook_parameters(nb) for nb in notebooks}
    known = set().union(*declared.values())
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown}; "
                          + closest_keys(unknown, known, f"the notebooks accept: {sorted(known)}"))
    return {nb: {k: v for k, v in params.items() if k in declared[nb]} for nb in notebooks}


def run_suite(params: dict, out: Path, notebook_dir: Path = NOTEBOOK_DIR, only: list[str] | None = None) -> dict:
    import papermill

    out = Path(out)
    params = {**suite_layout(out), **params}
    names = [n for n in NOTEBOOKS if not only or any(n.startswith(o) for o in only)]
    per_nb = split_params(params, [notebook_dir / n for n in names])
    (out / "executed").mkdir(parents=True, exist_ok=True)
    timings = {}
    with _line_progress_in_kernels():
        for nb, p in per_nb.items():
            t0 = time.time()
            print(f"== {nb.name} {json.dumps(p)}", flush=True)
            papermill.execute_notebook(str(nb), str(out / "executed" / nb.name), parameters=p,
                                       kernel_name="python3", cwd=str(Path.cwd()), progress_bar=False,
                                       log_output=True)
            timings[nb.name] = round(time.time() - t0, 1)
    return {"out": str(out), "zip": str(out / "images.zip"), "seconds": timings}


@contextmanager
def _line_progress_in_kernels():
    """Kernels started meanwhile (they inherit this environment) print progress lines, not bars, whatever
    cutlib.progress would guess: the executed notebooks are kept."""
    old = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = old or "lines"  # one set by the caller (off, bar) stands
    try:
        yield
    finally:
        if old is None:
            del os.environ[PROGRESS_ENV]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-f", "--file", help="YAML of parameters (params/*.yaml)")
    ap.add_argument("--out", default=DEMO_OUT, help="output folder: executed/, run/, images.zip")
    ap.add_argument("--data", help='data folder laid out like Kaggle\'s, or "demo"')
    ap.add_argument("--only", nargs="*", help="run only these notebooks (prefixes, e.g. 03)")
    a = ap.parse_args(argv)
    try:
        params = load_yaml(a.file) if a.file else {}
        if a.data:
            params["data"] = a.data
        result = run_suite(params, Path(a.out), only=a.only)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # papermill's PapermillExecutionError carries the notebook's own message
        if type(e).__name__ == "PapermillExecutionError":
            print(f"error: notebook failed: {getattr(e, 'ename', '')}: {getattr(e, 'evalue', e)}", file=sys.stderr)
            return 1
        raise
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
