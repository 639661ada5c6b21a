"""What ``reed_core.allocator.tune_malloc`` buys: each command run as a fresh process with glibc's default
allocator settings (``REED_MALLOC=default``), tuned (the default) and tuned with torch's transparent huge pages on
top (``THP_MEM_ALLOC_ENABLE=1``: blocks of 2 MiB or more aligned to 2 MiB and advised ``MADV_HUGEPAGE``, the one
lever left for blocks above glibc's 32 MiB mmap cap; measured, not adopted), side by side:
``uv run --locked benchmarks/allocator.py [--repeats 2] [--commands eval,design,train,sample,image]``.

The commands, each what a user runs: ``reed-protein eval --splits ts50`` (the shipped model, 50 chains),
``reed-protein design`` (8 designs of a ~100-residue test chain), ``reed-protein train`` (10 steps of the shipped
model at batch 8, vanilla; its median steps/s from ``metrics.jsonl`` too), ``reed-molecule sample -n 100`` and
``reed-image sample --num 64``. Runs alternate between the settings (ABC, then CBA: drift on a shared machine
falls on all), every run timed: wall clock, the process's own user and system CPU seconds, peak RSS and minor
page faults (``wait4``). The outputs of all settings are compared where the command is deterministic (eval's
numbers, designs, molecules): the allocator must not change a result. Every number printed is measured here."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, run_process, write_json  # noqa: E402
from reed_core.allocator import ENV  # noqa: E402
from reed_core.cli import HelpFormatter  # noqa: E402

THP_ENV = "THP_MEM_ALLOC_ENABLE"  # torch's own switch (c10/core/alloc_cpu.cpp), read at its first allocation
SETTINGS = {"default": {ENV: "default"}, "tuned": {}, "thp": {THP_ENV: "1"}}  # what each adds to the environment
COMMANDS = ("eval", "design", "train", "sample", "image")


def command(name: str, bindir: Path, out: Path, pdb: Path) -> tuple[list[str], Path | None]:
    """The argv of ``name`` writing under ``out``, and the file whose content both settings must agree on."""
    def tool(t: str) -> str:
        return shutil.which(t, path=str(bindir)) or t

    if name == "eval":
        return [tool("reed-protein"), "eval", "--splits", "ts50", "--json", str(out / "eval.json")], out / "eval.json"
    if name == "design":
        return [tool("reed-protein"), "design", str(pdb), "--out", str(out / "d.fasta"), "--num-seqs", "8",
                "--temperature", "0.1", "--seed", "0", "--quiet"], out / "d.fasta"
    if name == "train":
        return [tool("reed-protein"), "train", "--init", "shipped", "--method", "vanilla", "--steps", "10",
                "--batch-size", "8", "--eval-every", "1000", "--eval-chains", "4", "--seed", "0",
                "--out", str(out / "run")], None
    if name == "sample":
        return [tool("reed-molecule"), "sample", "-n", "100", "--seed", "0", "--out", str(out / "m.sdf")], out / "m.sdf"
    if name == "image":
        return [tool("reed-image"), "sample", "--num", "64", "--seed", "0", "--npz", str(out / "i.npz")], None
    raise ValueError(f"unknown command {name!r}; expected one of {', '.join(COMMANDS)}")


def train_steps_per_s(run: Path) -> float | None:
    """Median steps/s of a training run's steps 3 and later (``metrics.jsonl``)."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rates = [r["steps_per_s"] for r in rows if r.get("step", 0) >= 3 and "steps_per_s" in r]
    return statistics.median(rates) if rates else None


def per_setting(med: dict[str, dict[str, float]], key: str, fmt: str) -> str:
    """One table cell: ``key`` of every setting's medians, in ``SETTINGS`` order, joined by " / "."""
    return " / ".join(format(med[s][key], fmt) for s in SETTINGS)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--repeats", type=int, default=2, help="timed runs per command and setting")
    p.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated, of " + ", ".join(COMMANDS))
    p.add_argument("--out", default="benchmarks/results/allocator.json")
    args = p.parse_args(argv)
    names = [c for c in args.commands.split(",") if c]
    if args.repeats < 1 or not names or (bad := set(names) - set(COMMANDS)):
        p.error(f"--repeats must be >= 1 and --commands name some of {', '.join(COMMANDS)}"
                + (f" (unknown: {', '.join(sorted(bad))})" if names and bad else ""))
    bindir = Path(sys.executable).parent
    runs: dict[str, dict[str, list[dict]]] = {c: {s: [] for s in SETTINGS} for c in names}
    same_output: dict[str, bool | None] = {c: None for c in names}  # None: a command whose output varies
    with tempfile.TemporaryDirectory() as tmp:
        pdb = Path(tmp) / "chain.pdb"
        if "design" in names:
            from protein_design_cli import write_chain_pdb

            write_chain_pdb(pdb)
        for r in range(args.repeats):
            order = list(SETTINGS) if r % 2 == 0 else list(SETTINGS)[::-1]
            for name in names:
                outputs = {}
                for setting in order:
                    out = Path(tmp) / f"{name}_{r}_{setting}"
                    out.mkdir()
                    cmd, product = command(name, bindir, out, pdb)
                    env = {k: v for k, v in os.environ.items() if k not in (ENV, THP_ENV)} | SETTINGS[setting]
                    usage = run_process(cmd, env)
                    if usage.code != 0:
                        raise SystemExit(f"{name} ({setting}) exited {usage.code}: {' '.join(cmd)}")
                    row = usage._asdict()
                    if name == "train":
                        row["steps_per_s"] = train_steps_per_s(out / "run")
                    runs[name][setting].append(row)
                    if product is not None:
                        outputs[setting] = product.read_bytes()
                    print(f"  {name:6s} {setting:7s} run {r + 1}: {usage.wall_s:6.1f} s wall, user "
                          f"{usage.user_s:6.1f} s, sys {usage.sys_s:6.1f} s, {usage.minor_faults:8d} faults, "
                          f"{usage.peak_rss_mb:6.0f} MB"
                          + (f", {row['steps_per_s']:.3f} steps/s" if row.get("steps_per_s") else ""), flush=True)
                if outputs:
                    same_output[name] = same_output[name] is not False and len(set(outputs.values())) == 1
    table, summary = [], {}
    for name in names:
        med = {s: {k: statistics.median(row[k] for row in runs[name][s])
                   for k in ("wall_s", "user_s", "sys_s", "peak_rss_mb", "minor_faults")} for s in SETTINGS}
        summary[name] = {"median": med, "speedup": med["default"]["wall_s"] / med["tuned"]["wall_s"],
                         "speedup_huge_pages": med["tuned"]["wall_s"] / med["thp"]["wall_s"],
                         "same_output": same_output[name]}
        if name == "train":
            rate = {s: statistics.median(row["steps_per_s"] for row in runs[name][s]) for s in SETTINGS}
            summary[name]["steps_per_s"] = rate
        table.append([name, per_setting(med, "wall_s", ".2f"), f"{summary[name]['speedup']:.2f}x",
                      f"{summary[name]['speedup_huge_pages']:.2f}x", per_setting(med, "sys_s", ".1f"),
                      per_setting(med, "user_s", ".1f"), per_setting(med, "minor_faults", ".0f"),
                      per_setting(med, "peak_rss_mb", ".0f"),
                      {True: "yes", False: "NO", None: "-"}[summary[name]["same_output"]]])
    order = " / ".join(SETTINGS)
    print(format_table(["command", f"wall s ({order})", "speed-up", "huge pages on top", f"sys s ({order})",
                        f"user s ({order})", f"minor faults ({order})", f"peak MB ({order})", "same output"], table))
    if "train" in summary:
        rate = summary["train"]["steps_per_s"]
        print(f"train steps/s ({order}): " + " / ".join(f"{rate[s]:.3f}" for s in SETTINGS)
              + f" ({rate['tuned'] / rate['default']:.2f}x)")
    result = {"cpus": os.cpu_count(), "repeats": args.repeats, "runs": runs, "summary": summary}
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
