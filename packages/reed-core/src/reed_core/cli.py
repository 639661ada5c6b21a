"""Shared plumbing of the domain command-line tools: error handling and checkpoint resolution."""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .allocator import tune_malloc
from .io import CheckpointError

METHOD_NAMES = ("reed", "repa", "vanilla")  # recipe.METHODS' keys, here without torch: parsers build fast
LR_DECAY_NAMES = ("constant", "cosine", "linear")  # TrainConfig.lr_decay's values, likewise
PRECISION_NAMES = ("fp32", "bf16")  # TrainConfig.precision's values, likewise


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` that shows each option's default once: argparse's default-appending formatter, except where the
    help text already states the default, the default is None (the help says what happens then) or the option is
    an on/off flag (off unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.default is None or action.nargs == 0:
            return text
        return super()._get_help_string(action)


def _cpu_clock() -> tuple[float, float, float] | None:
    """(CPU-seconds idle summed over the machine's CPUs, this process's CPU-seconds, wall seconds), or None where
    /proc/stat is not there (not Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        idle = (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")  # idle + iowait
    except (OSError, ValueError, IndexError):
        return None
    t = os.times()
    return idle, t.user + t.system, time.monotonic()


_STARTED: tuple[float, float, float] | None = None  # the clock when ``run_cli`` began (the probe's window)
MIN_PROBE_SECONDS = 0.5  # shorter windows (a command called again in the same process) are too noisy to read


def idle_cores(since: tuple[float, float, float] | None) -> float | None:
    """Cores the other processes on this machine left free between ``since`` (a ``_cpu_clock()``) and now: the
    machine's idle CPU time plus this process's own, per wall second; None when it cannot be measured (not
    Linux, no start, or under ``MIN_PROBE_SECONDS`` of window)."""
    now = _cpu_clock()
    if since is None or now is None or (wall := now[2] - since[2]) < MIN_PROBE_SECONDS:
        return None
    return (now[0] - since[0] + now[1] - since[1]) / wall


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """An inference command's ``--threads`` (see ``apply_threads``)."""
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default 0 = auto: as many as the cores other processes left idle "
                             "while the command started, at least 1; torch alone would take every core)")


def apply_threads(requested: int) -> int:
    """Set torch's CPU threads to ``requested``, or for 0 to the cores other processes left idle since ``run_cli``
    began (measured over the command's start-up, torch's import included; at least 1, at most the cores this
    process may run on); where that cannot be measured torch keeps its default (every core). Returns the count.

    Why (``benchmarks/protein_design_cli.py``, 2 cores, whole design commands): two threads were 1.2x faster than
    one on an idle machine and 1.4x slower than one beside a single busy process."""
    import torch

    if requested < 0:
        raise ValueError(f"--threads must be >= 0 (0 = auto), got {requested}")
    log = logging.getLogger(__name__)
    if requested == 0:
        if (free := idle_cores(_STARTED)) is None:
            log.info("torch CPU threads: %d (torch's default; idle cores not measurable here)", torch.get_num_threads())
            return torch.get_num_threads()
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        requested = max(1, min(cores, math.floor(free + 0.5)))
        log.info("torch CPU threads: %d (auto: %.2f of %d cores left idle by other processes)", requested, free, cores)
    torch.set_num_threads(requested)
    return requested


def resolve_checkpoint(arg: str | None, default: Callable[[], Path]) -> Path:
    """A checkpoint directory from ``arg``: a checkpoint itself, or a run directory (its latest complete
    checkpoint); ``default()`` when ``arg`` is None."""
    if arg is None:
        return default()
    if (p := Path(arg)).joinpath("checkpoints").is_dir():
        from .checkpoint import latest_checkpoint

        if (latest := latest_checkpoint(p / "checkpoints")) is None:
            raise FileNotFoundError(f"{p}: no complete checkpoint under {p / 'checkpoints'}")
        return latest
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such checkpoint directory")
    return p


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number of seconds or units ``h`` / ``m`` / ``s`` (``8m``, ``1h30m``, ``90s``)."""
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d*)?)h)?\s*(?:(\d+(?:\.\d*)?)m)?\s*(?:(\d+(?:\.\d*)?)s?)?\s*", text)
    if not text.strip() or parts is None or not any(parts.groups()):
        raise ValueError(f"not a duration: {text!r} (expected e.g. 8m, 90s, 1h30m)")
    h, m, sec = (float(g) if g else 0.0 for g in parts.groups())
    if (seconds := 3600 * h + 60 * m + sec) <= 0:
        raise ValueError(f"duration must be > 0, got {text!r}")
    return seconds


def add_lr_schedule_arguments(parser: argparse.ArgumentParser) -> None:
    """A ``train`` command's ``--lr-decay`` / ``--lr-final`` (``TrainConfig.lr_decay`` / ``lr_final``)."""
    parser.add_argument("--lr-decay", choices=LR_DECAY_NAMES, default="constant",
                        help="learning-rate decay after the warm-up, reaching --lr-final x --lr at the last step")
    parser.add_argument("--lr-final", type=float, default=0.0, help="final learning rate as a fraction of --lr")


def add_weight_decay_argument(parser: argparse.ArgumentParser) -> None:
    """A ``train`` command's ``--weight-decay`` (``TrainConfig.weight_decay``)."""
    parser.add_argument("--weight-decay", type=float, default=0.0, metavar="WD",
                        help="AdamW's decoupled weight decay on weight matrices and embeddings (biases and norm scales "
                             "are not decayed); 0: none")


def check_weight_decay(weight_decay: float) -> None:
    """``--weight-decay`` must be a finite number >= 0 (checked before any data or teacher is loaded)."""
    if not 0 <= weight_decay < float("inf"):
        raise ValueError(f"--weight-decay must be a finite number >= 0, got {weight_decay}")


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """A ``train`` command's ``--precision`` (``TrainConfig.precision``): the autocast dtype of the training step."""
    parser.add_argument("--precision", choices=PRECISION_NAMES, default="fp32",
                        help="autocast precision of the training step (bf16: mixed precision for GPUs; the weights, "
                             "optimizer and alignment losses stay float32; slower than fp32 on most CPUs)")


def add_grad_accum_argument(parser: argparse.ArgumentParser) -> None:
    """A ``train`` command's ``--grad-accum`` (``TrainConfig.grad_accum``): micro-batches per optimizer step."""
    parser.add_argument("--grad-accum", type=int, default=1, metavar="N",
                        help="split each step's --batch-size into N micro-batches whose gradients are summed: the "
                             "same batches and data order at 1/N of the activation memory (under torchrun, "
                             "--batch-size is split over processes x N)")


def check_grad_accum(grad_accum: int, batch_size: int) -> None:
    """``--grad-accum`` must be a positive count that divides ``--batch-size`` (checked before any data or teacher
    is loaded; the trainer splits the global batch into that many micro-batches)."""
    if grad_accum < 1:
        raise ValueError(f"--grad-accum must be >= 1, got {grad_accum}")
    if batch_size % grad_accum:
        raise ValueError(f"--batch-size {batch_size} is not divisible by --grad-accum {grad_accum}")


def start_from(trainer, init: Path | None) -> None:
    """``--init``: a fresh run starts from checkpoint ``init``'s EMA weights (the optimizer, the step count and the
    projectors start fresh); a run directory that already holds a checkpoint resumes it instead, and says so."""
    if init is None:
        return
    from .checkpoint import latest_checkpoint

    if trainer.checkpoint_root is None or latest_checkpoint(trainer.checkpoint_root) is None:
        trainer.initialize(init)
        print(f"fine-tuning from {init} (its EMA weights)")
    else:
        print(f"resuming the run in {trainer.out_dir}; --init applies only to a fresh run")


def report_training(trainer, method: str) -> int:
    """The lines a domain's ``train`` command ends with: where the run stopped and where its checkpoints are.
    Returns the command's exit code: 0, or 128 + the signal's number when SIGINT / SIGTERM stopped it (130 / 143,
    as a shell reports a process the signal ended, so schedulers and scripts see the run as interrupted)."""
    where = trainer.checkpoint_root
    if trainer.stop_signal is not None:
        import signal

        print(f"stopped by {signal.Signals(trainer.stop_signal).name} at step {trainer.step} of "
              f"{trainer.config.max_steps}; checkpoint in {where} (run the same command again to continue)")
    elif trainer.budget_exhausted:
        print(f"time budget reached at step {trainer.step} of {trainer.config.max_steps}; checkpoint in {where} "
              "(run the same command again to continue)")
    else:
        print(f"trained {method} for {trainer.step} steps; checkpoints in {where}")
    if best := trainer.best:
        print(f"best {best['metric']} {best['value']:.4g} at step {best['step']}: {trainer.out_dir / 'best'}")
    return 0 if trainer.stop_signal is None else 128 + int(trainer.stop_signal)


def run_cli(prog: str, parser: argparse.ArgumentParser | Callable[[], argparse.ArgumentParser],
            argv: list[str] | None, user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Parse ``argv`` and run ``args.func(args)`` with glibc's allocator tuned (``allocator.tune_malloc``). Errors
    a user can act on (``user_errors``, checkpoint errors, missing or unwritable files, a directory given as a file,
    bad values, a missing optional package) print one line ``prog: error: ...`` to stderr and return 2. ``parser``
    may be the function that builds it, called here after the start-up clock of ``apply_threads`` has started (a
    parser that imports torch is then inside it)."""
    global _STARTED
    _STARTED = _cpu_clock()
    tune_malloc()  # before torch allocates anything: see reed_core.allocator
    if not isinstance(parser, argparse.ArgumentParser):
        parser = parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except (*user_errors, CheckpointError, ImportError, OSError, ValueError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
