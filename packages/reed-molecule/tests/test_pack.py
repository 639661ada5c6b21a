"""The compact training pack equals the RDKit build; training from it needs no RDKit; a time-budgeted run that is
resumed continues the loss curve of an unbroken one."""

import json

import numpy as np
import pytest
import torch

from reed_molecule.cli import main
from reed_molecule.data import QM9Dataset
from reed_molecule.pack import PACK_ARRAYS, PackError, build_pack, read_pack, write_pack
from reed_molecule.presets import molecule_trainer
from reed_molecule.qm9 import valence_ok
from reed_molecule.teachers import _batch_graph2d


@pytest.fixture(scope="module")
def packed(tmp_path_factory, qm9_train):
    rows = qm9_train.ids[:64]
    path = tmp_path_factory.mktemp("pack") / "qm9_pack.npz"
    write_pack(path, build_pack(progress=False, feature_rows=rows))
    return path


def test_pack_round_trip_equals_the_rdkit_build(packed, qm9_train):
    assert packed.stat().st_size < 25e6  # goes along with the repository to a GPU machine
    assert set(read_pack(packed)) == set(PACK_ARRAYS)
    ds = QM9Dataset("train", progress=False, pack=packed)
    assert np.array_equal(ds.ids, qm9_train.ids)  # the same molecules in the same (EDM) order
    for lo in (0, 50_000, len(ds) - 40):
        a, b = ds.collate(np.arange(lo, lo + 40)), qm9_train.collate(np.arange(lo, lo + 40))
        assert torch.equal(a.atoms, b.atoms) and torch.equal(a.charges, b.charges) and torch.equal(a.bonds, b.bonds)
        assert torch.equal(a.mask, b.mask) and (a.pos - b.pos).abs().max() <= 1.01e-3  # 2 x 0.0005 A after centring
    x = qm9_train.collate(np.arange(64))
    assert np.allclose(ds.graph2d(qm9_train.ids[:64]), _batch_graph2d(x), rtol=1e-6, atol=1e-5)
    with pytest.raises(PackError, match="no 2-D features"):
        ds.graph2d(qm9_train.ids[64:66])


def test_every_kept_bond_graph_is_valence_exact(qm9_train):
    rng = np.random.default_rng(0)
    for m in rng.choice(qm9_train.ids, 300, replace=False):
        lo, hi = qm9_train.all.offsets[m], qm9_train.all.offsets[m + 1]
        e = qm9_train.graphs["edges"][qm9_train.graphs["edge_offsets"][m]:qm9_train.graphs["edge_offsets"][m + 1]]
        orders = np.zeros((hi - lo, hi - lo), int)
        orders[e[:, 0], e[:, 1]] = orders[e[:, 1], e[:, 0]] = e[:, 2]
        assert valence_ok(qm9_train.all.atom_types[lo:hi].astype(int), orders, qm9_train.graphs["charges"][lo:hi])
    assert not valence_ok(np.array([1, 0, 0, 0]), np.array([[0, 1, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]),
                          np.zeros(4, int))  # a CH2 with an unbonded H: under-bonded


def test_corrupt_or_missing_pack_is_one_error_line(packed, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    arrays = read_pack(packed)
    arrays["positions"] = arrays["positions"].copy()
    arrays["positions"][0, 0] += 1
    np.savez(bad, **arrays, sha256=np.array("0" * 64))
    old = tmp_path / "old.npz"  # another layout (an array missing), even with a valid checksum
    write_pack(old, {k: v for k, v in read_pack(packed).items() if k != "has_features"})
    for path, msg in ((bad, "checksum mismatch"), (tmp_path / "none.npz", "reed-molecule pack"),
                      (old, "no has_features")):
        assert main(["train", "--pack", str(path), "--steps", "1", "--out", str(tmp_path / "r")]) == 2
        assert msg in capsys.readouterr().err


def test_budgeted_chunks_continue_the_unbroken_loss_curve(packed, tmp_path):
    ds = QM9Dataset("train", progress=False, limit=64, pack=packed)

    def run(out, budgets):
        for budget in budgets:
            trainer = molecule_trainer("reed", ds, out, steps=6, batch_size=8, cache=tmp_path / "cache",
                                       progress=False, device="cpu")
            trainer.fit(time_budget=budget)
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    whole = run(tmp_path / "whole", [None])
    chunked = run(tmp_path / "chunked", [1e-9, 1e-9, None])  # stops after one step twice, then finishes
    assert [r["step"] for r in chunked] == list(range(1, 7))
    for a, b in zip(whole, chunked, strict=True):
        assert a["loss"] == b["loss"] and a["align/graph2d"] == b["align/graph2d"]


def test_fine_tuning_starts_from_the_shipped_weights(packed, tmp_path, capsys):
    from safetensors.torch import load_file

    from reed_molecule.loading import default_checkpoint

    out = tmp_path / "tune"
    argv = ["train", "--pack", str(packed), "--train-limit", "64", "--init", "shipped", "--steps", "1",
            "--batch-size", "4", "--lr", "1e-5", "--cache", str(tmp_path / "cache"), "--out", str(out)]
    assert main([*argv, "--eval-every", "1", "--eval-molecules", "16"]) == 0
    out_text = capsys.readouterr().out
    assert "fine-tuning from" in out_text and "best valid_loss" in out_text
    (record,) = [json.loads(ln) for ln in (out / "validation.jsonl").read_text().splitlines()]
    from reed_molecule.loading import load_model
    from reed_molecule.presets import validation_batches, validation_loss

    best = load_model(out / "best", device="cpu")  # the kept weights score what validation logged, without RDKit
    batches = validation_batches(None, 16, 256, 0, pack=packed)
    assert validation_loss(best.model, best.process, batches, "cpu") == pytest.approx(record["valid_loss"], rel=1e-6)
    shipped = load_file(str(default_checkpoint() / "ema.safetensors"))
    tuned = load_file(str(out / "checkpoints" / "step_00000001" / "model.safetensors"))
    assert tuned.keys() == shipped.keys()
    assert max((tuned[k] - shipped[k]).abs().max().item() for k in shipped) < 1e-3  # one small step from the shipped model
    assert main([*argv[:-4], "--steps", "2", "--cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    assert "resuming the run" in capsys.readouterr().out
    assert main([*argv, "--preset", "small"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_pack_training_runs_where_only_torch_is(packed, tmp_path):
    """The GPU machine has torch and numpy but no RDKit, qm9pack or platformdirs: training and validation from the
    pack import none of them (the default cache falls back to $XDG_CACHE_HOME)."""
    import os
    import subprocess
    import sys

    script = (f"import sys\nfor m in ('rdkit', 'qm9pack', 'platformdirs'): sys.modules[m] = None\n"
              f"from reed_molecule.cli import main\n"
              f"sys.exit(main(['train', '--pack', {str(packed)!r}, '--train-limit', '16', '--steps', '1', "
              f"'--batch-size', '4', '--eval-every', '1', '--eval-molecules', '8', '--device', 'cpu', "
              f"'--eval-samples', '6', '--select-on', 'mol_stable', '--out', {str(tmp_path / 'run')!r}]))")
    env = {k: v for k, v in os.environ.items() if k != "REED_MOLECULE_CACHE"} | {"XDG_CACHE_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run" / "best" / "ema.safetensors").is_file()
    assert any((tmp_path / "reed-molecule").iterdir())  # the teacher cache went to the XDG default
    (record,) = [json.loads(ln) for ln in (tmp_path / "run" / "validation.jsonl").read_text().splitlines()]
    assert {"valid_loss", "atom_stable", "mol_stable"} <= record.keys()  # sampled and scored without RDKit
    best = json.loads((tmp_path / "run" / "best" / "config.json").read_text())["best"]
    assert best == {"metric": "mol_stable", "value": record["mol_stable"], "step": 1}


def test_sampled_stability_is_common_random_numbers_and_equals_the_full_metrics():
    """Validation's sampled stability: the same molecules (atom counts, noise) at every call, scored as
    ``reed-molecule eval``'s EDM stability scores those molecules."""
    from reed_molecule.loading import default_checkpoint, load_model
    from reed_molecule.metrics import MoleculeResults, evaluate_batch, summarise
    from reed_molecule.presets import sample_counts, sampled_stability
    from reed_molecule.sampler import sample

    shipped = load_model(default_checkpoint(), device="cpu")
    counts = sample_counts(shipped.atom_histogram, 12, seed=3)
    assert counts.tolist() == sorted(counts.tolist()) and counts.min() >= 3
    kw = {"num_steps": 20, "seed": 5, "batch": 5}
    first = sampled_stability(shipped.model, shipped.process, counts, **kw)
    assert sampled_stability(shipped.model, shipped.process, counts, **kw) == first
    g = torch.Generator().manual_seed(5)
    parts = [sample(shipped.model, shipped.process, counts[lo:lo + 5], num_steps=20, generator=g).numpy()
             for lo in range(0, 12, 5)]
    r = MoleculeResults.concat([evaluate_batch(q["pos"], q["atoms"], q["mask"]) for q in parts])
    r = summarise(r)
    assert len({q["mask"].shape[1] for q in parts}) > 1  # batches of different widths, padded alike
    assert first == {"atom_stable": pytest.approx(r.atom_stable), "mol_stable": pytest.approx(r.mol_stable)}
    assert 50 < first["atom_stable"] <= 100  # the shipped model's samples, not noise


def test_select_on_sampled_stability_needs_samples(tmp_path, capsys):
    argv = ["train", "--steps", "1", "--out", str(tmp_path / "r"), "--select-on", "mol_stable"]
    assert main(argv) == 2
    assert "--eval-samples" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert main([*argv, "--eval-every", "1", "--eval-samples", "-1"]) == 2
    assert "--eval-samples must be >= 0" in capsys.readouterr().err
