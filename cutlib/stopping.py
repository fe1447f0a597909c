"""Stop requests: a SIGTERM (a spot VM's notice, a scheduler, Kaggle) or SIGINT (Ctrl-C, JupyterLab's
"Interrupt kernel"), or a KeyboardInterrupt raised between steps (a callback), becomes "finish the step
in flight, checkpoint, stop" instead of a traceback and lost steps.

The exit status of a stopped command is 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), the
shell's convention for "ended by that signal": a scheduler that requeues on failure (Kubernetes
restartPolicy OnFailure, SLURM --requeue, a retry loop) runs it again with `--resume true`, and `a && b`
does not go on as if training had finished. A finished run exits 0."""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Ctrl-C in a terminal reaches torchrun and every rank, and torchrun forwards it to the ranks once more:
# a repeat this soon after the first is the same stop, not a second one.
REPEAT_GRACE_S = 2.0


def exit_status(signum: int) -> int:
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopNow(KeyboardInterrupt):
    """A second stop signal: leave at once. Whatever was being written was a temp file; the files under
    final names are the last complete ones."""

    def __init__(self, signum: int):
        super().__init__(f"{signal_name(signum)} again: stopped at once")
        self.signum = signum


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on request after a complete step, with its checkpoint written. A KeyboardInterrupt,
    so that code which catches Exception does not swallow a stop the user asked for."""

    def __init__(self, message: str, step: int, checkpoint: str, signum: int, summary: dict | None = None):
        super().__init__(message)
        self.message, self.step, self.checkpoint, self.signum = message, step, checkpoint, signum
        self.summary = summary or {}

    @property
    def exit_status(self) -> int:
        return exit_status(self.signum)

    def __str__(self) -> str:
        return self.message

    def _render_traceback_(self) -> list[str]:
        # IPython draws this instead of a traceback: the stop was asked for, the frames say nothing
        return [f"\x1b[0;33mTrainingInterrupted\x1b[0m: {self.message}"]


class StopRequest:
    """While active (a context manager), SIGTERM and SIGINT set a flag instead of ending the process; the
    loop reads it between steps. Handlers are installed only in the main thread (Python allows no other),
    and the previous ones are put back on exit."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.signum: int | None = None
        self._first_at = 0.0
        self._previous: dict = {}
        self.on_request = None  # called with the signal number of the first stop (the notebook launcher's)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        if self.signum is None:
            self.request(signum)
        elif self.clock() - self._first_at >= REPEAT_GRACE_S:
            raise StopNow(signum)

    def request(self, signum: int = signal.SIGINT) -> None:
        if self.signum is None:
            self.signum, self._first_at = int(signum), self.clock()
            if self.on_request:
                self.on_request(self.signum)

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextmanager
def signals_held():
    """Keep stop signals pending in this thread while the body runs, for forks. An exception a handler
    raises inside os.fork's hooks is swallowed (logging's hook then keeps its lock: threads that log or
    import wait for ever), and a worker forked just before its parent dies never sees it die (torch's
    watchdog takes the reaper for its parent). Children inherit the mask: `release_held_signals` in them."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no fork, no mask
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def release_held_signals(*_) -> None:
    """A worker_init_fn for DataLoaders started under `signals_held`."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
