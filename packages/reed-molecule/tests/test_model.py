import pytest
import torch

from reed_core.testing import assert_equivariant
from reed_molecule.config import MODEL_PRESETS, ModelConfig
from reed_molecule.model import EQGATDenoiser
from reed_molecule.process import MolecularDiffusion
from reed_molecule.sampler import sample
from reed_molecule.testing import random_molecules


def _batch(B=3, N=9, seed=0, dtype=torch.float64):
    return random_molecules(B, N, seed, dtype)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = EQGATDenoiser(ModelConfig(layers=3, scalars=32, vectors=8, edges=8, heads=4)).double().eval()
    for layer in m.layers:  # non-trivial coordinate updates
        torch.nn.init.normal_(layer.pos_out.weight, std=0.3)
    return m


def test_e3_equivariance_float64(model):
    x = _batch()
    t = torch.tensor([0.3, 0.6, 0.9], dtype=torch.float64)

    def fn(pos):
        out = model(x.with_(pos=pos), t, capture=("layer2",))
        p = out.prediction
        return {"pos": p.pos, "atoms": p.atom_logits, "charges": p.charge_logits, "bonds": p.bond_logits,
                "hidden": out.hiddens["layer2"]}

    # coordinates are equivariant up to the translation (the model works in the zero-CoM frame)
    assert_equivariant(fn, {"pos": x.pos}, {"pos": "vector"},
                       {"pos": "vector", "atoms": "invariant", "charges": "invariant", "bonds": "invariant",
                        "hidden": "invariant"}, translations=False, atol=1e-9)
    shifted = fn(x.pos + torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64) * x.mask[..., None])
    base = fn(x.pos)
    for k in base:
        assert torch.allclose(shifted[k], base[k], atol=1e-9), k


def test_permutation_equivariance(model):
    x = _batch(B=1, N=9)
    t = torch.tensor([0.4], dtype=torch.float64)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(3))
    px = x.with_(pos=x.pos[:, perm], atoms=x.atoms[:, perm], charges=x.charges[:, perm],
                 bonds=x.bonds[:, perm][:, :, perm], mask=x.mask[:, perm])
    a = model(x, t, capture=("layer3",))
    b = model(px, t, capture=("layer3",))
    assert torch.allclose(b.prediction.pos, a.prediction.pos[:, perm], atol=1e-9)
    assert torch.allclose(b.prediction.atom_logits, a.prediction.atom_logits[:, perm], atol=1e-9)
    assert torch.allclose(b.prediction.bond_logits, a.prediction.bond_logits[:, perm][:, :, perm], atol=1e-9)
    assert torch.allclose(b.hiddens["layer3"], a.hiddens["layer3"][:, perm], atol=1e-9)


def test_padding_never_leaks(model):
    x = _batch()
    t = torch.tensor([0.3, 0.6, 0.9], dtype=torch.float64)
    pad = ~x.mask
    junk = x.with_(pos=torch.where(pad[..., None], torch.randn_like(x.pos) * 50, x.pos),
                   atoms=torch.where(pad, 3, x.atoms), charges=torch.where(pad, 2, x.charges))
    a = model(x, t, capture=("layer1",))
    b = model(junk, t, capture=("layer1",))
    m = x.mask
    assert torch.allclose(a.prediction.pos[m], b.prediction.pos[m], atol=1e-9)
    assert torch.allclose(a.prediction.atom_logits[m], b.prediction.atom_logits[m], atol=1e-9)
    assert torch.allclose(a.hiddens["layer1"], b.hiddens["layer1"], atol=1e-9)
    pm = x.pair_mask
    assert torch.allclose(a.prediction.bond_logits[pm], b.prediction.bond_logits[pm], atol=1e-9)
    # zero centre of mass of the predicted coordinates over real atoms
    com = (a.prediction.pos * m[..., None]).sum(1) / m.sum(1, keepdim=True)
    assert torch.allclose(com, torch.zeros_like(com), atol=1e-9)
    assert a.masks["layer1"] is x.mask


def test_bond_logits_symmetric_and_bad_capture(model):
    x = _batch()
    out = model(x, torch.full((3,), 0.5, dtype=torch.float64))
    assert torch.allclose(out.prediction.bond_logits, out.prediction.bond_logits.transpose(1, 2))
    with pytest.raises(KeyError, match="layer9"):
        model(x, torch.full((3,), 0.5, dtype=torch.float64), capture=("layer9",))


def test_presets():
    assert MODEL_PRESETS["paper"].layers == 12 and MODEL_PRESETS["paper"].scalars == 256
    assert MODEL_PRESETS["paper"].vectors == 256 and MODEL_PRESETS["paper"].edges == 128
    with pytest.raises(ValueError):
        ModelConfig(scalars=30, heads=4)


def test_sampler_keeps_zero_com_every_step(model):
    proc = MolecularDiffusion()
    seen = []

    def spy(x, t, cond=None, **kw):
        m = x.mask[..., None].to(x.pos.dtype)
        seen.append(((x.pos * m).sum(1) / m.sum(1)).abs().max().item())
        return model(x.with_(pos=x.pos.double()), t.double(), cond, **kw)

    g = torch.Generator().manual_seed(0)
    out = sample(spy, proc, torch.tensor([5, 8]), num_steps=6, generator=g)
    assert len(seen) == 6 and max(seen) < 1e-5
    m = out.mask[..., None].to(out.pos.dtype)
    assert ((out.pos * m).sum(1) / m.sum(1)).abs().max() < 1e-5
    assert (out.atoms[~out.mask] == 0).all() and (out.bonds == out.bonds.transpose(1, 2)).all()
