"""Smoke tests on real QM9: the tiny preset's loss falls; REED runs through teachers; save -> load is exact."""

import numpy as np
import torch

from reed_core.testing import assert_loss_decreases
from reed_molecule.data import QM9Dataset
from reed_molecule.pipeline import MoleculeRunConfig, build_run, load_model, sample_molecules
from reed_molecule.teachers import Encoder3DTeacher, default_encoder3d_path


def test_dataset_batches_are_clean(qm9_train):
    assert len(qm9_train) > 99_900
    b = qm9_train.collate(np.arange(16))
    m = b.mask[..., None].float()
    assert ((b.pos * m).sum(1)).abs().max() < 1e-4
    assert (b.bonds == b.bonds.transpose(1, 2)).all() and (b.bonds[~b.pair_mask] == 0).all()
    marg = qm9_train.marginals()
    assert abs(marg["atoms"].sum() - 1) < 1e-9 and marg["bonds"][0] > 0.8


def test_tiny_preset_loss_falls(tmp_path, qm9_train):
    torch.manual_seed(0)
    ds = QM9Dataset("train", progress=False, limit=2000)
    cfg = MoleculeRunConfig(method="vanilla", steps=100, batch_size=16, lr=1e-3)
    trainer = build_run(cfg, ds, tmp_path / "run", progress=False, device="cpu")
    losses = [h["denoise"] for h in trainer.fit()]
    assert_loss_decreases(losses, min_drop=0.2)
    # save -> load gives identical outputs
    loaded = load_model(trainer.checkpoint_root / "step_00000100", which="model")
    x = ds.collate(np.arange(4))
    t = torch.full((4,), 0.4)
    a = trainer.model.eval()(x, t).prediction
    b = loaded.model(x, t).prediction
    assert torch.equal(a.pos, b.pos) and torch.equal(a.bond_logits, b.bond_logits)
    arr = sample_molecules(loaded, 3, num_steps=5)
    assert arr["pos"].shape == (3, 29, 3) and np.isfinite(arr["pos"]).all()


def test_reed_runs_with_both_teachers(tmp_path, qm9_train):
    assert default_encoder3d_path().is_file(), "the pretrained 3-D teacher ships with the package"
    ds = QM9Dataset("train", progress=False, limit=300)
    cfg = MoleculeRunConfig(method="reed", steps=6, batch_size=8)
    trainer = build_run(cfg, ds, None, cache=tmp_path / "cache", progress=False, device="cpu")
    hist = trainer.fit(resume=False)
    assert {"align/graph2d", "align/encoder3d", "weight/graph2d", "weight/encoder3d"} <= set(hist[-1])
    assert hist[0]["weight/denoise"] == 0.0 and hist[-1]["weight/denoise"] > 0  # generative warm-up
    assert [s.layer for s in trainer.objective.specs] == ["layer2", "layer3"]
    # cached teacher features equal the teacher's own output
    teacher = Encoder3DTeacher()
    from reed_core import Batch

    rep = teacher(Batch(x0=ds.collate(np.arange(3))))
    cached = trainer.data.collate(np.arange(3)).representations["encoder3d"]
    assert torch.allclose(cached.features[cached.mask], rep.features[rep.mask], atol=2e-2)


def test_teachers_are_invariant(qm9_train):
    from reed_core import Batch
    from reed_core.testing import random_rotation

    teacher = Encoder3DTeacher()
    x = qm9_train.collate(np.arange(4))
    rot = random_rotation(torch.Generator().manual_seed(0), reflect=True).float()
    a = teacher(Batch(x0=x)).features
    b = teacher(Batch(x0=x.with_(pos=x.pos @ rot.T))).features
    assert torch.allclose(a, b, atol=1e-4)
