"""``assert_loss_decreases``: a robust check that a loss curve goes down."""

from __future__ import annotations

from collections.abc import Sequence


def assert_loss_decreases(losses: Sequence[float], *, window: int | None = None, min_drop: float = 0.1) -> None:
    """Assert the mean of the last ``window`` losses is at least ``min_drop`` (relative) below the mean of the
    first ``window``. ``window`` defaults to a fifth of the curve (at least 1)."""
    n = len(losses)
    if n < 2:
        raise AssertionError(f"need at least 2 losses, got {n}")
    w = window or max(1, n // 5)
    if 2 * w > n:
        raise ValueError(f"window {w} too large for {n} losses")
    first = sum(losses[:w]) / w
    last = sum(losses[-w:]) / w
    if not last <= first - min_drop * abs(first):
        raise AssertionError(
            f"loss did not fall by {min_drop:.0%}: first {w} mean {first:.5f}, last {w} mean {last:.5f}"
        )
