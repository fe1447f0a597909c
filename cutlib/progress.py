"""Progress output sized for where it goes: a live bar where a person watches it, plain lines at a fixed
cadence where output is stored or streamed. One place for the CLI, the notebooks and the Kaggle bundle.

Why: a bar redraws itself ~10 times a second. A terminal or JupyterLab keeps only its last state, but
papermill stores every redraw as an output of the executed notebook (200 demo steps: ~200 outputs,
262 KB), and a log file or Kaggle's log keeps every '\\r' state (~100 bytes a step).

The rule (`progress_style`), first match wins:
  - CUTLIB_PROGRESS=bar|lines|off in the environment (cutlib.suite sets lines for its kernels, the DDP
    launcher for its ranks, whose output reaches the notebook through a pipe; off silences training's);
  - in a Jupyter kernel: lines when a notebook runner executes it (papermill, `jupyter execute`,
    nbconvert --execute: nbclient starts its kernels with --HistoryManager.hist_file, which JupyterLab
    never passes) or in a Kaggle batch run (KAGGLE_KERNEL_RUN_TYPE=Batch, "Save Version"); otherwise a bar
    (widgets when ipywidgets is installed);
  - elsewhere: a bar when stderr is a terminal, lines otherwise (`> log`, a pipe, nohup).
"""
from __future__ import annotations

import os
import sys

PROGRESS_ENV = "CUTLIB_PROGRESS"
EVERY_ENV = "CUTLIB_PROGRESS_EVERY_S"  # seconds between progress lines (default 30)
STYLES = ("bar", "lines", "off")


def progress_style() -> str:
    """'bar', 'lines' or 'off' for this process, by the rule in the module docstring."""
    forced = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if forced in STYLES:
        return forced
    if "ipykernel" in sys.modules:
        by_runner = any(a.startswith("--HistoryManager.hist_file") for a in sys.argv)
        return "lines" if by_runner or os.environ.get("KAGGLE_KERNEL_RUN_TYPE") == "Batch" else "bar"
    isatty = getattr(sys.stderr, "isatty", None)
    return "bar" if isatty and isatty() else "lines"


def progress_every_s() -> float:
    """Seconds between progress lines: CUTLIB_PROGRESS_EVERY_S, else 30."""
    text = os.environ.get(EVERY_ENV, "").strip()
    try:
        every = float(text) if text else 30.0
    except ValueError:
        raise ValueError(f"{EVERY_ENV}={text!r}: expected a number of seconds") from None
    if every <= 0:
        raise ValueError(f"{EVERY_ENV}={text!r}: must be > 0")
    return every


def redraw(every_s: float = 30.0) -> dict:
    """tqdm's redraw intervals for the other bars (translation, Inception features): a bar's 0.1 s where a
    person watches, else one state every `every_s` (papermill keeps each redraw as an output; maxinterval
    too, or tqdm's monitor thread would redraw a slow bar every 10 s)."""
    return {} if progress_style() == "bar" else {"mininterval": every_s, "maxinterval": every_s}


def hms(seconds: float) -> str:
    """0:04:05 style; days as hours (783:21:41), as a person reads a run's length."""
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def budget_outlook(step: int, steps: int, rate: float, elapsed: float, budget_s: float) -> tuple[float, int]:
    """(seconds until the run ends, steps it will have made) at `rate` steps/s: it ends at `steps` or at
    the budget, whichever comes first (budget_s 0: no budget)."""
    to_steps = (steps - step) / rate if rate > 0 else float("inf")
    if not budget_s:
        return to_steps, steps
    left = max(0.0, budget_s - elapsed)
    if to_steps <= left:
        return to_steps, steps
    return left, step + int(rate * left)


def eta_text(seconds_per_step: float, steps: int, budget_s: float = 0.0) -> str:
    """01's ETA line: the hours `steps` take, or with a time budget the steps the budget is expected to buy."""
    rate = 1.0 / seconds_per_step if seconds_per_step > 0 else float("inf")
    eta, reach = budget_outlook(0, steps, rate, 0.0, budget_s)
    if budget_s and reach < steps:
        return f"ETA {budget_s / 3600:.2f} h (the time budget) for ~{reach:,} steps; steps={steps:,} is only a bound"
    within = f", within the {budget_s / 3600:.2f} h budget" if budget_s else ""
    return f"ETA {eta / 3600:.2f} h for {steps:,} steps{within}"


def checkpoint_hint(seconds_per_step: float, ckpt_every: int, target_s: float = 600.0) -> str:
    """01's line on what a kill without notice costs: a stop signal saves the step in flight, but a SIGKILL
    (or a VM gone before its step ends) loses everything since the last checkpoint, up to ckpt_every steps."""
    at_risk = seconds_per_step * ckpt_every
    text = f"a kill without notice loses up to {at_risk / 60:.1f} min (ckpt_every={ckpt_every:,})"
    if at_risk > 2 * target_s and seconds_per_step > 0:
        suggest = max(1, int(round(target_s / seconds_per_step, -2)) or round(target_s / seconds_per_step))
        text += f"; ckpt_every={suggest:,} keeps it near {target_s / 60:.0f} min"
    return text


class TrainProgress:
    """What the training loop shows. `update(step, now)` after every step (cheap: no clock reads of its
    own, so a fake clock in tests sees the same readings), `losses(rec)` at each metrics line, `close(now)`.

    Against `steps`, or with a time budget against the budget, where `steps` is only a bound: elapsed /
    budget, steps/s, ETA and the steps the budget is expected to buy. `t0` is the clock reading the
    budget counts from (the launch, under the DDP launcher)."""

    def __init__(self, start: int, steps: int, t0: float, now: float, budget_s: float = 0.0, style: str = "lines",
                 every_s: float = 30.0, file=None, desc: str = "train"):
        self.start, self.steps, self.t0, self.budget_s, self.style = start, steps, t0, budget_s, style
        self.every_s, self.desc, self.file = every_s, desc, file
        self.step, self.loss_text, self.rate = start, "", 0.0
        # the rate is measured over windows: every line's (lines), or a few seconds (bar)
        self._win = (now, start)
        self._window_s = every_s if style == "lines" else min(every_s, 2.0)
        self._first = now
        self.bar = None
        if style == "bar":
            from tqdm.auto import tqdm

            if budget_s:
                # The bar fills with the budget's seconds; the steps are in its text, which rides in `unit`
                # (tqdm would put ", " before a postfix), set in _show_budget.
                self.bar = tqdm(total=max(1, round(budget_s)), initial=min(round(now - t0), round(budget_s)),
                                desc=desc, unit="", dynamic_ncols=True, file=file,
                                bar_format="{desc}: {percentage:3.0f}%|{bar}| {unit}")
            else:
                self.bar = tqdm(total=steps, initial=start, desc=desc, dynamic_ncols=True, file=file)
        elif style == "lines":
            budget = f", time budget {hms(budget_s)} (steps is a bound)" if budget_s else ""
            self._print(f"{desc}: step {start:,} of {steps:,}{budget}; a progress line every {every_s:g} s")

    def _print(self, text: str) -> None:
        f = self.file or sys.stderr
        f.write(text + "\n")
        f.flush()

    def status(self, now: float, final: bool = False) -> str:
        """One line of where the run is: step, steps/s, elapsed, ETA (and the budget's outlook), losses;
        `final`: where it ended, at its average rate, without the outlook."""
        elapsed = now - self.t0
        eta, reach = budget_outlook(self.step, self.steps, self.rate, elapsed, self.budget_s)
        eta_s = hms(eta) if eta != float("inf") else "?"
        if self.budget_s:
            parts = [f"step {self.step:,}", f"{self.rate:.2f} steps/s",
                     f"{hms(elapsed)} of the {hms(self.budget_s)} budget ({100 * elapsed / self.budget_s:.0f}%)",
                     f"ETA {eta_s}", f"~{reach:,} steps by the end" if self.rate else "steps by the end: ?"]
        else:
            parts = [f"step {self.step:,}/{self.steps:,} ({100 * self.step / self.steps:.0f}%)",
                     f"{self.rate:.2f} steps/s", f"{hms(elapsed)} elapsed", f"ETA {eta_s}"]
        if final:
            parts = parts[:3]
        return " | ".join(parts + ([self.loss_text] if self.loss_text else []))

    def update(self, step: int, now: float) -> None:
        self.step = step
        if now - self._win[0] < self._window_s:
            if self.bar is not None and not self.budget_s:
                self.bar.update(step - self.bar.n)
            return
        self.rate = (step - self._win[1]) / max(now - self._win[0], 1e-9)
        self._win = (now, step)
        if self.style == "lines":
            self._print(f"{self.desc}: {self.status(now)}")
        elif self.bar is not None and self.budget_s:
            self._show_budget(now)
        elif self.bar is not None:
            self.bar.update(step - self.bar.n)

    def losses(self, rec: dict) -> None:
        self.loss_text = f"d {rec['d_loss']:.3f} g {rec['g_loss']:.3f} nce {rec['nce']:.3f}"
        if self.bar is not None and not self.budget_s:
            self.bar.set_postfix_str(self.loss_text, refresh=False)

    def close(self, now: float) -> None:
        """The last line: where the run ended and its average rate (the bar: its final state)."""
        if self.step > self.start:
            self.rate = (self.step - self.start) / max(now - self._first, 1e-9)
        if self.style == "lines":
            self._print(f"{self.desc}: ended at {self.status(now, final=True)}")
        elif self.bar is not None:
            if self.budget_s:
                self._show_budget(now)
            self.bar.close()

    def _show_budget(self, now: float) -> None:
        self.bar.unit = self.status(now)
        self.bar.update(max(0, min(round(now - self.t0), self.bar.total) - self.bar.n))
