"""Checkpoints: one dict per file, written atomically, loaded with weights_only=True."""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

FORMAT = "cutlib-ckpt-1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(tmp_path), fsync, then rename onto `path`: a crash leaves the old file or none,
    never a half-written one under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; final files get the usual permissions
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def link_atomic(src: Path, dst: Path) -> Path:
    """Point `dst` at the same bytes as `src` (hard link, else copy), replacing `dst` atomically."""
    import shutil

    def write(tmp):
        Path(tmp).unlink()
        try:
            os.link(src, tmp)
        except OSError:  # file systems without hard links
            shutil.copyfile(src, tmp)

    return atomic_write(dst, write)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused a global: code or foreign objects
        raise CheckpointError(f"checkpoint {path} holds objects other than tensors and plain data "
                              f"(refused, nothing was executed): {str(e).splitlines()[0]}") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"checkpoint {path} is truncated or not a PyTorch file: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cutlib checkpoint (no format={FORMAT!r} entry)")
    return ckpt


def load_weights(net: torch.nn.Module, state: dict, what: str, path) -> None:
    """load_state_dict with an error that says which file and which architecture mismatch."""
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{what} weights in {path} do not fit this architecture "
                              f"(other ngf/n_blocks/antialias/discriminator?): {str(e).splitlines()[0]} ...") from e


def prune_numbered(ckpt_dir: Path, keep: int) -> None:
    numbered = sorted(ckpt_dir.glob("step_*.pt"))
    for old in numbered[:-keep] if keep else numbered:
        old.unlink(missing_ok=True)
