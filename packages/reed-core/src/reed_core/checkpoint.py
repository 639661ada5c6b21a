"""Atomic checkpoints: ``model.safetensors``, ``ema.safetensors``, ``projectors.safetensors``, ``config.json``
and ``train_state.pt`` (optimizer, step, RNG states; loadable with ``torch.load(weights_only=True)``).

A checkpoint directory is written under a temporary name and renamed into place, so a reader never sees a
half-written one; stale temporary directories (from a killed process) are ignored and cleaned up.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .io import CheckpointError, output_path, umask_mode

_STEP_DIR = re.compile(r"^step_(\d{8,})$")
MODEL_FILE, EMA_FILE, PROJ_FILE = "model.safetensors", "ema.safetensors", "projectors.safetensors"
CONFIG_FILE, STATE_FILE = "config.json", "train_state.pt"


def rng_state() -> dict[str, Any]:
    """Every global RNG state, in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
             "has_gauss": int(has_gauss), "cached": float(cached)}
    cuda = {"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}
    return {"torch": torch.get_rng_state(), "numpy": numpy, "python": random.getstate(), **cuda}


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n, py = state["numpy"], state["python"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_dir(root: str | os.PathLike, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoint directories under ``root``, oldest first."""
    root = Path(root)
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()
             ] if root.is_dir() else []
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``path`` to write into; when the block ends without an error its
    files are synced and it is renamed to ``path`` (replacing a directory already there), otherwise it is removed.
    Readers see the old directory or the complete new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    try:
        os.chmod(tmp, umask_mode(0o777))  # mkdtemp makes it 0700
        yield tmp
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = path.with_name(f".old-{path.name}-{os.getpid()}")
        if path.exists():
            os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_checkpoint(path: str | os.PathLike, *, model: Mapping[str, torch.Tensor], train_state: Mapping[str, Any],
                    config: Mapping[str, Any], ema: Mapping[str, torch.Tensor] | None = None,
                    projectors: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write a checkpoint directory atomically (``atomic_directory``: temp dir in the same parent, then rename)."""
    with atomic_directory(path) as tmp:
        for file, state in ((MODEL_FILE, model), (EMA_FILE, ema), (PROJ_FILE, projectors)):
            if state or file == MODEL_FILE:  # no file for an absent EMA or an empty projector bank
                _write_safetensors(tmp / file, state)  # the directory is the atomic unit
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
        torch.save(dict(train_state), tmp / STATE_FILE)  # written last: its presence marks completeness
    return Path(path)


def save_weights(path: str | os.PathLike, state: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None
                 ) -> Path:
    """One ``.safetensors`` file, written atomically and with the umask's permissions (safetensors alone makes
    it 0600)."""
    path = output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _write_safetensors(tmp, state, metadata)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_safetensors(path: Path, state: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    os.chmod(path, umask_mode())  # safetensors creates the file 0600


def prune_checkpoints(root: str | os.PathLike, keep: int) -> None:
    """Keep the ``keep`` newest checkpoints; also remove stale temporary directories."""
    root = Path(root)
    stale = [p for p in root.iterdir() if p.is_dir() and p.name.startswith((".tmp-", ".old-"))] if root.is_dir() else []
    for p in stale + (list_checkpoints(root)[:-keep] if keep > 0 else []):
        shutil.rmtree(p, ignore_errors=True)


def load_train_state(path: str | os.PathLike) -> dict[str, Any]:
    if not (Path(path) / STATE_FILE).is_file():
        raise CheckpointError(f"{path}: not a complete checkpoint (no {STATE_FILE})")
    return torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True)


def load_weights(path: str | os.PathLike, module: torch.nn.Module, which: str = "model", strict: bool = True) -> None:
    """Load ``model`` / ``ema`` / ``projectors`` weights from a checkpoint directory (or a .safetensors file)."""
    path, files = Path(path), {"model": MODEL_FILE, "ema": EMA_FILE, "projectors": PROJ_FILE}
    if which not in files:
        raise ValueError(f"which must be one of {sorted(files)}, got {which!r}")
    file = path if path.suffix == ".safetensors" else path / files[which]
    if not file.is_file():
        raise CheckpointError(f"{file}: no such weights file")
    try:
        module.load_state_dict(load_file(str(file)), strict=strict)
    except RuntimeError as e:
        raise CheckpointError(f"{file}: weights do not match the model: {e}") from e


def load_config(path: str | os.PathLike, domain: str | None = None) -> dict[str, Any]:
    """``config.json`` of a checkpoint; with ``domain``, a CheckpointError unless it is a model of that domain."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise CheckpointError(f"{file}: no such config file")
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}: not JSON ({e})") from None
    found = config.get("model", {}).get("domain") if isinstance(config.get("model"), dict) else None
    if domain is not None and found != domain:
        what = f"a reed-{found} checkpoint" if found else "not a REED domain checkpoint"
        raise CheckpointError(f"{path}: {what}; expected a reed-{domain} model")
    return config


def build_from_config(path: str | os.PathLike, factory: Any, fields: dict[str, Any]) -> Any:
    """``factory(**fields)`` from a checkpoint's config, as a CheckpointError naming ``path`` when they differ."""
    try:
        return factory(**fields)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its model config does not fit {getattr(factory, '__name__', factory)} ({e})") from None
