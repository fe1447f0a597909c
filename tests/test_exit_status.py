"""One exit-status table (cutlib.jobs, README "Exit statuses") for the three commands: a test per row and
command. Each calls the command's own `main`, as `cutlib JOB` does; the signal rows send a real signal
to this process while the job runs (test_stopping and test_cli do it to real subprocesses too)."""
import os
import signal

import pytest
import torch

from cutlib import evaluate, generate, metrics, train
from cutlib.checkpoint import save_checkpoint
from cutlib.jobs import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from cutlib.model import CUTModel

TINY = ["--image_size", "32", "--load_size", "36", "--ngf", "8", "--ndf", "8", "--n_blocks", "5", "--num_patches", "16",
        "--num_workers", "0", "--sample_every", "0", "--amp", "off", "--device", "cpu"]


def test_the_table_is_the_one_the_readme_states():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert (EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT) == (0, 1, 2)
    for row in ("| 0 |", "| 1 |", "| 2 |", "| 128 + N |"):
        assert row in readme, row


def status(main, argv) -> int:
    """What the process would exit with: main's return value, or argparse's SystemExit for a usage error."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def train_args(demo_root, tmp_path, *more):
    return ["--data", str(demo_root), "--out_dir", str(tmp_path / "run"), *TINY, *more]


def test_train_exit_statuses(demo_root, tmp_path, monkeypatch, capsys):
    assert train.main(train_args(demo_root, tmp_path, "--steps", "2", "--ckpt_every", "2")) == EXIT_OK
    assert train.main(train_args(demo_root, tmp_path, "--steps", "2", "--lambda_nc", "1")) == EXIT_BAD_INPUT
    assert "lambda_nc" in capsys.readouterr().err
    assert train.main(["--data", str(tmp_path / "nowhere"), *TINY]) == EXIT_BAD_INPUT
    assert "nowhere" in capsys.readouterr().err
    step = CUTModel.train_step

    def nan_at_step_1(self, photo, monet):
        return step(self, photo * float("nan") if self.step == 1 else photo, monet)

    monkeypatch.setattr(CUTModel, "train_step", nan_at_step_1)
    assert train.main(train_args(demo_root, tmp_path / "nan", "--steps", "4", "--log_every", "1")) == EXIT_FAILED
    assert "non-finite" in capsys.readouterr().err
    monkeypatch.setattr(CUTModel, "train_step", step)

    def stopped_at_step_1(self, photo, monet):
        if self.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # the step in flight finishes, then its checkpoint
        return step(self, photo, monet)

    monkeypatch.setattr(CUTModel, "train_step", stopped_at_step_1)
    assert train.main(train_args(demo_root, tmp_path / "stop", "--steps", "4")) == 128 + signal.SIGTERM


@pytest.fixture
def checkpoint(tiny_cfg, tmp_path):
    return save_checkpoint(CUTModel(tiny_cfg()).state_dict(), tmp_path / "ckpt.pt")


def test_generate_exit_statuses(checkpoint, demo_root, tmp_path, monkeypatch):
    base = ["--checkpoint", str(checkpoint), "--photos", str(demo_root / "photo_jpg"), "--gen-size", "32",
            "--device", "cpu", "--workers", "1"]
    assert generate.main([*base, "--out", str(tmp_path / "png")]) == EXIT_OK
    assert generate.main([*base, "--zip", str(tmp_path / "a.zip"), "--strict"]) == EXIT_BAD_INPUT  # 12 photos
    assert generate.main(["--checkpoint", str(tmp_path / "none.pt"), "--zip", str(tmp_path / "n.zip")]) == EXIT_BAD_INPUT
    assert status(generate.main, [*base, "--gen-size", "0"]) == EXIT_BAD_INPUT  # argparse's usage error

    def invalid(*a, **k):
        raise generate.ZipValidationError("entry 3 is 255x256")

    monkeypatch.setattr(generate, "validate_zip", invalid)
    assert generate.main([*base, "--zip", str(tmp_path / "b.zip"), "--min-count", "1"]) == EXIT_FAILED
    monkeypatch.undo()

    real = generate.translate_files

    def stopped(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the zip is written
        yield from real(*a, **k)

    monkeypatch.setattr(generate, "translate_files", stopped)
    assert generate.main([*base, "--zip", str(tmp_path / "c.zip"), "--min-count", "1"]) == 128 + signal.SIGINT
    assert not (tmp_path / "c.zip").exists()


def test_evaluate_exit_statuses(demo_root, tmp_path, monkeypatch, capsys):
    args = [str(demo_root / "photo_jpg"), "--paintings", str(demo_root / "monet_jpg"), "--device", "cpu"]
    monkeypatch.setattr(metrics, "evaluate", lambda *a, **k: {"fid": 1.0})  # Inception's own tests: test_metrics
    assert evaluate.main(args) == EXIT_OK
    assert evaluate.main([str(tmp_path / "missing.zip"), *args[1:]]) == EXIT_BAD_INPUT
    assert status(evaluate.main, [*args, "--batch", "0"]) == EXIT_BAD_INPUT

    def out_of_memory(*a, **k):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(metrics, "evaluate", out_of_memory)
    assert evaluate.main(args) == EXIT_FAILED
    assert "out of memory" in capsys.readouterr().err

    def stopped(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        return torch.zeros(1)

    monkeypatch.setattr(metrics, "evaluate", stopped)
    assert evaluate.main(args) == 128 + signal.SIGTERM
