import math
from dataclasses import replace

import pytest
import torch

from reed_core import (
    AlignmentSpec,
    Batch,
    ConstantTime,
    Corruption,
    CutoffTime,
    LinearInterpolant,
    LinearTime,
    ProjectorBank,
    REEDObjective,
    Representation,
    condition_features,
    euler_sample,
    latent_conditions,
    project_hidden,
)
from reed_core.testing import RandomProjectionTeacher, TinyDenoiser, tiny_token_batch


class MaskedInterpolant(LinearInterpolant):
    """The linear interpolant on a dict x0 {"x": (B,L,D), "mask": (B,L)}: padding neither noised nor scored."""

    def corrupt(self, x0, t, *, generator=None):
        c = super().corrupt(x0["x"], t, generator=generator)
        m = x0["mask"][..., None]
        return Corruption(c.x_t * m, t, c.target * m, {"mask": m})


def _setup(coefficient=1.0, time_weight=ConstantTime(), granularity="token", condition=False, seed=0):
    torch.manual_seed(seed)
    x, mask = tiny_token_batch(6, 5, 8, min_length=2, seed=seed)
    view = (lambda b: (b.x0["x"], b.x0["mask"])) if granularity == "token" else (lambda b: (b.x0["x"].sum(1), None))
    teacher = RandomProjectionTeacher("t", 8, 12, granularity, view=view)
    spec = AlignmentSpec("t", "block1", granularity, teacher=teacher, coefficient=coefficient,
                         time_weight=time_weight, condition=condition)
    model = TinyDenoiser(8, 32, 3, latent_dims={"t": 12} if condition else None)
    bank = ProjectorBank({"t": (32, 12)}, hidden_dim=16)
    obj = REEDObjective(MaskedInterpolant(), [spec], bank)
    batch = Batch(x0={"x": x, "mask": mask}, cond={"mask": mask})
    return model, obj, batch


def _run(obj, model, batch, step=0, seed=1):
    return obj(model, batch, step, torch.Generator().manual_seed(seed))


def test_zero_alignment_weight_gives_exact_process_loss():
    model, obj, batch = _setup(coefficient=0.0)
    plain = REEDObjective(MaskedInterpolant())
    terms = _run(obj, model, batch)
    ref = _run(plain, model, batch)
    assert torch.equal(terms.total, ref.total)
    assert torch.equal(terms.total, terms.denoise)
    assert terms.weights == {"denoise": 1.0, "t": 0.0}
    assert terms.align["t"].item() != 0.0  # the term is still computed and logged


def test_total_is_the_weighted_sum_of_terms():
    model, obj, batch = _setup(coefficient=0.7)
    terms = _run(obj, model, batch)
    assert torch.allclose(terms.total, terms.denoise + 0.7 * terms.align["t"], atol=1e-6)
    scal = terms.scalars()
    assert set(scal) == {"loss", "denoise", "align/t", "weight/denoise", "weight/t"}


def test_padding_changes_no_term():
    model, obj, batch = _setup()
    terms = _run(obj, model, batch)
    x, mask = batch.x0["x"], batch.x0["mask"]
    junk = torch.where(mask[..., None], x, torch.randn_like(x) * 50)
    other = Batch(x0={"x": junk, "mask": mask}, cond={"mask": mask})
    terms2 = _run(obj, model, other)
    assert torch.allclose(terms.denoise, terms2.denoise, atol=1e-6)
    assert torch.allclose(terms.align["t"], terms2.align["t"], atol=1e-6)


def test_gradients_reach_projector_and_backbone_not_teacher():
    model, obj, batch = _setup()
    _run(obj, model, batch).total.backward()
    assert all(p.grad is None for p in obj.teachers.parameters())
    assert all(not p.requires_grad for p in obj.teachers.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.projectors.parameters())
    assert model.blocks[0][1].weight.grad.abs().sum() > 0
    assert obj.trainable_parameters() and all(p.requires_grad for p in obj.trainable_parameters())


def test_time_weights_apply_per_sample():
    """With w(t) = 1[t < 0.5], changing the teacher target of a sample with t >= 0.5 changes nothing, while
    changing one with t < 0.5 does; a batch-mean weighting would fail one of the two."""
    model, obj, batch = _setup(time_weight=CutoffTime(0.0, 0.5))
    t = obj.process.sample_time(6, device="cpu", generator=torch.Generator().manual_seed(1))
    low, high = int(torch.nonzero(t < 0.5)[0]), int(torch.nonzero(t >= 0.5)[0])
    rep = obj.teachers["t"](batch)
    base = _run(obj, model, Batch(batch.x0, batch.cond, {"t": rep})).total

    def perturbed(i):
        f = rep.features.clone()
        f[i] = torch.randn_like(f[i])
        return _run(obj, model, Batch(batch.x0, batch.cond, {"t": Representation(f, rep.mask, "token")})).total

    assert torch.equal(perturbed(high), base)
    assert not torch.allclose(perturbed(low), base)


def test_cached_representations_win_over_teacher_and_missing_raise():
    model, obj, batch = _setup()
    rep = obj.teachers["t"](batch)
    a = _run(obj, model, batch).total
    b = _run(obj, model, Batch(batch.x0, batch.cond, {"t": rep})).total
    assert torch.allclose(a, b)
    spec = AlignmentSpec("u", "block0", "token")
    with pytest.raises(KeyError, match="no teacher"):
        REEDObjective(MaskedInterpolant(), [spec], ProjectorBank({"u": (32, 4)}))(model, batch, 0)
    with pytest.raises(ValueError, match="no projector"):
        REEDObjective(MaskedInterpolant(), [spec], ProjectorBank({}))


def test_pooled_latent_pools_masked_hiddens():
    model, obj, batch = _setup(granularity="pooled")
    terms = _run(obj, model, batch)
    assert terms.align["t"].shape == () and math.isfinite(terms.align["t"].item())


class _Recorder(TinyDenoiser):
    def __init__(self):
        super().__init__(8, 32, 3, latent_dims={"t": 12})
        self.seen = []

    def forward(self, x_t, t, cond=None, *, capture=(), latents=None):
        if latents is not None:
            self.seen.append((t.clone(), latents["t"].keep.clone(), latents["t"].z.clone()))
        return super().forward(x_t, t, cond, capture=capture, latents=latents)


def test_hybrid_conditioning_follows_cumulative_weight():
    _, obj, _ = _setup(time_weight=LinearTime(1.0, 0.0), condition=True, granularity="pooled")
    model = _Recorder()
    x = torch.randn(256, 5, 8)
    mask = torch.ones(256, 5, dtype=torch.bool)
    batch = Batch(x0={"x": x, "mask": mask}, cond={"mask": mask})
    for seed in range(12):
        _run(obj, model, batch, seed=seed)
    t = torch.cat([s[0] for s in model.seen])
    keep = torch.cat([s[1] for s in model.seen]).float()
    for lo in (0.0, 0.25, 0.5, 0.75):
        sel = (t >= lo) & (t < lo + 0.25)
        p = ((1 - t[sel]) ** 2).mean()  # A_t for w(t) = 1 - t
        n = int(sel.sum())
        se = math.sqrt(float(p * (1 - p)) / n) + 1e-3
        assert abs(float(keep[sel].mean()) - float(p)) < 4 * se, (lo, float(keep[sel].mean()), float(p))


def test_hybrid_sees_teacher_z_and_predicted_z_at_the_same_scale():
    _, obj, batch = _setup(condition=True, granularity="pooled")
    spec = obj.specs[0]
    model = _Recorder()
    _run(obj, model, batch)
    z = obj.teachers["t"](batch).features
    torch.testing.assert_close(model.seen[0][2], condition_features(spec, z))  # training: the teacher's direction
    torch.testing.assert_close(model.seen[0][2].pow(2).mean(-1), torch.ones(z.shape[0]))  # at unit RMS
    torch.testing.assert_close(condition_features(spec, 7.0 * z), condition_features(spec, z))  # norm-free
    t = torch.full((6,), 0.5)
    lat = latent_conditions("self", obj.specs, model=model, projectors=obj.projectors, x_t=batch.x0["x"], t=t)
    z_hat, _ = project_hidden(spec, obj.projectors, model(batch.x0["x"], t, None, capture=("block1",)))
    torch.testing.assert_close(lat["t"].z, condition_features(spec, z_hat))  # sampling: the projector's direction
    std = replace(spec, standardize=True)  # a standardised teacher: per-channel shifts and scales vanish,
    scale = torch.rand(12) + 0.5  # and a prediction (already in the standardised space) is only normalised
    torch.testing.assert_close(condition_features(std, z * scale + 3.0), condition_features(std, z), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(condition_features(std, 9.0 * z_hat, predicted=True), condition_features(spec, z_hat))


def test_hybrid_sampling_runs_with_and_without_z():
    _, obj, batch = _setup(condition=True, granularity="pooled")
    model = TinyDenoiser(8, 32, 3, latent_dims={"t": 12})
    process = obj.process
    noise = torch.randn(6, 5, 8, generator=torch.Generator().manual_seed(0))
    z = obj.teachers["t"](batch)

    def sample(mode):
        def vel(x, t):
            lat = latent_conditions(mode, obj.specs, model=model, projectors=obj.projectors, x_t=x, t=t, given={"t": z})
            return process.velocity(model(x, t, None, latents=lat).prediction, x, t)
        return euler_sample(vel, noise, num_steps=4)

    with torch.no_grad():
        none, given, selfz = sample("none"), sample("given"), sample("self")
    for out in (none, given, selfz):
        assert out.shape == noise.shape and torch.isfinite(out).all()
    assert not torch.allclose(none, given) and not torch.allclose(none, selfz)
    assert latent_conditions("none", obj.specs) is None
    with pytest.raises(ValueError, match="given"):
        latent_conditions("given", obj.specs)


def test_linear_interpolant_oracles():
    p = LinearInterpolant("velocity")
    x0 = torch.randn(4, 3, 2)
    c0 = p.corrupt(x0, torch.zeros(4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(c0.x_t, x0)
    c1 = p.corrupt(x0, torch.ones(4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(c1.x_t, c1.extras["noise"])
    assert torch.all(p.loss(c1.target, c1) == 0)
    for kind in ("velocity", "x0", "noise"):
        q = LinearInterpolant(kind)
        t = torch.full((4,), 0.3)
        c = q.corrupt(x0, t, generator=torch.Generator().manual_seed(1))
        v = q.velocity(c.target, c.x_t, t)
        assert torch.allclose(v, c.extras["noise"] - x0, atol=1e-5)
    with pytest.raises(ValueError):
        LinearInterpolant("score")


class _PairDenoiser(torch.nn.Module):
    """TinyDenoiser plus pair hiddens (B,L,K,H) for pairs (i, k), k < K."""

    def __init__(self, k=4):
        super().__init__()
        self.inner, self.edge, self.k = TinyDenoiser(8, 32, 3), torch.nn.Linear(32, 32), k

    def forward(self, x_t, t, cond=None, *, capture=()):
        out = self.inner(x_t, t, cond, capture=("block1",))
        h = out.hiddens["block1"]
        return type(out)(out.prediction, {"pair": self.edge(h)[:, :, None] + h[:, None, : self.k]})


def _pair_setup(pairs_per_token):
    torch.manual_seed(0)
    x, _ = tiny_token_batch(6, 5, 8, seed=0)
    view = lambda b: (b.x0[:, :, None] + b.x0[:, None, :4], None)  # noqa: E731
    teacher = RandomProjectionTeacher("p", 8, 12, "pair", view=view)
    spec = AlignmentSpec("p", "pair", "pair", teacher=teacher, pairs_per_token=pairs_per_token)
    return _PairDenoiser(), REEDObjective(LinearInterpolant(), [spec], ProjectorBank({"p": (32, 12)}, hidden_dim=16)), Batch(x)


def test_pairs_per_token_is_an_unbiased_estimate_of_the_all_pairs_alignment():
    model, full_obj, batch = _pair_setup(None)
    _, obj, _ = _pair_setup(2)
    obj.load_state_dict(full_obj.state_dict())
    # same seed, same t and noise (pairs are drawn after the model call): the difference is the sampling alone
    diff = torch.tensor([(_run(obj, model, batch, seed=s).align["p"] - _run(full_obj, model, batch, seed=s).align["p"]
                          ).item() for s in range(300)])
    assert diff.std() > 1e-3  # each step aligns a different half of the pairs
    assert abs(diff.mean().item()) < 4 * diff.std().item() / 300**0.5
    assert _run(obj, model, batch, seed=5).align["p"].item() == _run(obj, model, batch, seed=5).align["p"].item()
    _run(obj, model, batch).total.backward()
    assert model.edge.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="pairs_per_token"):
        AlignmentSpec("t", "block1", "token", pairs_per_token=2)
    with pytest.raises(ValueError, match="pairs_per_token"):
        AlignmentSpec("p", "pair", "pair", pairs_per_token=0)
