"""Helpers the notebooks call: build the config from the parameters cell, short error messages, display."""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager

from .checkpoint import CheckpointError
from .config import ConfigError, TrainConfig
from .data import DataError


class NotebookError(RuntimeError):
    """What a notebook run failed on, in one readable line (papermill shows it as the failure reason)."""

    def _render_traceback_(self) -> list[str]:
        # IPython's hook for an exception that draws its own traceback. Without it JupyterLab showed ~25 red
        # lines, the source of friendly_errors and of contextlib around them, above the one line that says
        # what is wrong; the message names the field or file, the frames are only plumbing.
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]


def config_from(namespace: dict, **overrides) -> TrainConfig:
    """TrainConfig from the notebook's parameters: every config field found in `namespace`."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in namespace.items() if k in names}
    values.update(overrides)
    return TrainConfig.from_dict(values)


@contextmanager
def friendly_errors():
    """Turn cutlib's expected failures (bad parameter, missing data, bad checkpoint, NaN) into a short
    error instead of a long traceback from deep inside the library."""
    from .generate import ZipValidationError
    from .launch import LaunchError
    from .train import NonFiniteLossError

    try:
        yield
    except (ConfigError, DataError, CheckpointError, NonFiniteLossError, ZipValidationError, LaunchError,
            FileNotFoundError) as e:
        raise NotebookError(f"{type(e).__name__}: {e}") from None


def show(obj) -> None:
    """Display a figure or image in Jupyter; print a description elsewhere (papermill logs still get it)."""
    if obj is None:
        return
    try:
        from IPython.display import display

        display(obj)
    except ImportError:
        print(obj)
    if hasattr(obj, "savefig"):
        import matplotlib.pyplot as plt

        plt.close(obj)
