import pytest
import torch

from reed_core import Corruption
from reed_molecule.config import SAMPLER_NOISE_SCALE, SAMPLER_SPACING
from reed_molecule.model import MoleculePrediction
from reed_molecule.process import MolecularDiffusion
from reed_molecule.sampler import sample, sampler_times
from reed_molecule.testing import random_molecules as _batch


def _oracle(x0) -> MoleculePrediction:
    def logits(idx, k):
        return torch.log(torch.nn.functional.one_hot(idx, k).double())  # 0 for the truth, -inf elsewhere

    return MoleculePrediction(x0.pos, logits(x0.atoms, 5), logits(x0.charges, 3), logits(x0.bonds, 4))


def test_corrupt_at_zero_is_identity_and_oracle_loss_is_zero():
    p = MolecularDiffusion()
    x0 = _batch()
    c = p.corrupt(x0, torch.zeros(3), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(c.x_t.pos, x0.pos, atol=1e-12)
    for k in ("atoms", "charges", "bonds"):
        assert torch.equal(getattr(c.x_t, k)[x0.mask], getattr(x0, k)[x0.mask]), k
    for t in (0.0, 0.5, 1.0):
        ct = p.corrupt(x0, torch.full((3,), t), generator=torch.Generator().manual_seed(1))
        assert torch.all(p.loss(_oracle(x0), ct) == 0)


def test_corrupt_at_one_is_prior_noise():
    p = MolecularDiffusion(atom_prior=(0.5, 0.5, 0.0, 0.0, 0.0), bond_prior=(1.0, 0.0, 0.0, 0.0))
    x0 = _batch(3, 9)
    x0 = x0.with_(atoms=torch.full_like(x0.atoms, 4) * x0.mask)
    c = p.corrupt(x0, torch.ones(3), generator=torch.Generator().manual_seed(0))
    assert (c.x_t.atoms[x0.mask] <= 1).all()  # only prior classes
    assert (c.x_t.bonds == 0).all()
    assert torch.allclose(c.x_t.pos, c.extras["noise"], atol=1e-6)  # position is pure noise
    m = x0.mask[..., None].double()
    assert ((c.x_t.pos * m).sum(1)).abs().max() < 1e-9


def test_loss_weights_and_snr_clamp():
    p = MolecularDiffusion()
    w = p.loss_weight(torch.tensor([0.0, 0.5, 0.999]))
    assert w[0] == 1.5 and w[-1] == 0.05 and 0.05 <= w[1] <= 1.5
    x0 = _batch()
    c = Corruption(x0, torch.full((3,), 0.5), x0)
    pred = _oracle(x0)
    bad = MoleculePrediction(pred.pos + 1.0 * x0.mask[..., None], pred.atom_logits, pred.charge_logits, pred.bond_logits)
    terms = p.loss_terms(bad, c)
    assert torch.allclose(terms["pos"], torch.ones(3, dtype=torch.float32))
    assert torch.allclose(p.loss(bad, c), 3.0 * w[1] * torch.ones(3), atol=1e-5)


@pytest.mark.parametrize("spacing", [1.0, 3.0])
def test_sampler_with_oracle_returns_the_molecule_on_any_grid(spacing):
    p = MolecularDiffusion()
    x0 = _batch(2, 7)
    counts = x0.mask.sum(1)
    seen = []

    def oracle(x, t, cond=None, **kw):
        seen.append(float(t[0]))
        return type("O", (), {"prediction": _oracle(x0)})()

    out = sample(oracle, p, counts, num_steps=8, generator=torch.Generator().manual_seed(0), max_atoms=7,
                 spacing=spacing)
    assert torch.equal(out.atoms, x0.atoms) and torch.equal(out.bonds, x0.bonds)
    assert torch.allclose(out.pos.double(), x0.pos, atol=1e-6)
    assert seen == pytest.approx([(1 - i / 8) ** spacing for i in range(8)])


def test_noise_scale_scales_only_the_coordinate_noise():
    """``noise_scale`` 1 is the exact ancestral step (bit-identical to ``step``'s default); any scale leaves the mean
    and the categories' draws alone and multiplies the coordinates' deviation from that mean; 0 is the mean."""
    p = MolecularDiffusion()
    x0 = _batch(2, 7)
    x = p.corrupt(x0, torch.full((2,), 0.6), generator=torch.Generator().manual_seed(1)).x_t
    pred = _oracle(x0)
    t, s = torch.full((2,), 0.6), torch.full((2,), 0.5)

    def step(**kw):
        return p.step(x, pred, t, s, torch.Generator().manual_seed(3), **kw)

    exact, same, cold, mean = step(), step(noise_scale=1.0), step(noise_scale=0.5), step(noise_scale=0.0)
    assert torch.equal(exact.pos, same.pos) and torch.equal(exact.atoms, same.atoms)
    assert torch.equal(cold.atoms, exact.atoms) and torch.equal(cold.bonds, exact.bonds)
    assert torch.allclose(cold.pos - mean.pos, 0.5 * (exact.pos - mean.pos), atol=1e-6)
    assert (exact.pos - mean.pos).abs().max() > 1e-3
    counts = x0.mask.sum(1)
    model = lambda x, t, cond=None, **kw: type("O", (), {"prediction": pred})()  # noqa: E731
    a = sample(model, p, counts, num_steps=4, generator=torch.Generator().manual_seed(0), max_atoms=7)
    b = sample(model, p, counts, num_steps=4, generator=torch.Generator().manual_seed(0), max_atoms=7,
               noise_scale=SAMPLER_NOISE_SCALE)
    assert torch.equal(a.pos, b.pos)  # the default is SAMPLER_NOISE_SCALE
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="noise_scale"):
            sample(model, p, counts, num_steps=2, max_atoms=7, noise_scale=bad)


def test_sampler_time_grid_spacing():
    assert torch.equal(sampler_times(250, 1.0), torch.linspace(1.0, 0.0, 251))  # spacing 1: the uniform grid, unchanged
    assert torch.equal(sampler_times(250), sampler_times(250, SAMPLER_SPACING)) and SAMPLER_SPACING == 2.0  # the default
    t = sampler_times(100, 2.0)
    assert torch.allclose(t, torch.linspace(1.0, 0.0, 101) ** 2) and t[0] == 1 and t[-1] == 0
    assert (t[1:] < t[:-1]).all() and int((t[1:] < 0.25).sum()) == 50  # half the steps end below t = 0.25
    for steps, spacing in ((0, 1.0), (10, 0.0), (10, -1.0), (10, float("nan")), (10, float("inf"))):
        with pytest.raises(ValueError, match="num_steps" if steps < 1 else "spacing"):
            sampler_times(steps, spacing)


def test_time_power_reshapes_the_same_uniform_draws():
    u = MolecularDiffusion().sample_time(100_000, generator=torch.Generator().manual_seed(4))
    assert torch.equal(u, torch.rand(100_000, generator=torch.Generator().manual_seed(4)))  # P = 1: uniform, unchanged
    t = MolecularDiffusion(time_power=2.0).sample_time(100_000, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(t, u**2)
    assert abs(float((t < 0.55).float().mean()) - 0.55**0.5) < 0.01  # 74 % of the draws below 0.55, not 55 %
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="time_power"):
            MolecularDiffusion(time_power=bad)


def test_categorical_reverse_step_is_d3pms_sum_over_x0():
    """p(x_s = k | x_t) = sum_x0 q(x_s = k | x_t, x0) p(x0), q(x_s | x_t, x0) = q(x_t | x_s) q(x_s | x0) / q(x_t | x0)
    for the marginal-prior kernel q(x_t | x0) = abar_t [x_t = x0] + (1 - abar_t) prior(x_t), computed term by term;
    the 'proportional' form (the sampler before) leaves out the 1 / q(x_t | x0) and, at low noise, keeps a state the
    prediction has left."""
    g = torch.Generator().manual_seed(0)
    K = 5
    prior = torch.softmax(torch.randn(K, generator=g), 0)
    x_t = torch.randint(0, K, (4, 7), generator=g)
    probs0 = torch.softmax(3 * torch.randn(4, 7, K, generator=g), -1)
    probs0[3] = 0.9 * torch.nn.functional.one_hot((x_t[3] + 1) % K, K) + 0.1 / K  # sure of another type
    abar_t, abar_s = torch.tensor([0.02, 0.3, 0.9, 0.999]), torch.tensor([0.05, 0.5, 0.95, 0.9999])

    def q(a, frm, to):  # q(state `to` at the later time | `frm` at the earlier), kernel a
        return a * (frm == to) + (1 - a) * prior[to]

    want = torch.zeros(4, 7, K)
    for b in range(4):
        a_ts = abar_t[b] / abar_s[b]
        for i in range(7):
            j = int(x_t[b, i])
            for k in range(K):
                want[b, i, k] = sum(q(a_ts, k, j) * q(abar_s[b], x0, k) / q(abar_t[b], x0, j) * probs0[b, i, x0]
                                    for x0 in range(K))
    want = want / want.sum(-1, keepdim=True)
    got = MolecularDiffusion.posterior_probs(x_t, probs0, abar_t, abar_s, prior)
    assert torch.allclose(got, want, atol=1e-5)
    # at low noise the exact step follows the prediction; the proportional one stays where it is
    old = MolecularDiffusion.posterior_probs(x_t, probs0, abar_t, abar_s, prior, posterior="proportional")
    top = (x_t[3] + 1) % K
    assert (got[3].gather(-1, top[:, None]) > 0.5).all() and (old[3].gather(-1, x_t[3][:, None]) > 0.5).all()
    with pytest.raises(ValueError, match="posterior"):
        MolecularDiffusion.posterior_probs(x_t, probs0, abar_t, abar_s, prior, posterior="other")
