"""Declarative assembly: a toy domain (variable-length token items, cropped windows) through build_trainer."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from reed_core import (
    METHODS,
    Constant,
    Curriculum,
    Domain,
    DomainPreset,
    FeatureCache,
    LatentSpec,
    LinearInterpolant,
    TrainingData,
    build_trainer,
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
    from reed_core.cli import METHOD_NAMES

    assert set(METHODS) == {"vanilla", "repa", "reed"} == set(METHOD_NAMES)  # the CLIs' torch-free copy agrees


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
    with pytest.raises(ValueError, match="pair"):
        FeatureCache(RandomProjectionTeacher("p", 8, 4, "pair"), ToyData())


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
