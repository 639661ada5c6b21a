"""The variational hybrid for inverse folding: it trains conditioned on its per-residue latents, designs with no z
or its own z, and the fast design path (encoder latents projected once) equals reed-core's definition of self z."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from reed_core import latent_conditions
from reed_protein.constants import MASK_INDEX
from reed_protein.data import ChainSet
from reed_protein.evaluation import evaluate
from reed_protein.presets import protein_trainer, teacher_preset
from reed_protein.sampler import decoder, design_batch


@pytest.fixture(scope="module")
def chains():
    return ChainSet()


@pytest.fixture(scope="module")
def hybrid(chains):
    t = protein_trainer("reed", chains, None, model="tiny", steps=3, batch_size=2, max_length=32,
                        preset=teacher_preset("inproject", hybrid=True), ids=chains.split("train")[:12],
                        progress=False, device="cpu")
    for _ in range(3):
        assert np.isfinite(t.train_step()["loss"])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the embeddings start at zero (the unconditional model); give z a visible effect
        for lin in t.model.latent_embed.values():
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g))
    return t.model.eval(), t.objective


def test_hybrid_preset_conditions_on_the_residue_latents_only():
    specs = {s.name: s.condition for s in teacher_preset("inproject", hybrid=True).latents}
    assert specs == {"single": True, "pair": False, "structure": True}
    assert not any(s.condition for s in teacher_preset("inproject").latents)


def test_fresh_hybrid_starts_as_the_unconditional_model(chains):
    t = protein_trainer("reed", chains, None, model="tiny", steps=1, batch_size=2, max_length=32,
                        preset=teacher_preset("inproject", hybrid=True), ids=chains.split("train")[:4],
                        progress=False, device="cpu")
    assert set(t.model.latent_embed) == {"single", "structure"}
    x = chains.batch(chains.split("test")[:2], 48)
    S = torch.full_like(x.S, MASK_INDEX)
    t1 = torch.ones(2)
    kw = {"specs": t.objective.specs, "projectors": t.objective.projectors}
    torch.testing.assert_close(decoder(t.model.eval(), x, latents="self", **kw)(S, t1),
                               decoder(t.model, x, latents="none", **kw)(S, t1))


def test_self_z_design_path_equals_the_core_definition(chains, hybrid):
    model, objective = hybrid
    x = chains.batch(chains.split("test")[:3], 64)
    g = torch.Generator().manual_seed(1)
    S = torch.where(torch.rand(x.S.shape, generator=g) < 0.6, torch.full_like(x.S, MASK_INDEX), x.S)
    xs, t = replace(x, S=S), torch.full((3,), 0.6)
    kw = {"specs": objective.specs, "projectors": objective.projectors}
    with torch.no_grad():
        lat = latent_conditions("self", objective.specs, model=model, projectors=objective.projectors, x_t=xs, t=t)
        ref = model(xs, t, latents=lat).prediction
        fast = decoder(model, x, latents="self", **kw)(S, t)
        none = decoder(model, x, latents="none", **kw)(S, t)
    torch.testing.assert_close(fast, ref)
    masked = S == MASK_INDEX  # the sampler reads the still-masked residues' logits only (the rest are 0)
    torch.testing.assert_close(none[masked], model(xs, t).prediction[masked])
    assert not torch.allclose(fast, none)  # z reaches the decoder


def test_hybrid_designs_and_evaluates_in_both_modes(chains, hybrid):
    model, objective = hybrid
    kw = {"specs": objective.specs, "projectors": objective.projectors}
    ids = chains.split("ts50")[:4]
    x = chains.batch(ids, 80)
    runs = {mode: design_batch(model, x, num_steps=4, generator=torch.Generator().manual_seed(0), latents=mode, **kw)[0]
            for mode in ("none", "self")}
    again = design_batch(model, x, num_steps=4, generator=torch.Generator().manual_seed(0), latents="self", **kw)[0]
    assert torch.equal(runs["self"], again) and not torch.equal(runs["self"], runs["none"])
    for mode in ("none", "self"):
        r = evaluate(model, chains, ids, num_steps=4, latents=mode, **kw)
        assert 0.0 <= r["recovery"] <= 100.0 and np.isfinite(r["perplexity"]) and r["chains"] == 4
    with pytest.raises(ValueError, match="variational-hybrid"):
        design_batch(model, x, num_steps=2, latents="self")
    with pytest.raises(ValueError, match="latent mode"):
        design_batch(model, x, num_steps=2, latents="given", **kw)
