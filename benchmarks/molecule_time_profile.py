"""Where a molecule denoiser's error lies along diffusion time:
``uv run benchmarks/molecule_time_profile.py [--checkpoint DIR ...] [--molecules 512] [--times 20]``.

For each t of a grid, on the same validation molecules with the same noise for every checkpoint (torch only: from
the compact pack with ``--pack``): the RMSE of the x0 position prediction (Å) and the cross-entropy (nats) of the
atom-type, charge and bond predictions, each beside a reference that uses no network:

* positions: the linear least-squares estimate of x0 from x_t alone (x0 ~ isotropic Gaussian with the data's
  per-coordinate variance): sqrt(abar) s2 / (abar s2 + 1 - abar) x_t, RMSE sqrt(s2 (1 - abar) / (abar s2 + 1 - abar));
* categories: the per-token Bayes posterior p(x0 | that token of x_t) under the empirical marginal, which is the
  marginal itself at t = 1 (a model that does worse there has not learned the high-noise end).

Also the loss weight w(t) and each time bin's share of the training objective (uniform t, the weighted terms): the
part of the gradient budget that each region of t receives. The table flags where the model is worse than its
reference.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, write_json  # noqa: E402
from reed_core.checkpoint import load_config  # noqa: E402
from reed_core.cli import HelpFormatter  # noqa: E402
from reed_molecule.loading import default_checkpoint, load_model  # noqa: E402
from reed_molecule.presets import validation_molecules  # noqa: E402
from reed_molecule.process import MolecularDiffusion  # noqa: E402

CATEGORIES = ("atoms", "charges", "bonds")


def time_grid(n: int) -> np.ndarray:
    """Midpoints of ``n`` equal bins of [0, 1]."""
    return (np.arange(n) + 0.5) / n


def bayes_token_ce(x0: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """-log p(x0 | x_t) per token for q(x_t | x0) = abar onehot(x0) + (1 - abar) prior and x0 ~ prior: the best
    prediction of each token from its own noisy value alone. ``abar`` broadcasts against ``x0``."""
    k = prior.shape[0]
    a = abar[..., None]
    like = a * F.one_hot(x_t, k).float() + (1 - a) * prior[x_t][..., None]  # q(x_t | x0 = k), over k
    post = like * prior
    post = post / post.sum(-1, keepdim=True)
    return -post.gather(-1, x0[..., None]).squeeze(-1).clamp_min(1e-12).log()


def _masked_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-molecule mean over the weighted entries (as the training loss averages), (B,)."""
    return (values * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1.0)


@torch.no_grad()
def profile(model, process: MolecularDiffusion, batches: list, times: np.ndarray, seed: int) -> list[dict]:
    """One row per time: the model's and the references' errors, averaged over molecules."""
    rows = []
    pos_var = float(np.mean([((x0.pos ** 2).sum(-1) * x0.mask).sum().item() / (3 * x0.mask.sum().item())
                             for x0 in batches]))
    for k, tv in enumerate(times):
        t1 = torch.tensor([float(tv)])
        a, weight = float(process.abar(t1)[0]), float(process.loss_weight(t1)[0])
        lin = (a ** 0.5) * pos_var / (a * pos_var + 1 - a)  # the linear least-squares factor x0 ~ lin * x_t
        sums: dict[str, float] = {}
        count = 0
        for b, x0 in enumerate(batches):
            t = t1.expand(x0.batch_size)
            c = process.corrupt(x0, t, generator=torch.Generator().manual_seed(seed + 1000 * b + k))
            pred = model(c.x_t, t, None).prediction
            terms = process.loss_terms(pred, c)
            m, pm = x0.mask.float(), x0.pair_mask.float()
            abar = process.abar(t)
            lin_mse = _masked_mean(((lin * c.x_t.pos - x0.pos) ** 2).sum(-1) / 3, m)
            row = {"pos_mse": terms["pos"], "pos_mse_ref": lin_mse, "loss": process.loss(pred, c)}
            for name in CATEGORIES:
                w = pm if name == "bonds" else m
                ref = bayes_token_ce(getattr(x0, name), getattr(c.x_t, name),
                                     abar.reshape(-1, *([1] * (w.dim() - 1))), process.prior(name, x0.atoms))
                row[f"{name}_ce"], row[f"{name}_ce_ref"] = terms[name], _masked_mean(ref, w)
            for key, v in row.items():
                sums[key] = sums.get(key, 0.0) + float(v.sum())
            count += x0.batch_size
        mean = {key: v / count for key, v in sums.items()}
        out = {"t": float(tv), "abar": a, "loss_weight": weight, "pos_rmse": mean["pos_mse"] ** 0.5, "pos_rmse_ref": mean["pos_mse_ref"] ** 0.5,
               "weighted_loss": mean["loss"]}
        for name in CATEGORIES:
            out[f"{name}_ce"], out[f"{name}_ce_ref"] = mean[f"{name}_ce"], mean[f"{name}_ce_ref"]
        rows.append(out)
    total = sum(r["weighted_loss"] for r in rows)
    for r in rows:
        r["loss_share"] = r["weighted_loss"] / total if total > 0 else None
    return rows


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    keys = [("pos_rmse", "position RMSE (Å)"), ("atoms_ce", "atom-type CE"), ("charges_ce", "charge CE"),
            ("bonds_ce", "bond CE")]
    for i, entry in enumerate(result["checkpoints"]):
        t = [r["t"] for r in entry["rows"]]
        for ax, (key, label) in zip(axes, keys, strict=True):
            ax.plot(t, [r[key] for r in entry["rows"]], marker="o", ms=3, label=entry["name"])
            if i == 0:
                ax.plot(t, [r[f"{key}_ref"] for r in entry["rows"]], "k--", lw=1, label="reference (no network)")
            ax.set(xlabel="t", title=label)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", nargs="+", default=None, help="checkpoint directories (default: the shipped model)")
    p.add_argument("--molecules", type=int, default=512, help="validation molecules (each at every time)")
    p.add_argument("--times", type=int, default=20, help="time bins: t at the midpoints of this many equal bins")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="which molecules and which noise")
    p.add_argument("--pack", nargs="?", const="default", default=None,
                   help="read QM9 from the compact training pack (torch/numpy only; default path if given bare)")
    p.add_argument("--cache", default=None, help="QM9 cache directory (the RDKit build)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default="benchmarks/results/molecule_time_profile.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.pack == "default":
        from reed_molecule.pack import default_pack_path

        args.pack = str(default_pack_path())
    start = time.perf_counter()
    batches = validation_molecules(args.cache, args.molecules, args.batch_size, args.seed, pack=args.pack)
    times = time_grid(args.times)
    paths = [Path(c) for c in args.checkpoint] if args.checkpoint else [default_checkpoint()]
    result = {"molecules": sum(b.batch_size for b in batches), "seed": args.seed, "times": times.tolist(),
              "checkpoints": []}
    for path in paths:
        loaded = load_model(path)
        rows = profile(loaded.model, loaded.process, batches, times, args.seed)
        name = path.name if path.name not in ("best", "") else f"{path.parent.name}/{path.name}"
        result["checkpoints"].append({"checkpoint": str(path), "name": name, "train_step": load_config(path).get("step"),
                                      "rows": rows})
        header = ["t", "w(t)", "share %", "pos RMSE Å", "(ref)", "atoms CE", "(ref)", "charges CE", "(ref)",
                  "bonds CE", "(ref)"]

        def cell(r, key):
            flag = " !" if r[key] > r[f"{key}_ref"] else ""
            return f"{r[key]:.4f}{flag}"

        print(f"[{name}] step {result['checkpoints'][-1]['train_step']}, {result['molecules']} validation molecules "
              "(! = worse than the reference that uses no network)")
        print(format_table(header, [[f"{r['t']:.3f}", f"{r['loss_weight']:.3f}", f"{100 * r['loss_share']:.1f}",
                                     cell(r, "pos_rmse"), f"{r['pos_rmse_ref']:.4f}",
                                     cell(r, "atoms_ce"), f"{r['atoms_ce_ref']:.4f}",
                                     cell(r, "charges_ce"), f"{r['charges_ce_ref']:.4f}",
                                     cell(r, "bonds_ce"), f"{r['bonds_ce_ref']:.4f}"] for r in rows]))
        write_json(result, args.out)
    result["seconds"] = round(time.perf_counter() - start, 1)
    write_json(result, args.out)
    plot(result, Path(args.out).with_suffix(".png"))
    return result


if __name__ == "__main__":
    main()
