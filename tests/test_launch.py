"""The notebook launcher's side of a DDP run: what the ranks inherit, GPU count checks, the budget start."""
import os
import time
from pathlib import Path

import pytest

import cutlib
from cutlib.launch import LaunchError, check_gpus, rank_environment
from cutlib.schedule import BUDGET_START_ENV


def test_ranks_import_the_cutlib_the_notebook_imported_and_get_the_launch_time():
    env = rank_environment(started=1234.5)
    # first on the ranks' path: the folder holding the cutlib this process runs (the Kaggle bundle's
    # /tmp/cutlib_src), so a fresh interpreter cannot pick another copy
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(Path(cutlib.__file__).resolve().parent.parent)
    assert float(env[BUDGET_START_ENV]) == 1234.5
    assert env["CUTLIB_PROGRESS"] == "lines"  # rank 0's output reaches the notebook through a pipe


def test_ranks_keep_progress_off_when_asked(monkeypatch):
    monkeypatch.setenv("CUTLIB_PROGRESS", "off")
    assert rank_environment(started=0.0)["CUTLIB_PROGRESS"] == "off"
    monkeypatch.setenv("CUTLIB_PROGRESS", "bar")  # a bar's redraws would each be a line through the pipe
    assert rank_environment(started=0.0)["CUTLIB_PROGRESS"] == "lines"


def test_more_ranks_than_gpus_is_an_error_naming_nproc(tiny_cfg, monkeypatch):
    import torch

    # No GPU here: the machine's answer is what is replaced, the check is the real one.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(LaunchError, match=r"nproc=2: this machine has 1 GPU\(s\).*GPU T4 x2"):
        check_gpus(tiny_cfg(), 2)
    check_gpus(tiny_cfg(), 1)
    check_gpus(tiny_cfg(device="cpu"), 4)  # gloo on CPU: any number of ranks


def test_time_budget_counts_from_the_launch_not_from_train(tiny_cfg, monkeypatch):
    from cutlib.train import train

    budget_hours = 1.0  # all of it spent before train() started (a very slow start-up)
    monkeypatch.setenv(BUDGET_START_ENV, repr(time.time() - budget_hours * 3600))
    summary = train(tiny_cfg(steps=6, sample_every=0, time_budget_hours=budget_hours), progress=False)
    assert summary["stop_reason"] == "time_budget" and summary["step"] == 1
