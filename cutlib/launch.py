"""Start a DDP training run from a notebook: a Jupyter kernel cannot itself be a process group, so the
run is `torchrun ... -m cutlib.train` in a subprocess whose progress is streamed back."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .config import TrainConfig


class LaunchError(RuntimeError):
    """The torchrun subprocess failed; the message carries the end of its output."""


def torchrun_command(config_file: str | Path, nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "cutlib.train", "-f", str(config_file)]


def train_ddp(cfg: TrainConfig, nproc: int, echo=None) -> dict:
    """Run `cfg` on `nproc` processes (one per GPU; gloo on CPU) and return rank 0's summary."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "launch.yaml"
    cfg.save(config_file)
    echo = echo or (lambda text: (sys.stderr.write(text), sys.stderr.flush()))
    proc = subprocess.Popen(torchrun_command(config_file, nproc), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: list[str] = []
    for line in proc.stdout:  # the progress bar of rank 0, warnings, and the final summary line
        lines.append(line)
        echo(line)
    if proc.wait() != 0:
        tail = "".join(lines[-15:])
        raise LaunchError(f"torchrun exited with {proc.returncode}; last output:\n{tail}")
    for line in reversed(lines):
        if line.startswith("{"):
            return json.loads(line)
    raise LaunchError("torchrun finished without a summary line")
