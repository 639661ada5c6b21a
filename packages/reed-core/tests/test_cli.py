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
