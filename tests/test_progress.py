"""Progress output sized for where it goes (cutlib.progress): which style where, the plain lines' cadence
and content, and a time budget's outlook in the bar, the lines and 01's ETA."""
import io
import sys

import pytest

from cutlib.progress import PROGRESS_ENV, TrainProgress, checkpoint_hint, eta_text, progress_style

LOSSES = {"d_loss": 0.5, "g_loss": 0.8, "nce": 3.2}


class _Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    return monkeypatch


def test_a_terminal_gets_a_bar_a_file_or_pipe_gets_lines(clean_env):
    clean_env.delitem(sys.modules, "ipykernel", raising=False)
    clean_env.setattr(sys, "stderr", _Tty())
    assert progress_style() == "bar"
    clean_env.setattr(sys, "stderr", io.StringIO())  # `> log`, a pipe: no terminal
    assert progress_style() == "lines"
    clean_env.setenv(PROGRESS_ENV, "bar")  # the environment chooses over the guess
    assert progress_style() == "bar"


def test_a_kernel_draws_a_bar_unless_papermill_or_a_kaggle_batch_runs_it(clean_env):
    clean_env.setitem(sys.modules, "ipykernel", sys.modules.get("ipykernel") or object())
    clean_env.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "kernel-1.json"])  # as JupyterLab starts it
    assert progress_style() == "bar"
    clean_env.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")  # Kaggle's "Save Version" run
    assert progress_style() == "lines"
    clean_env.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    assert progress_style() == "bar"
    # nbclient (papermill, jupyter execute) starts its kernels with this flag; the papermill test in
    # test_notebooks.py checks that a real papermill run is seen as one
    clean_env.setattr(sys, "argv", sys.argv + ["--HistoryManager.hist_file=:memory:"])
    assert progress_style() == "lines"


def _run(progress, steps, seconds_per_step, log_every=50):
    for s in range(progress.start + 1, steps + 1):
        progress.update(s, s * seconds_per_step)
        if s % log_every == 0:
            progress.losses(LOSSES)
    progress.close(steps * seconds_per_step)


def test_lines_come_at_the_cadence_whatever_the_step_rate():
    """50,000 steps at 56 steps/s (the graph-replayed step) every 30 s: ~30 lines, not one per step."""
    out = io.StringIO()
    _run(TrainProgress(0, 50_000, 0.0, 0.0, style="lines", every_s=30.0, file=out), 50_000, 1 / 56)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 2 + int(50_000 / 56 // 30)  # the opening line, one per 30 s, the closing line
    assert len(out.getvalue()) < 150 * len(lines)
    assert lines[1] == ("train: step 1,680/50,000 (3%) | 56.00 steps/s | 0:00:30 elapsed | ETA 0:14:23 | "
                        "d 0.500 g 0.800 nce 3.200")
    assert lines[-1] == "train: ended at step 50,000/50,000 (100%) | 56.00 steps/s | 0:14:53 elapsed | " \
                        "d 0.500 g 0.800 nce 3.200"  # the average rate; no ETA left to give


def test_a_budgeted_run_reports_against_the_budget_not_the_step_bound():
    """params/kaggle.yaml: steps 1,000,000 is a bound, a 4 h budget ends the run; 2 steps/s, launched 60 s
    before train's first step. The ETA is the budget's end, with the steps it is expected to buy."""
    out = io.StringIO()
    progress = TrainProgress(0, 10**6, -60.0, 0.0, budget_s=4 * 3600, style="lines", every_s=60.0, file=out)
    _run(progress, 240, 0.5)
    lines = out.getvalue().splitlines()
    assert "time budget 4:00:00" in lines[0]
    assert lines[2] == ("train: step 240 | 2.00 steps/s | 0:03:00 of the 4:00:00 budget (1%) | ETA 3:57:00 | "
                        "~28,680 steps by the end | d 0.500 g 0.800 nce 3.200")
    assert lines[3].startswith("train: ended at step 240 | 2.00 steps/s | 0:03:00 of the 4:00:00 budget (1%) | d")
    assert "783:" not in out.getvalue() and "138:" not in out.getvalue()  # no ETA for the million steps


def test_a_budgeted_bar_fills_with_the_budget_and_says_the_steps_it_buys():
    out = io.StringIO()
    _run(TrainProgress(0, 10**6, 0.0, 0.0, budget_s=60.0, style="bar", file=out), 3000, 0.01)
    last = out.getvalue().split("\r")[-1]
    assert last.startswith("train:  50%|") and "~6,000 steps by the end" in last and "ETA 0:00:30" in last
    assert "1000000" not in out.getvalue() and "1,000,000" not in out.getvalue()


def test_sanity_eta_line_with_and_without_a_budget():
    assert eta_text(2.0, 200) == "ETA 0.11 h for 200 steps"
    assert eta_text(0.0179, 10**6, 4 * 3600) == \
        "ETA 4.00 h (the time budget) for ~804,469 steps; steps=1,000,000 is only a bound"
    assert eta_text(0.5, 1000, 3600) == "ETA 0.14 h for 1,000 steps, within the 1.00 h budget"


def test_checkpoint_hint_says_what_a_kill_without_notice_costs_and_suggests_a_ckpt_every():
    assert checkpoint_hint(0.0179, 2000) == "a kill without notice loses up to 0.6 min (ckpt_every=2,000)"
    # a CPU step of 1.84 s: 2,000 steps are an hour; 300 steps keep it near 10 minutes
    assert checkpoint_hint(1.84, 2000) == ("a kill without notice loses up to 61.3 min (ckpt_every=2,000); "
                                           "ckpt_every=300 keeps it near 10 min")
