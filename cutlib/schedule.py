"""Learning-rate schedules: in steps (official CUT), or in wall-clock time for runs that stop on a budget,
and where that budget's clock starts."""
from __future__ import annotations

import os
import time

from .config import LR_DECAY_START

# Unix time the run's time budget counts from. launch.train_ddp sets it in the ranks' environment, so that
# torchrun's start-up (interpreters, imports, CUDA and NCCL initialisation) is spent from the budget too.
# Here, below both launch and train, so that neither imports the other for it.
BUDGET_START_ENV = "CUTLIB_BUDGET_START"


def budget_origin(now: float) -> float:
    """The reading of the clock that gave `now` at which the budget started: `now` itself, or earlier by
    the time since the launcher's start in BUDGET_START_ENV (Kaggle counts the session, not a rank's)."""
    launched = os.environ.get(BUDGET_START_ENV)
    return now - max(0.0, time.time() - float(launched)) if launched else now


def linear_tail(progress: float, decay_start: float) -> float:
    """1 until `decay_start`, then linear to 0 at progress 1 (both fractions of the run)."""
    if progress < decay_start or decay_start >= 1.0:
        return 1.0
    return max(0.0, (1.0 - progress) / (1.0 - decay_start))


def lr_factor(step: int, steps: int, decay_start: float) -> float:
    """Constant, then linear decay to 0 at the last step (official CUT 'linear' policy)."""
    start = int(steps * decay_start)
    if step < start or steps <= start:
        return 1.0
    return max(0.0, (steps - step) / (steps - start))


def lr_factor_at(step: int, elapsed_s: float, cfg) -> float:
    """The factor for `cfg.lr_schedule`. 'time' decays over the last part of `time_budget_hours`, so a run
    that stops on its budget (a Kaggle session) ends with the lr at 0 rather than undecayed; it never
    exceeds the step schedule, so a run that reaches `steps` first also ends at 0."""
    by_steps = lr_factor(step, cfg.steps, LR_DECAY_START)
    if cfg.lr_schedule == "time":
        return min(by_steps, linear_tail(elapsed_s / (cfg.time_budget_hours * 3600), LR_DECAY_START))
    return by_steps
