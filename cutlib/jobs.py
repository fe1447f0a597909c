"""What the generate and evaluate commands share (`python -m cutlib.generate|evaluate`, and `cutlib JOB`
through `cutlib.cli`; training has its own parser, a flag per config field): a parser whose usage errors
name the command and exit 2, and a runner that prints the job's result as one JSON line and turns errors
into exit statuses (2: bad input, named; 1: the job failed). It imports no other cutlib module but the
error types, so each job's module can hold its own command line without a circle through `cli`."""
from __future__ import annotations

import argparse
import json
import sys

from .checkpoint import CheckpointError
from .config import ConfigError
from .data import DataError

USAGE_ERRORS = (ConfigError, DataError, CheckpointError, FileNotFoundError, ValueError)


class JobFailed(RuntimeError):
    """The input was fine and the job ran, but its result is not what was asked for (exit 1)."""


class JobParser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own exit status for usage errors is 2 too; say which command
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def require_positive(ap: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name.replace("-", "_"))
        if value < 1:
            ap.error(f"--{name} must be >= 1, not {value}")


def run_job(job) -> int:
    try:
        print(json.dumps(job(), default=str))
        return 0
    except JobFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except USAGE_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
