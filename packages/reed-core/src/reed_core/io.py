"""Small file utilities shared by the domain CLIs (no torch import: CLIs that do not train start fast)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not match the model."""


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` filtered by the process umask: what ``open`` would create."""
    os.umask(mask := os.umask(0))
    return mode & ~mask


def output_path(path: str | os.PathLike) -> Path:
    """``path`` as an output file: an IsADirectoryError naming it when it is a directory (CLIs check before work)."""
    if (path := Path(path)).is_dir():
        raise IsADirectoryError(f"{path}: is a directory; give a file name")
    return path


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename: readers never see
    a partial file, a failure leaves no file behind, and the file gets the usual umask permissions."""
    path = output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
