"""Helpers the notebooks call: build the config from the parameters cell, short error messages, display."""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager

from .checkpoint import CheckpointError
from .config import ConfigError, TrainConfig
from .data import DataError


class NotebookError(RuntimeError):
    """What a notebook run failed on, in one readable line (papermill shows it as the failure reason)."""


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
