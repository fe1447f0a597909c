"""`make lab`: JupyterLab on this environment's own kernel, rooted at the project, with notebooks/ open.

    python -m cutlib.lab [--root DIR] [jupyter lab options, e.g. --no-browser --port 8899]

tests/test_lab.py starts JupyterLab through this module too, so the browser test proves what `make lab` runs.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

ROOT = Path(__file__).resolve().parent.parent


class ProjectRootKernelManager(AsyncMappingKernelManager):
    """Kernels start in the served root (the project), not beside the notebook in notebooks/.

    The suite's paths are relative to the project root, where `make demo` and papermill run them: with
    JupyterLab's default, 03's run_dir "runs/demo/run" meant notebooks/runs/demo/run, and 03 did not find
    the checkpoint that `make demo` had written to runs/demo/run."""

    def cwd_for_path(self, path, **kwargs):
        return self.root_dir


def keep_suite_as_stored(model: dict, path: str, **kwargs) -> None:
    """Pre-save hook: a notebook of the suite (notebooks/*.ipynb) is saved as the project stores it.

    Edits to cells are kept; outputs, execution counts, cell metadata other than tags, and the notebook
    metadata the kernel fills in (its Python version) are not. Without this, JupyterLab's autosave rewrote
    the stored notebooks two minutes after they were opened, with outputs once they had run, which the
    tests reject and git shows as changes. Results stay in the open tab; File > Save Notebook As... keeps
    them anywhere else (runs/, say)."""
    from .nbbuild import notebook_metadata

    if model.get("type") != "notebook" or Path(path).parent.as_posix() != "notebooks":
        return
    nb = model["content"]
    nb["metadata"] = notebook_metadata()
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags")
        cell["metadata"] = {"tags": tags} if tags else {}
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None


def lab_args(root: Path = ROOT) -> list[str]:
    """JupyterLab options for the project; options given to `python -m cutlib.lab` are added after them
    (JupyterLab refuses one given twice: serve another folder with --root)."""
    return [
        f"--ServerApp.root_dir={root}",
        # the file browser opens on the suite; runs/ and the README stay one click away
        f"--FileContentsManager.preferred_dir={root / 'notebooks'}",
        "--ServerApp.kernel_manager_class=cutlib.lab.ProjectRootKernelManager",
        "--FileContentsManager.pre_save_hook=cutlib.lab.keep_suite_as_stored",
        # nothing fetched from the internet at start (offline machines, the tests): no news feed, no update check
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        # Containers, CI and this project's machines run as root, where JupyterLab otherwise refuses to start
        *(["--ServerApp.allow_root=True"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
    ]


def lab_env(base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    # The kernelspec "python3" that `make install` puts in this venv must win over a "python3" in the user's
    # ~/.local/share/jupyter, which would start another Python, one without cutlib. jupyter_core already
    # prefers the environment inside a venv its user owns; this makes it so for any environment.
    env["JUPYTER_PREFER_ENV_PATH"] = "1"
    return env


def command(*extra: str, root: Path = ROOT) -> list[str]:
    return [sys.executable, "-m", "jupyterlab", *lab_args(root), *extra]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=ROOT, help="folder to serve, holding notebooks/ (default: "
                    "this checkout; the browser test serves a copy)")
    a, extra = ap.parse_known_args(argv)
    cmd = command(*extra, root=a.root.resolve())
    os.execve(cmd[0], cmd, lab_env())  # JupyterLab replaces this process: Ctrl+C reaches it directly


if __name__ == "__main__":
    main()
