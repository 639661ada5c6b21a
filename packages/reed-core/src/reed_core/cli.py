"""Shared plumbing of the domain command-line tools: error handling and checkpoint resolution."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from .checkpoint import CheckpointError, latest_checkpoint


def resolve_checkpoint(arg: str | None, default: Callable[[], Path]) -> Path:
    """A checkpoint directory from ``arg``: a checkpoint itself, or a run directory (its latest complete
    checkpoint); ``default()`` when ``arg`` is None."""
    if arg is None:
        return default()
    p = Path(arg)
    if (p / "checkpoints").is_dir():
        latest = latest_checkpoint(p / "checkpoints")
        if latest is None:
            raise FileNotFoundError(f"{p}: no complete checkpoint under {p / 'checkpoints'}")
        return latest
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such checkpoint directory")
    return p


def run_cli(prog: str, parser: argparse.ArgumentParser, argv: list[str] | None,
            user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Parse ``argv`` and run ``args.func(args)``. Errors a user can act on (``user_errors``, checkpoint errors,
    missing or unwritable files, a directory given as a file, bad values) print one line ``prog: error: ...`` to stderr and return 2."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except (*user_errors, CheckpointError, OSError, ValueError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
