"""reed_core.allocator: glibc keeps freed memory in the process (no page faults to get it back), an environment
switch leaves glibc alone, and the command-line plumbing applies it."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from reed_core.allocator import ENV

GLIBC = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")

# Allocate 64 MiB in 1 MiB arrays, touch every page, free them all; again and again. Prints the page faults of
# the repeats after the first: the pages glibc handed back to the kernel in between and had to fault in again.
CHURN = """
import resource, sys
import numpy as np
from reed_core.allocator import tune_malloc
print(int(tune_malloc()))
def churn():
    arrays = [np.ones(1 << 17) for _ in range(64)]
    del arrays
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _churn(setting: str | None) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if setting is not None:
        env[ENV] = setting
    out = subprocess.run([sys.executable, "-c", CHURN], env=env, capture_output=True, text=True, check=True).stdout
    tuned, faults = out.split()
    return tuned == "1", int(faults)


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_tuned_malloc_keeps_freed_memory_without_page_faults():
    tuned, faults = _churn(None)
    default, default_faults = _churn("default")
    assert tuned and not default
    pages = 10 * (64 << 20) // os.sysconf("SC_PAGE_SIZE")  # what re-faulting every repeat would cost
    assert default_faults > pages / 2  # glibc's defaults give the memory back and fault it in again
    assert faults < pages / 20


@pytest.mark.parametrize("setting", ["0", "off", "Default"])
def test_environment_leaves_glibc_alone(setting):
    assert _churn(setting)[0] is False


def test_command_line_plumbing_tunes_the_allocator(monkeypatch):
    import argparse

    from reed_core import allocator
    from reed_core.cli import run_cli

    monkeypatch.setattr(allocator, "_tuned", None)  # as in a fresh process
    parser = argparse.ArgumentParser()
    parser.set_defaults(func=lambda args: 0)
    assert run_cli("x", parser, []) == 0
    assert allocator._tuned is (GLIBC and os.environ.get(ENV, "").lower() not in allocator.OFF_VALUES)
