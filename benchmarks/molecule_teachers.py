"""What the molecule teachers know: ``uv run benchmarks/molecule_teachers.py``.

The 9 QM9 DFT properties of the EDM test split predicted from each teacher, as mean absolute errors in the
dataset's units next to the baseline that predicts the training mean:

* ``encoder3d head``: the pretrained 3-D teacher's own property head (it was trained on these targets, on the
  training split only; ``scripts/train_encoder3d.py``);
* ``<teacher> probe``: a ridge-regression probe on the teacher's pooled features (``graph2d``: the 2-D graph
  view; ``encoder3d``: its per-atom features averaged over atoms, the latent REED aligns), fitted on training
  molecules, its ridge strength picked on validation molecules;
* ``encoder3d (random init) probe``: the same architecture with random weights, so the probe's gain over it is
  what pretraining bought.

Prints a table (MAE per property, and the mean over properties of MAE / baseline MAE) and writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, write_json  # noqa: E402
from reed_core.cli import HelpFormatter  # noqa: E402
from reed_molecule.data import QM9Dataset  # noqa: E402
from reed_molecule.qm9 import PROPERTIES, load_raw  # noqa: E402
from reed_molecule.teachers import Encoder3D, Encoder3DTeacher, _batch_graph2d  # noqa: E402

RIDGE = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


@torch.no_grad()
def encoder_features(encoder: Encoder3D, ds: QM9Dataset, rows: np.ndarray, batch: int = 256
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(atom-mean features (n, D), property-head outputs (n, P)) of the molecules at ``rows`` of ``ds``."""
    feats, heads = [], []
    for lo in range(0, len(rows), batch):
        mol = ds.collate(rows[lo:lo + batch])
        h, _, props = encoder(mol)
        m = mol.mask.to(h.dtype)[..., None]
        feats.append(((h * m).sum(1) / m.sum(1).clamp_min(1.0)).numpy())
        heads.append(props.numpy())
    return np.concatenate(feats), np.concatenate(heads)


def graph2d_features(ds: QM9Dataset, rows: np.ndarray, batch: int = 512) -> np.ndarray:
    """Raw 2-D features: from the training pack when the dataset has one, else with RDKit."""
    if ds.graph2d is not None:
        return ds.graph2d(ds.ids[rows])
    return np.concatenate([_batch_graph2d(ds.collate(rows[lo:lo + batch])) for lo in range(0, len(rows), batch)])


def ridge_probe(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, x_test: np.ndarray
                ) -> tuple[np.ndarray, float]:
    """Test predictions of a ridge regression (features and targets standardised on the fit set, an intercept),
    its strength the one of ``RIDGE`` with the lowest validation MAE; returns (predictions, strength)."""
    mu, sd = x_fit.mean(0), x_fit.std(0) + 1e-6
    ym, ys = y_fit.mean(0), y_fit.std(0) + 1e-12

    def design(x):
        z = torch.from_numpy(((x - mu) / sd).astype(np.float64))
        return torch.cat([z, torch.ones(len(z), 1, dtype=torch.float64)], 1)

    a, b = design(x_fit), torch.from_numpy((y_fit - ym) / ys)
    gram, rhs = a.T @ a, a.T @ b
    best = None
    for lam in RIDGE:
        reg = lam * len(a) * torch.eye(gram.shape[0], dtype=torch.float64)
        reg[-1, -1] = 0.0  # no penalty on the intercept
        w = torch.linalg.solve(gram + reg, rhs)
        mae = np.abs((design(x_val) @ w).numpy() * ys + ym - y_val).mean(0) / np.abs(y_val - ym).mean(0)
        if best is None or mae.mean() < best[0]:
            best = (mae.mean(), lam, w)
    return (design(x_test) @ best[2]).numpy() * ys + ym, best[1]


def print_table(results: dict) -> None:
    header = ["predictor", *results["properties"], "MAE / baseline"]
    print()
    print(format_table(header, [[name, *(f"{v:.4g}" for v in r["mae"].values()), r["relative_mae"]]
                                for name, r in results["predictors"].items()]))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--fit", type=int, default=20_000, help="training molecules the probes are fitted on")
    p.add_argument("--valid", type=int, default=5_000, help="validation molecules that pick the ridge strength")
    p.add_argument("--test", type=int, default=0, help="test molecules (0: the whole test split)")
    p.add_argument("--pack", default=None, help="a training pack (reed-molecule pack) instead of the RDKit build")
    p.add_argument("--cache", default=None, help="data cache directory")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsets and of the random-init encoder")
    p.add_argument("--out", default="benchmarks/results/molecule_teachers.json", help="output JSON")
    p.add_argument("--report", default=None, help="re-print the table of an earlier result JSON; no computation")
    args = p.parse_args(argv)
    if args.report:
        import json

        results = json.loads(Path(args.report).read_text())
        print_table(results)
        return results
    start = time.perf_counter()
    raw = load_raw(args.cache)["properties"]
    rng = np.random.default_rng(args.seed)
    splits = {}
    for name, n in (("train", args.fit), ("valid", args.valid), ("test", args.test)):
        ds = QM9Dataset(name, args.cache, pack=args.pack)
        rows = np.sort(rng.choice(len(ds), size=min(n, len(ds)), replace=False)) if n else np.arange(len(ds))
        splits[name] = (ds, rows, raw[ds.ids[rows]])
    y_train_all = raw[splits["train"][0].ids]  # the encoder's pretraining standardisation (the whole training split)
    head_mean, head_std = y_train_all.mean(0), y_train_all.std(0) + 1e-8

    pretrained = Encoder3DTeacher().encoder.eval()
    torch.manual_seed(args.seed)
    random_init = Encoder3D().eval()
    features: dict[str, dict[str, np.ndarray]] = {"graph2d": {}, "encoder3d": {}, "encoder3d (random init)": {}}
    head_test = None
    for split, (ds, rows, _) in splits.items():
        print(f"teacher features of {len(rows)} {split} molecules ...", flush=True)
        features["graph2d"][split] = graph2d_features(ds, rows)
        features["encoder3d"][split], head = encoder_features(pretrained, ds, rows)
        features["encoder3d (random init)"][split], _ = encoder_features(random_init, ds, rows)
        if split == "test":
            head_test = head * head_std + head_mean

    y_fit, y_val, y_test = (splits[s][2] for s in ("train", "valid", "test"))
    base_mae = np.abs(y_test - y_fit.mean(0)).mean(0)
    rows_out = {"baseline (training mean)": {"mae": base_mae}, "encoder3d head": {"mae": np.abs(head_test - y_test).mean(0)}}
    for name, f in features.items():
        pred, lam = ridge_probe(f["train"], y_fit, f["valid"], y_val, f["test"])
        rows_out[f"{name} probe"] = {"mae": np.abs(pred - y_test).mean(0), "ridge": lam}
    for r in rows_out.values():
        r["relative_mae"] = float((r["mae"] / base_mae).mean())
        r["mae"] = {k: float(v) for k, v in zip(PROPERTIES, r["mae"], strict=True)}

    results = {"config": {**{k: v for k, v in vars(args).items() if k != "out"},
                          "molecules": {s: len(v[1]) for s, v in splits.items()}},
               "properties": list(PROPERTIES), "predictors": rows_out, "seconds": time.perf_counter() - start}
    print_table(results)
    write_json(results, args.out)
    print(f"wrote {args.out} ({results['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
