"""What the three commands share (`cutlib train | generate | evaluate`, and `python -m cutlib.JOB`): the
exit statuses, a parser whose usage errors name the command, and a runner that prints a job's result as
one JSON line and turns errors into exit statuses. It imports no other cutlib module but the error types
and the stop conventions, so each job's module can hold its own command line without a circle through
`cli`.

Exit statuses, the same for every command (README, "Exit statuses"):

    0        done: the result is printed (train: a JSON summary; generate, evaluate: one JSON line)
    1        the job failed on good input: a non-finite loss (the last good checkpoint kept), a zip
             that is no valid submission, an unexpected error (its traceback printed)
    2        bad input, named in one line: a flag, a config field, a file or folder, a checkpoint
    128 + N  stopped by signal N: 143 for SIGTERM, 130 for Ctrl-C (train: checkpoint written, resumable;
             generate, evaluate: no partial file left under a final name)
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import traceback

from .checkpoint import CheckpointError
from .config import ConfigError
from .data import DataError
from .stopping import STOP_SIGNALS, exit_status, signal_name

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
# Bad input: what the user can fix by changing a flag, a field or a path. ValueError is not among them:
# one raised deep inside (a tensor shape) is the job failing, not the input.
USAGE_ERRORS = (ConfigError, DataError, CheckpointError, FileNotFoundError)


class JobFailed(RuntimeError):
    """The input was fine and the job ran, but its result is not what was asked for (exit 1)."""


class JobParser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own exit status for usage errors is 2 too; say which command
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def require_positive(ap: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name.replace("-", "_"))
        if value < 1:
            ap.error(f"--{name} must be >= 1, not {value}")


class JobStopped(KeyboardInterrupt):
    """SIGTERM (a spot VM's notice, a scheduler, Kaggle's limit) raised in the job as Ctrl-C raises
    KeyboardInterrupt: the temp file being written unwinds away (`atomic_write`) instead of staying behind
    a process the signal's default action ends on the spot."""

    def __init__(self, signum: int):
        super().__init__(signal_name(signum))
        self.signum = signum


def _raise_stopped(signum, frame):
    for s in STOP_SIGNALS:  # a second stop while unwinding acts as Python's defaults do
        signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
    raise JobStopped(signum)


def run_job(job) -> int:
    # A job's output is one file written whole at the end (a zip, a cache), so a stop means starting over:
    # unlike training there is no step to finish first. Forks hold the signal (cutlib.stopping.signals_held).
    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _raise_stopped) for s in STOP_SIGNALS} if in_main else {}
    try:
        print(json.dumps(job(), default=str))
        return EXIT_OK
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"stopped ({signal_name(signum)}): no partial file was left under a final name; run the same "
              f"command again to start over", file=sys.stderr)
        return exit_status(signum)
    except USAGE_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # noqa: BLE001 - every other failure is the job's: status 1, as the table says
        if not isinstance(e, JobFailed):
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
