"""Learning-rate schedules: in steps (official CUT), or in wall-clock time for runs that stop on a budget."""
from __future__ import annotations


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
    by_steps = lr_factor(step, cfg.steps, cfg.lr_decay_start)
    if cfg.lr_schedule == "time":
        return min(by_steps, linear_tail(elapsed_s / (cfg.time_budget_hours * 3600), cfg.lr_decay_start))
    return by_steps
