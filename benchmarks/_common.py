"""Shared helpers for the domain benchmarks: the speed-up rule, tables, curve plots and timed processes.

Importing it tunes glibc's allocator for the benchmark's process as the command-line tools do
(``reed_core.allocator``; ``REED_MALLOC=default`` leaves it alone)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from reed_core.allocator import tune_malloc

tune_malloc()


class ProcessUsage(NamedTuple):
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_mb: float
    minor_faults: int
    code: int


def run_process(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> ProcessUsage:
    """Run ``cmd`` (output discarded) and measure it: wall clock, its own user and system CPU seconds, peak RSS and
    minor page faults (``wait4``), exit code."""
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=None if env is None else dict(env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ProcessUsage(wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss / 1024, usage.ru_minflt,
                        proc.returncode)


def steps_to_reach(curve: Sequence[tuple[int, float]], target: float, lower_is_better: bool = False) -> float | None:
    """The step at which ``curve`` (step, value) first reaches ``target``, linearly interpolated between the two
    evaluation points that bracket it (the first point itself when it already reaches it); None if never."""
    sign, prev = (-1.0 if lower_is_better else 1.0), None
    for step, value in curve:
        if value is None:
            continue
        if sign * value >= sign * target:
            if prev is None:
                return float(step)
            frac = (target - prev[1]) / (value - prev[1])
            return round(prev[0] + frac * (step - prev[0]), 1)
        prev = (step, value)
    return None


def value_at(curve: Sequence[tuple[int, float]], step: float) -> float | None:
    """``curve``'s value at ``step``, linearly interpolated between evaluation points (None outside them)."""
    pts = [(s, v) for s, v in curve if v is not None]
    for (s0, v0), (s1, v1) in zip(pts, pts[1:], strict=False):
        if s0 <= step <= s1:
            return v0 + (v1 - v0) * (step - s0) / (s1 - s0)
    return pts[-1][1] if pts and pts[-1][0] == step else None


def speedup(reference: Sequence[tuple[int, float]], candidate: Sequence[tuple[int, float]],
            lower_is_better: bool = False, at: float = 1.0) -> dict:
    """Steps the candidate needs to reach the reference's value at ``at`` x its last step (its final value by
    default; both interpolated on the curves), and the ratio reference steps / candidate steps."""
    final_step = reference[-1][0]
    ref_step = final_step if at == 1.0 else at * final_step
    final_value = value_at(reference, ref_step) if at != 1.0 else reference[-1][1]
    if final_value is None or (final_value <= 0 and not lower_is_better):  # nothing to reach
        return {"target": final_value, "reference_steps": ref_step, "candidate_steps": None, "speedup": None,
                "note": "value is 0 or outside its curve"}
    reached = steps_to_reach(candidate, final_value, lower_is_better)
    return {"target": final_value, "reference_steps": ref_step, "candidate_steps": reached,
            "speedup": round(ref_step / reached, 2) if reached else None}


def report_speedups(results: dict, keys: Sequence[str], lower_is_better: Sequence[str] = ()) -> None:
    """Speed-ups of every method over vanilla (``results["speedup"]``) and of REED variants over REPA-style
    (``results["speedup_vs_repa"]``) on each metric in ``keys``, read off ``results["methods"][m]["curve"]``:
    the steps a method needs to reach the reference's value at the end of the budget and at 50 % / 75 % of it
    (interpolated on both curves). With several seeds (``seed_curves``), also per seed (same seed for both)."""
    methods = results["methods"]
    pairs = [("vanilla", m) for m in methods if m != "vanilla" and "vanilla" in methods] + [
        ("repa", m) for m in methods if m.startswith("reed") and "repa" in methods]
    for base, m in pairs:
        table = results.setdefault("speedup" if base == "vanilla" else f"speedup_vs_{base}", {})
        table[m] = {}
        for key in keys:
            lower = key in lower_is_better

            def points(curve, key=key):
                return [(c["step"], c[key]) for c in curve]

            ref, cand = points(methods[base]["curve"]), points(methods[m]["curve"])
            s = table[m][key] = speedup(ref, cand, lower)
            s["at_budget_fraction"] = {f: speedup(ref, cand, lower, at=f) for f in (0.5, 0.75)}
            parts = [_speedup_text(f, base, p) for f, p in [(1.0, s), *s["at_budget_fraction"].items()]]
            seeds = sorted(set(methods[base].get("seed_curves", {})) & set(methods[m].get("seed_curves", {})))
            if len(seeds) > 1:
                s["per_seed"] = {k: speedup(points(methods[base]["seed_curves"][k]), points(methods[m]["seed_curves"][k]),
                                            lower)["speedup"] for k in seeds}
                parts.append("per seed at 100 %: " + ", ".join(f"{v:.2f}x" if v else "not reached" for v in s["per_seed"].values()))
            lead = f"speed-up {m} vs {base} on {key}"
            if "note" in s:
                print(f"{lead}: undefined ({base}'s final {s['note']})" + "".join(f"; {x}" for x in parts[3:]))
            else:
                print(f"{lead}, reaching {base}'s value at " + "; ".join(parts))


def _speedup_text(fraction: float, base: str, s: dict) -> str:
    if "note" in s:
        return f"{int(fraction * 100)} %: {s['note']}"
    ratio = f"{s['speedup']:.2f}x" if s["speedup"] else "not reached"
    return f"{int(fraction * 100)} % ({base} {s['target']:.3g} at step {s['reference_steps']:g}): {ratio}"


def mean_curve(curves: Sequence[Sequence[Mapping]]) -> list[dict]:
    """The point-wise mean of several seeds' curves (same evaluation steps); each point also gets ``spread``:
    max - min over the seeds of every numeric metric."""
    out = []
    for rows in zip(*curves, strict=True):
        if len({r["step"] for r in rows}) != 1:
            raise ValueError("seed curves were evaluated at different steps")
        point: dict = {"step": rows[0]["step"], "spread": {}}
        for key in rows[0]:
            vals = [r.get(key) for r in rows]
            if key == "step" or not all(isinstance(v, (int, float)) for v in vals):
                continue
            point[key] = sum(vals) / len(vals)
            point["spread"][key] = max(vals) - min(vals)
        out.append(point)
    return out


def same_settings(a: Mapping, b: Mapping, ignore: Sequence[str] = ("device",)) -> bool:
    """Whether two runs' ``config`` dicts agree on every key outside ``ignore`` (the same benchmark run)."""
    return {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}


def merge_results(results: dict, others: Sequence[str | os.PathLike], order: Sequence[str],
                  ignore: Sequence[str] = ("device",), legacy: Mapping | None = None) -> None:
    """Add the methods of earlier result JSONs run with the same ``config`` (keys in ``ignore`` aside), then sort
    the methods by ``order`` (base method names; ``reed:x`` sorts with ``reed``). ``legacy``: the values of
    settings that an earlier JSON predates (what the script did before the option existed)."""
    for other in others:
        prev = json.loads(Path(other).read_text())
        if not same_settings({**(legacy or {}), **prev["config"]}, results["config"], ignore):
            raise SystemExit(f"{other}: run with different settings; cannot merge")
        if "reference" in prev:
            results.setdefault("reference", prev["reference"])
        for m, r in prev["methods"].items():
            results["methods"].setdefault(m, r)
    names = sorted(results["methods"], key=lambda m: (list(order).index(m.partition(":")[0]), m))
    results["methods"] = {m: results["methods"][m] for m in names}


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


def fresh_dir(path: str | os.PathLike) -> Path:
    """An empty run directory (a previous run's checkpoints would otherwise be resumed)."""
    import shutil

    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    return path


def keep_checkpoint(run_dir: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copy what a released model needs (EMA weights and config) of the run's latest checkpoint to ``dest``."""
    import shutil

    from reed_core import latest_checkpoint

    src = latest_checkpoint(Path(run_dir) / "checkpoints")
    Path(dest).mkdir(parents=True, exist_ok=True)
    for name in ("ema.safetensors", "config.json"):
        shutil.copy2(src / name, Path(dest) / name)


def train_with_evals(trainer, steps: int, eval_at: Sequence[int], evaluate, *, label: str | None = None,
                     deadline: float | None = None, curve: Sequence[dict] = (), seconds: float = 0.0,
                     losses: list[float] | None = None) -> tuple[list[dict], float]:
    """Run ``trainer.train_step`` to ``steps``, timing only the optimizer steps; at each step in ``eval_at`` call
    ``evaluate(trainer)`` (a dict), add ``step`` and the mean denoising loss of the last 50 steps, and collect it.
    ``deadline`` (``time.monotonic()``): stop after the first step (and its evaluation) past it; a resumed run
    passes the ``curve``, ``seconds`` and the (at least last 50) step ``losses`` it had, a list this extends.
    Returns (curve, training seconds)."""
    curve, losses, start = list(curve), [] if losses is None else losses, trainer.step
    while trainer.step < steps and (deadline is None or time.monotonic() < deadline or trainer.step == start):
        t0 = time.perf_counter()
        scalars = trainer.train_step()
        seconds += time.perf_counter() - t0
        losses.append(scalars["denoise"])
        if trainer.step in eval_at:
            row = {"step": trainer.step, **evaluate(trainer), "denoise_loss": sum(losses[-50:]) / len(losses[-50:])}
            curve.append(row)
            print(f"[{label or trainer.model_config.get('method', '?')}] step {trainer.step}: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in row.items() if isinstance(v, float) and k != "denoise_loss"),
                  flush=True)
    return curve, seconds


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
