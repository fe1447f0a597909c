"""Start a DDP training run from a notebook: a Jupyter kernel cannot itself be a process group, so the
run is `torchrun ... -m cutlib.launch` in a subprocess whose progress is streamed back.

`python -m cutlib.launch` is the torchrun entry: each rank says which cutlib it imported and how long
after the launch it started, then runs `cutlib.train`'s command line."""
from __future__ import annotations

import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from .config import TrainConfig
from .progress import PROGRESS_ENV
from .schedule import BUDGET_START_ENV
from .stopping import StopNow, StopRequest, TrainingInterrupted


class LaunchError(RuntimeError):
    """The torchrun subprocess failed; the message carries the end of its output."""


def torchrun_command(config_file: str | Path, nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "cutlib.launch", "-f", str(config_file)]


def rank_environment(started: float) -> dict[str, str]:
    """The ranks' environment: ours, plus the folder this cutlib was imported from, the budget start and
    progress in lines.

    The ranks are fresh interpreters: a notebook that imported cutlib from a folder it put on sys.path
    (the Kaggle bundle writes its carried copy to /tmp/cutlib_src) must hand that folder on, or the ranks
    would import another cutlib (an installed one) or none at all."""
    import cutlib

    src = str(Path(cutlib.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env[BUDGET_START_ENV] = repr(started)
    # rank 0's output reaches the notebook through a pipe, line by line: a bar's '\r' redraws would each
    # become a line there (cutlib/progress.py)
    env[PROGRESS_ENV] = "off" if env.get(PROGRESS_ENV) == "off" else "lines"
    return env


def check_gpus(cfg: TrainConfig, nproc: int) -> None:
    """One rank per GPU: more ranks than GPUs would fail inside torchrun with a CUDA error on rank N."""
    import torch

    if cfg.device == "cpu" or not torch.cuda.is_available():
        return  # gloo on CPU: any number of ranks
    n = torch.cuda.device_count()
    if nproc > n:
        raise LaunchError(f"nproc={nproc}: this machine has {n} GPU(s), and each rank needs its own. Set "
                          f"nproc <= {n}, or on Kaggle choose Settings > Accelerator > GPU T4 x2 (2 GPUs).")


def release_kernel_gpu_memory() -> None:
    """Hand the kernel's cached GPU memory back before the ranks start: rank 0 shares GPU 0 with this
    kernel, which still caches the blocks of 01's sanity step. A no-op when CUDA was never used here."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


def train_ddp(cfg: TrainConfig, nproc: int, echo=None) -> dict:
    """Run `cfg` on `nproc` processes (one per GPU; gloo on CPU) and return rank 0's summary. The time
    budget (cfg.time_budget_hours) counts from this call, so torchrun's start-up is part of it."""
    started = time.time()
    check_gpus(cfg, nproc)
    release_kernel_gpu_memory()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "launch.yaml"
    cfg.save(config_file)
    echo = echo or (lambda text: (sys.stderr.write(text), sys.stderr.flush()))
    lines: list[str] = []
    with subprocess.Popen(torchrun_command(config_file, nproc), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1, env=rank_environment(started)) as proc:
        with StopRequest() as stop:
            stop.on_request = lambda signum: forward_stop(proc, signum)
            try:
                for line in proc.stdout:  # the progress bar of rank 0, warnings, and the final summary line
                    lines.append(line)
                    echo(line)
            except StopNow:
                proc.kill()
                raise
    summary = next((json.loads(line) for line in reversed(lines) if line.startswith("{")), None)
    if summary and summary.get("stop_reason") == "signal":
        said = next((line.strip() for line in reversed(lines) if "stopped after step" in line), "")
        raise TrainingInterrupted(said.removeprefix("train: ") or f"stopped after step {summary['step']}",
                                  summary["step"], str(out / "ckpt" / "latest.pt"), stop.signum or signal.SIGINT, summary)
    if proc.returncode != 0:
        tail = "".join(lines[-15:])
        raise LaunchError(f"torchrun exited with {proc.returncode}; last output:\n{tail}")
    if summary is None:
        raise LaunchError("torchrun finished without a summary line")
    return summary


def forward_stop(proc: subprocess.Popen, signum: int) -> None:
    """Hand a stop the kernel got on to torchrun, which passes it to the ranks; they save and exit. Not when
    the kernel leads its process group: Jupyter's interrupt (and a terminal's Ctrl-C) signal the whole
    group, torchrun and the ranks included, and a second copy to torchrun would end it before the ranks
    finish saving. While the ranks save, the kernel keeps reading their output."""
    if os.getpgrp() != os.getpid() and proc.poll() is None:
        proc.send_signal(signum)


def rank_banner() -> str:
    """'rank R/W: cutlib from PATH, S s after the launch': which copy each rank runs, and its start-up."""
    import cutlib

    started = os.environ.get(BUDGET_START_ENV)
    after = f", {time.time() - float(started):.1f} s after the launch" if started else ""
    return f"rank {os.environ.get('RANK', '0')}/{os.environ.get('WORLD_SIZE', '1')}: cutlib from " \
           f"{cutlib.__file__}{after}"


def rank_starts(output: str) -> dict[int, float]:
    """{rank: seconds after the launch} from the ranks' banners in torchrun's merged output. Searched, not
    matched at a line's start: the ranks share one pipe, and a rank's banner can land after another's
    unfinished line (a C++ warning on stderr is written in pieces)."""
    found = re.finditer(r"rank (\d+)/\d+: cutlib from .+?, ([\d.]+) s after the launch", output)
    return {int(m[1]): float(m[2]) for m in found}


if __name__ == "__main__":
    print(rank_banner(), flush=True)
    from cutlib.train import main

    sys.exit(main())
