"""Smoke tests on real QM9: the tiny preset's loss falls; REED runs through teachers; save -> load is exact;
a new teacher is one LatentSpec added to the preset."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reed_core import Batch, LatentSpec
from reed_core.checkpoint import CheckpointError
from reed_core.testing import RandomProjectionTeacher, assert_loss_decreases
from reed_molecule.data import QM9Dataset
from reed_molecule.loading import load_model
from reed_molecule.presets import PRESET, molecule_trainer
from reed_molecule.sampler import sample_molecules
from reed_molecule.teachers import Encoder3DTeacher, default_encoder3d_path, pretrain_encoder3d


def test_dataset_batches_are_clean(qm9_train):
    assert len(qm9_train) > 99_700  # 206 of 100,000 have no valence-exact bond graph
    b = qm9_train.collate(np.arange(16))
    m = b.mask[..., None].float()
    assert ((b.pos * m).sum(1)).abs().max() < 1e-4
    assert (b.bonds == b.bonds.transpose(1, 2)).all() and (b.bonds[~b.pair_mask] == 0).all()
    marg = qm9_train.marginals()
    assert abs(marg["atoms"].sum() - 1) < 1e-9 and marg["bonds"][0] > 0.8


def test_tiny_preset_loss_falls(tmp_path, qm9_train):
    ds = QM9Dataset("train", progress=False, limit=2000)
    trainer = molecule_trainer("vanilla", ds, tmp_path / "run", steps=100, batch_size=16, lr=1e-3, progress=False,
                               device="cpu")
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
    trainer = molecule_trainer("reed", ds, None, steps=6, batch_size=8, cache=tmp_path / "cache", progress=False,
                               device="cpu")
    hist = trainer.fit(resume=False)
    assert {"align/graph2d", "align/encoder3d", "weight/graph2d", "weight/encoder3d"} <= set(hist[-1])
    assert hist[0]["weight/denoise"] == 0.0 and hist[-1]["weight/denoise"] > 0  # generative warm-up
    assert [s.layer for s in trainer.objective.specs] == ["layer2", "layer3"]
    # cached teacher features equal the teacher's own output
    rep = Encoder3DTeacher()(Batch(x0=ds.collate(np.arange(3))))
    cached = trainer.data.collate(np.arange(3)).representations["encoder3d"]
    assert torch.allclose(cached.features[cached.mask], rep.features[rep.mask], atol=2e-2)
    assert torch.equal(cached.mask, rep.mask)


def test_a_new_teacher_is_one_latent_spec(tmp_path):
    """Adding a teacher: one LatentSpec in the preset (here a random projection of the atom types), no other file."""
    fake = LatentSpec("atoms_fake", layer=0.5, coefficient=1.0, teacher=lambda d: RandomProjectionTeacher(
        "atoms_fake", 5, 12, "token", view=lambda b: (F.one_hot(b.x0.atoms, 5).float(), b.x0.mask)))
    preset = replace(PRESET, latents=(*PRESET.latents, fake))
    ds = QM9Dataset("train", progress=False, limit=64)
    trainer = molecule_trainer("reed", ds, None, steps=2, batch_size=4, preset=preset, cache=tmp_path, progress=False,
                               device="cpu")
    out = trainer.train_step()
    assert "align/atoms_fake" in out and out["weight/atoms_fake"] == pytest.approx(0.2)
    assert trainer.objective.specs[-1].layer == "layer2"


def test_loading_a_checkpoint_of_another_domain_says_so(tmp_path):
    import json
    import shutil

    from reed_molecule.loading import default_checkpoint

    ck = tmp_path / "ck"
    shutil.copytree(default_checkpoint(), ck)
    cfg = json.loads((ck / "config.json").read_text())
    cfg["model"]["domain"] = "protein"
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="reed-protein checkpoint; expected a reed-molecule model"):
        load_model(ck)
    cfg["model"]["domain"] = "molecule"
    cfg["model"]["model"]["hidden"] = 3
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not fit ModelConfig"):
        load_model(ck)


def test_encoder_pretraining_runs_on_the_core_trainer(qm9_train):
    ds = QM9Dataset("train", progress=False, limit=64)
    enc, info = pretrain_encoder3d(ds, steps=3, batch_size=4, progress=False)
    assert np.isfinite(info["final_loss"]) and info["steps"] == 3
    assert sum(p.numel() for p in enc.parameters()) > 0


def test_teachers_are_invariant(qm9_train):
    from reed_core.testing import random_rotation

    teacher = Encoder3DTeacher()
    x = qm9_train.collate(np.arange(4))
    rot = random_rotation(torch.Generator().manual_seed(0), reflect=True).float()
    a = teacher(Batch(x0=x)).features
    b = teacher(Batch(x0=x.with_(pos=x.pos @ rot.T))).features
    assert torch.allclose(a, b, atol=1e-4)


def test_time_power_reaches_the_objective_and_the_run_config(tmp_path):
    ds = QM9Dataset("train", progress=False, limit=64)
    trainer = molecule_trainer("vanilla", ds, tmp_path / "run", steps=1, batch_size=4, time_power=2.0, cache=tmp_path,
                               progress=False, device="cpu")
    assert trainer.objective.process.time_power == 2.0
    t = trainer.objective.process.sample_time(4096, generator=torch.Generator().manual_seed(0))
    assert 0.70 < float((t < 0.55).float().mean()) < 0.78
    trainer.fit()
    cfg = json.loads((trainer.checkpoint_root / "step_00000001" / "config.json").read_text())
    assert cfg["model"]["run"]["time_power"] == 2.0


def test_bf16_autocast_trains_a_reed_step_and_is_recorded(tmp_path):
    """``--precision bf16`` (for GPUs): the EQGAT step, both teachers' alignments and the optimizer run under bf16
    autocast with finite losses close to the float32 step's, and the run config records the precision."""
    ds = QM9Dataset("train", progress=False, limit=64)
    out = {}
    for precision in ("fp32", "bf16"):
        trainer = molecule_trainer("reed", ds, tmp_path / precision, steps=1, batch_size=8, cache=tmp_path / "cache",
                                   progress=False, device="cpu", precision=precision)
        (out[precision],) = trainer.fit()
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
        cfg = json.loads((trainer.checkpoint_root / "step_00000001" / "config.json").read_text())
        assert cfg["model"]["run"]["precision"] == precision
    for key in ("loss", "align/graph2d", "align/encoder3d"):
        assert np.isfinite(out["bf16"][key]) and out["bf16"][key] == pytest.approx(out["fp32"][key], rel=0.05, abs=0.02)
    with pytest.raises(ValueError, match="precision"):
        molecule_trainer("vanilla", ds, None, steps=1, batch_size=4, cache=tmp_path, progress=False, precision="fp8")
