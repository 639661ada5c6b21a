"""Declarative assembly: a toy domain (variable-length token items, cropped windows) through build_trainer."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from reed_core import (
    METHODS,
    AlignmentSpec,
    Batch,
    Constant,
    Curriculum,
    Domain,
    DomainPreset,
    FeatureCache,
    LatentSpec,
    LinearInterpolant,
    Representation,
    TrainingData,
    build_trainer,
    cache_features,
    run_train_config,
)
from reed_core.testing import RandomProjectionTeacher, TinyDenoiser


class ToyData:
    """20 items of 4..9 tokens (dim 8); training rows are windows of at most 5 tokens at a per-item offset."""

    weights = None

    def __init__(self, crop: int = 5) -> None:
        g = torch.Generator().manual_seed(3)
        self.items = [torch.randn(int(n), 8, generator=g) for n in torch.randint(4, 10, (20,), generator=g)]
        self.crop = crop

    def __len__(self):
        return len(self.items)

    @property
    def lengths(self):
        return np.array([len(x) for x in self.items])

    @staticmethod
    def _pad(rows, starts, width):
        x = torch.zeros(len(rows), width, 8)
        for b, r in enumerate(rows):
            x[b, :len(r)] = r
        mask = torch.arange(width)[None] < torch.tensor([len(r) for r in rows])[:, None]
        return ToyX(x, mask, torch.tensor(starts))

    def collate(self, items):
        starts = [i % max(1, len(self.items[i]) - self.crop + 1) for i in items.tolist()]
        rows = [self.items[i][s:s + self.crop] for i, s in zip(items.tolist(), starts, strict=True)]
        return self._pad(rows, starts, self.crop)

    def whole(self, items):
        return self._pad([self.items[i] for i in items.tolist()], [0] * len(items), int(self.lengths.max()))

    def window(self, x0):
        return x0.start, x0.mask


class ToyX:
    def __init__(self, x, mask, start):
        self.x, self.mask, self.start = x, mask, start
        self.batch_size, self.device = x.shape[0], x.device

    def to(self, device):
        return ToyX(self.x.to(device), self.mask.to(device), self.start.to(device))


class ToyProcess(LinearInterpolant):
    def corrupt(self, x0, t, *, generator=None):
        return super().corrupt(x0.x, t, generator=generator)


class ToyDomain:
    name = "toy"

    def __init__(self):
        self.data = ToyData()

    def build_model(self, latent_dims):
        return TinyDenoiser(8, 32, 3, latent_dims=dict(latent_dims))

    def build_process(self):
        return ToyProcess()

    def capture(self, layer):
        return (layer if isinstance(layer, str) else f"block{round(layer * 3) - 1}"), 32

    def model_config(self):
        return {"width": 32}


def _teacher(domain):
    return RandomProjectionTeacher("tok", 8, 6, "token", view=lambda b: (b.x0.x, b.x0.mask))


PRESET = DomainPreset(
    latents=(LatentSpec("tok", _teacher, layer=2 / 3, coefficient=0.5, standardize=True),
             LatentSpec("pooled", lambda d: RandomProjectionTeacher(
                 "pooled", 8, 4, "pooled", view=lambda b: (b.x0.x.sum(1), None)), layer="block0", coefficient=2.0)),
    curriculum=Curriculum(warmup=0.5), repa_latents=("tok",), align_coefficient=0.2, projector_hidden=16)


def _trainer(method, preset=PRESET, steps=10):
    train = run_train_config(steps, lr=1e-3, seed=0, ema_decay=0.9, progress=False)
    return build_trainer(ToyDomain(), preset, method, train, batch_size=4, device="cpu", progress=False)


def test_the_toy_domain_implements_the_protocols():
    assert isinstance(ToyDomain(), Domain) and isinstance(ToyData(), TrainingData)


def test_methods_differ_only_in_latents_coefficients_and_curriculum():
    reed, repa, vanilla = _trainer("reed"), _trainer("repa"), _trainer("vanilla")
    assert [s.name for s in reed.objective.specs] == ["tok", "pooled"] and [s.name for s in repa.objective.specs] == ["tok"]
    assert reed.objective.specs[0].coefficient == pytest.approx(0.1) and reed.objective.specs[1].coefficient == 0.4
    assert repa.objective.specs[0].coefficient == pytest.approx(0.2) and isinstance(repa.objective.specs[0].schedule, Constant)
    assert reed.objective.denoise_schedule(0) == 0.0 and repa.objective.denoise_schedule(0) == 1.0
    assert not vanilla.objective.specs and vanilla.model_config["domain"] == "toy"
    assert [s.layer for s in reed.objective.specs] == ["block1", "block0"]
    assert reed.objective.projectors["tok"][0].in_features == 32 and reed.objective.projectors["tok"][-1].out_features == 6
    # same seed: identical initial denoisers whatever the method
    assert all(torch.equal(a, b) for a, b in zip(reed.model.parameters(), vanilla.model.parameters(), strict=True))
    with pytest.raises(ValueError, match="method"):
        _trainer("repa-ish")
    from reed_core.cli import LR_DECAY_NAMES, METHOD_NAMES, PRECISION_NAMES
    from reed_core.train import _LR_DECAYS, _PRECISIONS

    assert set(METHODS) == {"vanilla", "repa", "reed"} == set(METHOD_NAMES)  # the CLIs' torch-free copy agrees
    assert set(LR_DECAY_NAMES) == set(_LR_DECAYS)
    assert set(PRECISION_NAMES) == set(_PRECISIONS)


def test_cached_latents_match_on_the_fly_ones_on_crops():
    # the pooled toy teacher sums over the window on the fly but over the whole item when cached: cache tokens only
    cached = replace(PRESET, latents=(replace(PRESET.latents[0], cached=True), PRESET.latents[1]))
    a, b = _trainer("reed"), _trainer("reed", cached)
    assert [s.teacher is None for s in b.objective.specs] == [True, False]
    items = np.array([3, 7, 11, 19])
    batch = b.data.collate(items)
    assert (batch.x0.start > 0).any(), "the test must exercise crops"
    ref = _teacher(None)(a.data.collate(items))
    got = batch.representations["tok"]
    assert torch.equal(got.mask, ref.mask)
    assert torch.allclose(got.features[got.mask], ref.features[ref.mask], atol=2e-3)  # float16 storage
    ha, hb = a.fit(resume=False), b.fit(resume=False)
    assert [h["loss"] for h in ha] == pytest.approx([h["loss"] for h in hb], rel=2e-3, abs=2e-4)


def _toy_pairs(mask):
    """Token i of a sample is paired with i+1, i+2 and the sample's first token (3 pairs; masked off the end)."""
    L = mask.shape[1]
    i = torch.arange(L)[:, None]
    idx = torch.cat([i + 1, i + 2, torch.zeros_like(i)], 1).expand(mask.shape[0], L, 3)
    ok = (idx < L) & mask[:, :, None]
    idx = idx.clamp(max=L - 1)
    return idx, ok & torch.gather(mask, 1, idx.flatten(1)).view_as(idx)


class PairTeacher(RandomProjectionTeacher):
    """Features of pair (i, j): tanh(x_i W1 + x_j W1') W2, at the ``_toy_pairs`` of the sample it is given."""

    def __init__(self):
        super().__init__("pair", 16, 4, "pair")

    def encode(self, batch):
        x, mask = batch.x0.x, batch.x0.mask
        idx, ok = _toy_pairs(mask)
        xj = torch.gather(x[:, None].expand(-1, x.shape[1], -1, -1), 2, idx[..., None].expand(-1, -1, -1, 8))
        f = torch.tanh(torch.cat([x[:, :, None].expand_as(xj), xj], -1) @ self.w1) @ self.w2
        return Representation(f * ok[..., None], ok, "pair", idx)


def test_cached_pair_features_are_the_whole_items_features_of_the_same_two_tokens(tmp_path):
    data = ToyData()
    data.pairs = lambda x0: _toy_pairs(x0.mask)
    data.ids = np.arange(len(data))
    teacher = PairTeacher()
    cache = cache_features({"p": teacher, "t": _teacher(None)}, data, tmp_path, progress=False)["p"]
    items = np.arange(len(data))
    x = data.collate(items)
    assert (x.start > 0).any(), "the test must exercise crops"
    got, fly = cache.representation(items, x), teacher(Batch(x))
    # a pair of the crop exists in the whole item unless it joins a token to a crop's first token other than the item's
    first = torch.zeros_like(fly.mask)
    first[..., 2] = True
    expect = fly.mask & ~(first & (x.start[:, None, None] > 0))
    assert torch.equal(got.mask, expect)
    assert torch.allclose(got.features[expect], fly.features[expect], atol=2e-3)  # float16 storage
    assert (got.features[~got.mask] == 0).all()
    # written once with its pair index, read back from disk
    files = sorted(p.name for p in tmp_path.glob("teacher_pair_*.npy"))
    assert len(files) == 2 and files[1] == files[0].replace(".npy", "_index.npy")
    again = FeatureCache(teacher, data, tmp_path, progress=False)
    assert again.teacher is None and isinstance(again.index, np.memmap)
    assert torch.equal(again.representation(items, x).features, got.features)


def test_cache_dir_is_written_once_and_reused(tmp_path):
    teacher, data = _teacher(None), ToyData()
    with pytest.raises(ValueError, match="needs `ids`"):
        FeatureCache(teacher, data, tmp_path, progress=False)
    data.ids = np.arange(len(data))
    first = FeatureCache(teacher, data, tmp_path, progress=False)
    files = list(tmp_path.glob("teacher_tok_*.npy"))
    assert len(files) == 1
    second = FeatureCache(teacher, data, tmp_path, progress=False)
    assert np.array_equal(np.asarray(first.features), np.asarray(second.features))
    assert isinstance(second.features, np.memmap)
    # other items with the same lengths (a different subset) get their own file
    other = ToyData()
    other.ids = np.arange(len(other)) + 100
    FeatureCache(teacher, other, tmp_path, progress=False)
    assert len(list(tmp_path.glob("teacher_tok_*.npy"))) == 2
    # the same weights with another setting (in extra_repr) that changes the features: another file too
    teacher.extra_repr = lambda: "name='tok', grid=4"
    FeatureCache(teacher, data, tmp_path, progress=False)
    assert len(list(tmp_path.glob("teacher_tok_*.npy"))) == 3


class RandomCropToyData(ToyData):
    """Windows drawn from the trainer's per-step generator (a collate that names ``rng``)."""

    def collate(self, items, rng=None):
        if rng is None:
            return super().collate(items)
        starts = [int(rng.integers(0, max(1, len(self.items[i]) - self.crop + 1))) for i in items.tolist()]
        rows = [self.items[i][s:s + self.crop] for i, s in zip(items.tolist(), starts, strict=True)]
        return self._pad(rows, starts, self.crop)


def test_a_collate_that_takes_rng_gets_the_per_step_generator_and_the_cache_follows_its_windows():
    domain = ToyDomain()
    domain.data = RandomCropToyData()
    cached = replace(PRESET, latents=(replace(PRESET.latents[0], cached=True),))
    t = build_trainer(domain, cached, "reed", run_train_config(4, lr=1e-3, seed=0, ema_decay=0.9, progress=False), batch_size=4,
                      device="cpu", progress=False)
    a = t.data(2)
    assert torch.equal(t.data(2).x0.start, a.x0.start)  # a function of (seed, step, shard): resuming is exact
    starts = torch.stack([t.data(s).x0.start for s in range(12)])
    assert len({tuple(r.tolist()) for r in starts}) > 1
    teacher = _teacher(None)
    items = t.data.sampler.indices(2)
    whole = teacher(Batch(domain.data.whole(items)))
    got = a.representations["tok"]
    for r in range(len(items)):
        s0, n = int(a.x0.start[r]), int(a.x0.mask[r].sum())
        assert torch.allclose(got.features[r, :n], whole.features[r, s0:s0 + n], atol=2e-3)  # float16 storage


def test_hybrid_latent_builds_a_conditioned_denoiser():
    hybrid = replace(PRESET, latents=(replace(PRESET.latents[1], condition=True),), repa_latents=())
    t = _trainer("reed", hybrid, steps=3)
    assert dict(t.model.latent_embed.items())["pooled"].in_features == 4
    assert t.objective.specs[0].condition and np.isfinite(t.fit(resume=False)[-1]["loss"])


def test_preset_validation():
    with pytest.raises(ValueError, match="repa_latents"):
        DomainPreset(PRESET.latents, Curriculum(), repa_latents=("nope",))
    with pytest.raises(ValueError, match="unique"):
        DomainPreset(PRESET.latents * 2, Curriculum(), repa_latents=())


class DistillingProcess(ToyProcess):
    """The toy process with a ``distill``: squared error of the prediction against the teacher's (B,L,8) features."""

    def distill(self, prediction, corruption, target):
        return ((prediction.float() - target.features) ** 2).mean(-1).mul(target.mask).sum(1) / target.mask.sum(1)


class DistillingDomain(ToyDomain):
    def build_process(self):
        return DistillingProcess()


def test_a_prediction_latent_is_distilled_in_every_method_with_no_projector():
    from reed_core import PREDICTION, build_trainer

    teacher = lambda d: RandomProjectionTeacher("dist", 8, 8, "token", view=lambda b: (b.x0.x, b.x0.mask))  # noqa: E731
    preset = replace(PRESET, latents=(*PRESET.latents, LatentSpec("dist", teacher, layer=PREDICTION, coefficient=0.7,
                                                                 always=True)))
    train = run_train_config(10, lr=1e-3, seed=0, ema_decay=0.9, progress=False)
    for method, names in (("vanilla", ["dist"]), ("repa", ["tok", "dist"]), ("reed", ["tok", "pooled", "dist"])):
        t = build_trainer(DistillingDomain(), preset, method, train, batch_size=4, device="cpu", progress=False)
        assert [s.name for s in t.objective.specs] == names and "dist" not in t.objective.projectors
        spec = t.objective.specs[-1]
        assert spec.coefficient == 0.7 and isinstance(spec.schedule, Constant)  # outside lambda and the curriculum
        assert PREDICTION not in t.objective.layers
    vanilla = build_trainer(DistillingDomain(), preset, "vanilla", train, batch_size=4, device="cpu", progress=False)
    terms = vanilla.module(vanilla.data(0), 0, torch.Generator().manual_seed(0))
    assert terms.align["dist"] > 0
    assert terms.total.item() == pytest.approx(terms.denoise.item() + 0.7 * terms.align["dist"].item(), rel=1e-6)
    terms.align["dist"].backward()  # the distillation term alone reaches the denoiser through its prediction
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vanilla.model.out.parameters())
    with pytest.raises(ValueError, match="has no distill"):
        build_trainer(ToyDomain(), preset, "vanilla", train, batch_size=4, device="cpu", progress=False)
    with pytest.raises(ValueError, match="matched on the prediction"):
        build_trainer(DistillingDomain(), replace(preset, latents=(replace(preset.latents[-1], condition=True),),
                                                  repa_latents=()), "reed", train, batch_size=4, device="cpu",
                      progress=False)


class SeesTheCorruption(RandomProjectionTeacher):
    """A teacher of what the denoiser is shown: the random projection of the corrupted input x_t."""

    sees_corruption = True

    def encode(self, batch, corruption):
        return Representation(torch.tanh(corruption.x_t @ self.w1) @ self.w2, batch.x0.mask, "token")


def test_a_teacher_that_sees_the_corruption_gets_the_steps_own_corruption_and_is_never_cached():
    from reed_core import PREDICTION, build_trainer

    preset = replace(PRESET, latents=(LatentSpec("cond", lambda d: SeesTheCorruption("cond", 8, 8), layer=PREDICTION,
                                                 always=True),), repa_latents=())
    train = run_train_config(10, lr=1e-3, seed=0, ema_decay=0.9, progress=False)
    t = build_trainer(DistillingDomain(), preset, "vanilla", train, batch_size=4, device="cpu", progress=False)
    batch = t.data(0)
    terms = t.module(batch, 0, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the objective's own draws, replayed
    time = t.objective.process.sample_time(batch.batch_size, generator=g)
    corruption = t.objective.process.corrupt(batch.x0, time, generator=g)
    with torch.no_grad():
        pred = t.model(corruption.x_t, time, None).prediction
        z = t.objective.specs[0].teacher(batch, corruption)
        want = t.objective.process.distill(pred, corruption, z).mean()
        clean = t.objective.process.distill(pred, corruption, t.objective.specs[0].teacher(
            batch, replace(corruption, x_t=batch.x0.x))).mean()
    assert terms.align["cond"].item() == pytest.approx(want.item(), rel=1e-5)
    assert abs(clean.item() - want.item()) > 1e-3  # the target is not the clean batch's
    with pytest.raises(ValueError, match="sees the corruption"):
        t.objective.specs[0].teacher(batch)
    with pytest.raises(ValueError, match="cannot be cached"):
        build_trainer(DistillingDomain(), replace(preset, latents=(replace(preset.latents[0], cached=True),)),
                      "vanilla", train, batch_size=4, device="cpu", progress=False)
    with pytest.raises(ValueError, match="no z to condition"):
        AlignmentSpec("cond", "block0", "token", teacher=SeesTheCorruption("cond", 8, 8), condition=True)


def test_cached_teachers_are_computed_where_the_trainer_trains(monkeypatch):
    """No device given: the trainer takes the process's GPU when torch sees one, and the cached teacher features
    are computed there too (they were computed on the CPU, which on a GPU machine meant its slowest part)."""
    import reed_core.recipe as recipe
    from reed_core.train import training_device

    seen = []
    real = recipe.cache_features
    monkeypatch.setattr(recipe, "cache_features", lambda *a, **kw: seen.append(kw["device"]) or real(*a, **kw))
    cached = replace(PRESET, latents=tuple(replace(s, cached=True) for s in PRESET.latents))
    train = run_train_config(2, lr=1e-3, seed=0, ema_decay=0.9, progress=False)
    trainer = build_trainer(ToyDomain(), cached, "reed", train, batch_size=4, progress=False)
    assert seen == [trainer.device] == [training_device()]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert training_device() == torch.device("cuda:0") and training_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert training_device() == torch.device("cuda:1")
