"""Vanilla vs REPA-style vs REED for inverse folding: ``uv run benchmarks/protein_inverse_folding.py``.

Same code path, seed, initial weights, data order (cluster-balanced) and step budget for all three. At several
checkpoints (EMA weights): sequence recovery of sampled designs (temperature 0.1) on the held-out test split and
on TS50 alone, perplexity of the native sequence; training steps/s; design latency of 8 sequences for a
100-residue chain. Prints a table and the speed-up (steps REED needs to reach vanilla's final recovery); writes
JSON and a PNG. Methods: vanilla, REPA-style (ProteinMPNN's node states), REED (all latents with ProteinMPNN's
teachers, curriculum) and REED with the in-project teachers (``reed:inproject``); ProteinMPNN v_48_020 itself is
the reference row. ``hybrid`` (opt-in) is REED trained as the variational hybrid (its per-residue latents also
condition the decoder w.p. A_t), evaluated twice from the same run: designing on its own projected z
(``hybrid``) and with no z (``hybrid:none``). Teacher features are cached once per training chain in ``--cache-dir`` (shared by all methods
and later runs; the first run spends most of its time there: ProteinMPNN's encoder over 680k residues). Default:
tiny preset, 128-residue crops on CPU; ``--full``: the paper size for a GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    format_table,
    fresh_dir,
    keep_checkpoint,
    merge_results,
    plot_curves,
    report_speedups,
    train_with_evals,
    write_json,
)
from reed_core import METHODS  # noqa: E402
from reed_core.cli import HelpFormatter, add_lr_schedule_arguments  # noqa: E402
from reed_protein.constants import CROPS, PAIRS_PER_TOKEN  # noqa: E402
from reed_protein.data import ChainSet  # noqa: E402
from reed_protein.evaluation import evaluate  # noqa: E402
from reed_protein.presets import default_cache_dir, protein_trainer, teacher_preset  # noqa: E402
from reed_protein.sampler import design_batch  # noqa: E402


def design_latency(model, chains: ChainSet, device: str, steps: int, hybrid=None, repeats: int = 3) -> float:
    """Seconds to design 8 sequences for one 100-residue test chain (encoder once, ``steps`` decoder passes; a
    ``hybrid`` objective: on the model's own z)."""
    ts = chains.split("test")
    lengths = np.diff(chains.offsets)[ts]
    i = int(ts[np.argmin(np.abs(lengths - 100))])
    x = chains.batch([i] * 8, max_length=100).to(device)
    times = []
    for r in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        design_batch(model, x, num_steps=steps, generator=torch.Generator(device=device).manual_seed(r),
                     **({"specs": hybrid.specs, "projectors": hybrid.projectors, "latents": "self"} if hybrid else {}))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if r:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


ORDER = (*METHODS, "hybrid")
# what the script did before these options existed (result JSONs written then lack the keys)
LEGACY = {"lr_decay": "constant", "lr_final": 0.0, "backbone_noise": 0.0, "crop": "fixed"}
NONE_Z = "nonez_"  # a hybrid's metrics when designing with no z (its row "hybrid:none")


def evaluate_checkpoint(trainer, chains: ChainSet, test, ts50, args) -> dict:
    """Recovery / perplexity of the EMA weights on test and TS50; a hybrid model also with no z (keys NONE_Z...)."""
    model = trainer.ema_model()
    hybrid = any(s.condition for s in trainer.objective.specs)
    row = {}
    for mode in ("self", "none") if hybrid else ("none",):
        kw = {"num_steps": args.sample_steps, "seed": args.seed, "device": args.device, "latents": mode,
              "specs": trainer.objective.specs, "projectors": trainer.objective.projectors}
        te, t5 = evaluate(model, chains, test, **kw), evaluate(model, chains, ts50, **kw)
        prefix = NONE_Z if hybrid and mode == "none" else ""
        row |= {prefix + "test_recovery": te["recovery"], prefix + "test_perplexity": te["perplexity"],
                prefix + "ts50_recovery": t5["recovery"], prefix + "ts50_perplexity": t5["perplexity"]}
    return row


def proteinmpnn_reference(chains: ChainSet, test, ts50, args) -> dict:
    """ProteinMPNN v_48_020 on the same chains, temperature 0.1, one design per chain, the same recovery."""
    from reed_protein.mpnn import proteinmpnn_recovery

    t0 = time.perf_counter()
    rec = {split: proteinmpnn_recovery(chains, ids, temperature=0.1, seed=args.seed, device=args.device)
           for split, ids in (("test_recovery", test), ("ts50_recovery", ts50))}
    print(f"[reference] ProteinMPNN v_48_020: test {rec['test_recovery']:.2f} %, TS50 {rec['ts50_recovery']:.2f} %",
          flush=True)
    return {"proteinmpnn_v_48_020": {**rec, "seconds": time.perf_counter() - t0}}


def report(results: dict, out: Path) -> None:
    """Print the table and speed-ups of ``results``, write JSON and PNG next to ``out``."""
    header = ["method", "step", "test recov %", "test ppl", "TS50 recov %", "TS50 ppl", "loss"]
    rows = [[m, c["step"], c["test_recovery"], c["test_perplexity"], c["ts50_recovery"], c["ts50_perplexity"],
             c["denoise_loss"]] for m, r in results["methods"].items() for c in r["curve"]]
    print()
    print(format_table(header, rows))
    for name, ref in results.get("reference", {}).items():
        print(f"reference {name}: test recov {ref['test_recovery']:.2f} %, TS50 recov {ref['ts50_recovery']:.2f} % "
              "(its own sampler, temperature 0.1, one design per chain)")
    print()
    print(format_table(["method", "steps/s", "8 designs x 100 res (s)", "params"],
                       [[m, r["steps_per_s"], r["design_latency_s"], r["params"]] for m, r in results["methods"].items()]))
    report_speedups(results, ("test_recovery", "ts50_recovery"))
    write_json(results, out.with_suffix(".json"))
    keys = ("test_recovery", "ts50_recovery", "test_perplexity")
    curves = {m: {k: [(c["step"], c[k]) for c in r["curve"]] for k in keys} for m, r in results["methods"].items()}
    plot_curves(curves, keys, out.with_suffix(".png"), f"inverse folding, {results['config']['preset']} preset, batch {results['config']['batch_size']}")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per method (default 240; --full 20000)")
    p.add_argument("--batch-size", type=int, default=None, help="chains per step (default 8; --full 32)")
    p.add_argument("--preset", default=None, help="model preset (default tiny; --full paper)")
    p.add_argument("--max-length", type=int, default=None, help="training crop length (default 128; --full 256)")
    p.add_argument("--teachers", choices=("mpnn", "inproject"), default="mpnn",
                   help="pair/structure teachers of a method named without one (a method may name its own: reed:inproject)")
    p.add_argument("--evals", type=int, default=8, help="evaluation checkpoints per method")
    p.add_argument("--sample-steps", type=int, default=20, help="sampler steps for recovery and latency")
    p.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N chains of test and of TS50 (default all; for quick checks)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    add_lr_schedule_arguments(p)
    p.add_argument("--backbone-noise", type=float, default=0.0, help="Gaussian backbone noise in training (Å)")
    p.add_argument("--crop", choices=CROPS, default="random",
                   help="training crop windows: drawn per step, or fixed per chain (the tables before this option)")
    p.add_argument("--seed", type=int, default=0, help="seed shared by all methods")
    p.add_argument("--methods", default="vanilla,repa,reed,reed:inproject",
                   help="comma-separated methods (vanilla, repa, reed, hybrid), each optionally :TEACHERS (mpnn, inproject)")
    p.add_argument("--pairs-per-token", type=int, default=PAIRS_PER_TOKEN,
                   help="random kNN edges per residue the pair latent aligns each step (0: all)")
    p.add_argument("--cache-dir", default=str(default_cache_dir()), help="cached teacher features (shared)")
    p.add_argument("--full", action="store_true", help="paper-size setting (GPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device")
    p.add_argument("--out", default="benchmarks/results/protein_inverse_folding", help="output prefix (.json, .png)")
    p.add_argument("--keep-checkpoint", default=None, help="copy the final REED checkpoint here")
    p.add_argument("--merge", nargs="*", default=(), help="result JSONs of other methods run with the same settings")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the ProteinMPNN v_48_020 reference row (needs reed-protein[mpnn])")
    p.add_argument("--report", default=None, help="re-print table and speed-ups of an earlier result JSON; no training")
    args = p.parse_args(argv)
    if args.report:
        import json

        results = json.loads(Path(args.report).read_text())
        report(results, Path(args.report).with_suffix(""))
        return results
    steps = args.steps or (20_000 if args.full else 240)
    batch = args.batch_size or (32 if args.full else 8)
    preset = args.preset or ("paper" if args.full else "tiny")
    args.max_length = args.max_length or (256 if args.full else 128)
    teachers = args.teachers
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        base, _, t = m.partition(":")
        if base not in ORDER or t not in ("", "mpnn", "inproject"):
            raise SystemExit(f"--methods: {m!r} is not METHOD[:TEACHERS] with METHOD in {sorted(ORDER)}, "
                             "TEACHERS in mpnn, inproject")
    chains = ChainSet()
    test = chains.split("test")
    if args.test_limit:
        test = test[: args.test_limit]
    ts50 = chains.split("ts50")
    if args.test_limit:
        ts50 = ts50[: args.test_limit]
    eval_at = sorted({max(1, round(steps * (k + 1) / args.evals)) for k in range(args.evals)})
    results = {"config": {"steps": steps, "batch_size": batch, "preset": preset, "max_length": args.max_length,
                          "sample_steps": args.sample_steps, "teachers": teachers, "lr": args.lr, "lr_decay": args.lr_decay, "lr_final": args.lr_final,
                          "backbone_noise": args.backbone_noise, "crop": args.crop, "seed": args.seed, "device": args.device,
                          "pairs_per_token": args.pairs_per_token or None,
                          "test_chains": len(test), "ts50_chains": len(ts50), "eval_at": eval_at}, "methods": {}}
    out = Path(args.out)
    if not args.no_reference:
        results["reference"] = proteinmpnn_reference(chains, test, ts50, args)
    # REED first: its pass over the training chains caches every teacher of a set at once (ProteinMPNN's two slots
    # in one encoder run), so REPA-style then reads the structure slot from the cache. Same seeds/data for all.
    for method in sorted(methods, key=lambda m: not m.startswith(("reed", "hybrid"))):
        run_dir = fresh_dir(out.parent / f"{out.name}_runs" / method.replace(":", "_"))
        base, _, own = method.partition(":")
        hybrid = base == "hybrid"
        trainer = protein_trainer("reed" if hybrid else base, chains, run_dir, model=preset, steps=steps,
                                  batch_size=batch, max_length=args.max_length, lr=args.lr, seed=args.seed,
                                  lr_decay=args.lr_decay, lr_final=args.lr_final, backbone_noise=args.backbone_noise,
                                  crop=args.crop,
                                  teachers=own or teachers, preset=teacher_preset(
                                      own or teachers, True, args.pairs_per_token or None, hybrid=hybrid),
                                  progress=False, device=args.device, cache_dir=args.cache_dir)
        print(f"[{method}] training {steps} steps (batch {batch}, preset {preset}) ...", flush=True)
        curve, train_seconds = train_with_evals(
            trainer, steps, eval_at, lambda tr: evaluate_checkpoint(tr, chains, test, ts50, args), label=method)
        trainer.save()
        latency = design_latency(trainer.ema_model(), chains, args.device, args.sample_steps, trainer.objective if hybrid else None)
        if method == "reed" and args.keep_checkpoint:
            keep_checkpoint(run_dir, args.keep_checkpoint)
        stats = {"steps_per_s": steps / train_seconds, "train_seconds": train_seconds, "design_latency_s": latency,
                 "params": sum(q.numel() for q in trainer.model.parameters())}
        results["methods"][method] = {"curve": [{k: v for k, v in c.items() if not k.startswith(NONE_Z)} for c in curve],
                                      **stats}
        if hybrid:  # the same run designing with no z; latency above is with its own z
            none = [{k.removeprefix(NONE_Z): v for k, v in c.items() if k.startswith(NONE_Z) or k in ("step", "denoise_loss")}
                    for c in curve]
            results["methods"][f"hybrid:none{':' + own if own else ''}"] = {"curve": none, **stats}
    merge_results(results, args.merge, order=ORDER, legacy=LEGACY)
    report(results, out)
    return results


if __name__ == "__main__":
    main()
