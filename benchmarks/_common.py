"""Shared helpers for the domain benchmarks: the speed-up rule, tables and curve plots."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path


def steps_to_reach(curve: Sequence[tuple[int, float]], target: float) -> int | None:
    """First evaluated step at which ``curve`` (step, value) reaches ``target`` (higher is better)."""
    for step, value in curve:
        if value is not None and value >= target:
            return step
    return None


def speedup(reference: Sequence[tuple[int, float]], candidate: Sequence[tuple[int, float]]) -> dict:
    """Steps the candidate needs to reach the reference's final value, and the ratio reference/candidate."""
    final_step, final_value = reference[-1]
    reached = steps_to_reach(candidate, final_value)
    return {"target": final_value, "reference_steps": final_step, "candidate_steps": reached,
            "speedup": (final_step / reached) if reached else None}


def format_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    cells = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    lines = [" | ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def write_json(obj, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def plot_curves(curves: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]], metrics: Sequence[str],
                path: str | os.PathLike, title: str) -> None:
    """One panel per metric, one line per method; ``curves[method][metric] = [(step, value), ...]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for method, by_metric in curves.items():
            pts = [(s, v) for s, v in by_metric.get(metric, []) if v is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=method)
        ax.set_title(metric)
        ax.set_xlabel("optimizer steps")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
