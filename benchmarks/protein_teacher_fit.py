"""How closely a checkpoint reproduces ProteinMPNN's structure-only profile, on its own training chains and on
held-out ones: ``uv run benchmarks/protein_teacher_fit.py [--checkpoint DIR] [--chains 150]``.

The shipped model is trained to match ProteinMPNN v_48_020's per-residue amino-acid distribution given the backbone
alone (``train --distill``). Both models see every residue masked (one pass each, chains cropped to
``--max-length`` as in training); over the 20 amino acids (X dropped and the rest renormalised) it reports each
model's argmax recovery of the native residue, how often the two argmaxes agree, KL(ProteinMPNN || model) and
both perplexities of the native sequence. A model that matches the teacher on its training chains but not on
held-out ones over-fits (more structures would help); one that misses it on its training chains as well is
under-trained (more optimisation would)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, write_json  # noqa: E402
from reed_core.cli import HelpFormatter  # noqa: E402
from reed_protein.constants import MASK_INDEX, MPNN_NOISE_LEVELS, X_INDEX  # noqa: E402
from reed_protein.data import ChainSet  # noqa: E402
from reed_protein.loading import default_checkpoint, load_model  # noqa: E402
from reed_protein.mpnn import load_proteinmpnn  # noqa: E402
from reed_protein.presets import train_ids  # noqa: E402

KEYS = ("model_recovery", "teacher_recovery", "argmax_agreement", "kl", "model_perplexity", "teacher_perplexity")


def fit_stats(lp_model: torch.Tensor, lp_teacher: torch.Tensor, S: torch.Tensor, scored: torch.Tensor) -> dict:
    """Sums over the ``scored`` residues (B,L) of two models' log-probabilities (B,L,21) against the native ``S``:
    each on the 20 amino acids (X dropped, renormalised). Returns sums and the residue count ``n``."""
    lp_m, lp_t = lp_model[..., :X_INDEX].log_softmax(-1), lp_teacher[..., :X_INDEX].log_softmax(-1)
    w = (scored & (S != X_INDEX)).float()
    native = S.clamp_max(X_INDEX - 1)[..., None]
    a_m, a_t = lp_m.argmax(-1), lp_t.argmax(-1)
    return {"model_recovery": float(((a_m == S) * w).sum()), "teacher_recovery": float(((a_t == S) * w).sum()),
            "argmax_agreement": float(((a_m == a_t) * w).sum()),
            "kl": float(((lp_t.exp() * (lp_t - lp_m)).sum(-1) * w).sum()),
            "model_nll": float((-lp_m.gather(-1, native)[..., 0] * w).sum()),
            "teacher_nll": float((-lp_t.gather(-1, native)[..., 0] * w).sum()), "n": float(w.sum())}


def summarise(total: dict) -> dict:
    n = max(total["n"], 1.0)
    return {"model_recovery": 100 * total["model_recovery"] / n, "teacher_recovery": 100 * total["teacher_recovery"] / n,
            "argmax_agreement": 100 * total["argmax_agreement"] / n, "kl": total["kl"] / n,
            "model_perplexity": float(np.exp(total["model_nll"] / n)),
            "teacher_perplexity": float(np.exp(total["teacher_nll"] / n)), "residues": int(total["n"])}


@torch.no_grad()
def measure(model, teacher, chains: ChainSet, ids: np.ndarray, max_length: int, batch_size: int = 8) -> dict:
    total: dict[str, float] = {}
    for lo in range(0, len(ids), batch_size):
        x = chains.batch(ids[lo:lo + batch_size], max_length)
        lp_m = F.log_softmax(model.decode(model.encode(x), torch.full_like(x.S, MASK_INDEX)).prediction.float(), -1)
        lp_t = teacher.unconditional_probs(x.X.float(), x.mask.float(), x.residue_idx, x.chain_idx).float()
        for k, v in fit_stats(lp_m, lp_t, x.S, x.mask).items():
            total[k] = total.get(k, 0.0) + v
    return {**summarise(total), "chains": len(ids)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the shipped REED model)")
    p.add_argument("--chains", type=int, default=150, help="random chains drawn from train and valid (test and "
                                                           "ts50 are used whole)")
    p.add_argument("--max-length", type=int, default=256, help="crop length (training's)")
    p.add_argument("--teacher-noise", choices=MPNN_NOISE_LEVELS, default="020", help="ProteinMPNN weights v_48_<noise>")
    p.add_argument("--seed", type=int, default=0, help="which train / valid chains")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--out", default="benchmarks/results/protein_teacher_fit.json")
    args = p.parse_args(argv)
    if args.chains < 1:
        p.error("--chains must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    chains = ChainSet()
    model = load_model(args.checkpoint or default_checkpoint()).eval()
    teacher = load_proteinmpnn(noise=args.teacher_noise).eval()
    rng = np.random.default_rng(args.seed)
    train, valid = train_ids(chains), chains.split("valid")
    sets = {"train": rng.choice(train, min(args.chains, len(train)), replace=False),
            "valid": rng.choice(valid, min(args.chains, len(valid)), replace=False),
            "test": chains.split("test"), "ts50": chains.split("ts50")}
    result = {"checkpoint": str(args.checkpoint or "shipped"), "teacher": f"v_48_{args.teacher_noise}",
              "max_length": args.max_length, "seed": args.seed, "splits": {}}
    for name, ids in sets.items():
        result["splits"][name] = measure(model, teacher, chains, np.sort(ids), args.max_length)
        print(name, {k: round(v, 3) for k, v in result["splits"][name].items()}, flush=True)
    print(format_table(["split", "chains", "model argmax recovery %", "teacher argmax recovery %", "argmax agreement %",
                        "KL(teacher || model) nats", "model ppl", "teacher ppl"],
                       [[s, r["chains"], *[r[k] for k in KEYS]] for s, r in result["splits"].items()]))
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
