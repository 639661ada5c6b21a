"""The shared command-line plumbing: help text and durations."""

import argparse

import pytest

from reed_core.cli import HelpFormatter, parse_duration


def test_help_states_each_default_once():
    p = argparse.ArgumentParser(prog="x", formatter_class=HelpFormatter)
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps")
    p.add_argument("--preset", default=None, help="model size (default: tiny)")
    p.add_argument("--init", default=None, help="start from this checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print and exit")
    text = " ".join(p.format_help().split())
    assert "optimizer steps (default: 2000)" in text
    assert text.count("(default: tiny)") == 1
    assert "(default: None)" not in text and "(default: False)" not in text


@pytest.mark.parametrize("text, seconds", [("90", 90.0), ("90s", 90.0), ("8m", 480.0), ("1h30m", 5400.0),
                                           ("1.5m", 90.0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "0", "0m", "5 minutes"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_auto_threads_count_the_cores_other_processes_leave_idle(monkeypatch):
    import os
    import time

    import torch

    from reed_core import cli

    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        # a 1-second window in which the machine sat idle 1.2 CPU-seconds and this process used 0.7: 1.9 -> 2 threads
        monkeypatch.setattr(cli, "_STARTED", (100.0, 5.0, 10.0))
        monkeypatch.setattr(cli, "_cpu_clock", lambda: (101.2, 5.7, 11.0))
        assert cli.idle_cores(cli._STARTED) == pytest.approx(1.9)
        assert cli.apply_threads(0) == min(cores, 2) == torch.get_num_threads()
        # another process kept every core busy: this one still gets a thread
        monkeypatch.setattr(cli, "_cpu_clock", lambda: (100.0, 5.2, 11.0))
        assert cli.apply_threads(0) == 1 == torch.get_num_threads()
        # an explicit count is taken as given; a window too short to read leaves torch's default alone
        assert cli.apply_threads(3) == 3 == torch.get_num_threads()
        monkeypatch.setattr(cli, "_cpu_clock", lambda: (100.1, 5.1, 10.2))
        assert cli.idle_cores(cli._STARTED) is None and cli.apply_threads(0) == 3
        with pytest.raises(ValueError, match="--threads must be >= 0"):
            cli.apply_threads(-1)
        monkeypatch.undo()
        if (start := cli._cpu_clock()) is not None:  # the real clock (Linux): a sleeping process, cores mostly idle
            time.sleep(cli.MIN_PROBE_SECONDS + 0.1)
            assert 0.0 <= cli.idle_cores(start) <= (os.cpu_count() or 1) + 0.5
    finally:
        torch.set_num_threads(before)
