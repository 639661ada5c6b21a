import pytest
import torch

from reed_core import Interpolant
from reed_image.model import SIT_PRESETS, SiT, SiTConfig, sit_config
from reed_image.sampler import guided_velocity, sample

PAPER = dict(image_size=32, in_channels=4, num_classes=1000, learn_sigma=True)  # 256 px SD-VAE latents


@pytest.mark.parametrize("name,millions", [("S/2", 33), ("B/2", 130), ("L/2", 458), ("XL/2", 675)])
def test_preset_parameter_counts_match_the_papers(name, millions):
    with torch.device("meta"):
        model = SiT(sit_config(name, **PAPER))
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, rel=0.01)
    assert {"S/4", "S/8", "XL/4", "XL/8", "tiny"} <= set(SIT_PRESETS)


def test_patchify_round_trip_zero_init_and_captured_tokens():
    torch.manual_seed(0)
    model = SiT(sit_config("tiny", image_size=32, in_channels=3))
    x = torch.randn(2, 3, 32, 32)
    p = model.patchify(x)
    assert p.shape == (2, 64, 4 * 4 * 3) and torch.equal(model.unpatchify(p), x)
    assert torch.equal(p[0, 1], x[0, :, 0:4, 4:8].permute(1, 2, 0).reshape(-1))  # token 1 = row 0, column 1
    out = model(x, torch.rand(2), torch.tensor([1, 2]), capture=("block2", "block6"))
    assert torch.equal(out.prediction, torch.zeros_like(x))  # adaLN-Zero + zero final layer
    assert {k: tuple(v.shape) for k, v in out.hiddens.items()} == {"block2": (2, 64, 96), "block6": (2, 64, 96)}
    with pytest.raises(ValueError, match="block1..block6"):
        model(x, torch.rand(2), None, capture=("block7",))
    with pytest.raises(ValueError, match="multiple of the patch"):
        sit_config("S/8", image_size=28)


def test_label_dropout_only_in_training_and_null_class_is_unconditional():
    torch.manual_seed(0)
    model = SiT(sit_config("tiny", class_dropout=0.5))
    for p in model.parameters():  # leave the zero init so labels matter
        torch.nn.init.normal_(p, std=0.05)
    x, t, y = torch.randn(64, 1, 32, 32), torch.rand(64), torch.randint(0, 10, (64,))
    model.eval()
    assert torch.equal(model(x, t, y).prediction, model(x, t, y).prediction)
    null = model(x, t, torch.full_like(y, model.null_class)).prediction
    assert torch.equal(model(x, t, None).prediction, null)
    model.train()
    torch.manual_seed(1)
    dropped = (model(x, t, y).prediction - null).flatten(1).abs().amax(1) < 1e-6
    assert 10 < int(dropped.sum()) < 54  # about half of the labels became the null class


def _gaussian_velocity(proc, mu, var):
    """E[d x_t/dt | x_t] for x0 ~ N(mu, diag(var)): the exact velocity field of Gaussian data."""
    def v(x, t):
        a, s, da, ds = (c[:, None] for c in proc.coefficients(t))
        S = a**2 * var + s**2
        r = x - a * mu
        return da * (mu + a * var / S * r) + ds * (s / S * r)
    return v


@pytest.mark.parametrize("path", ["linear", "cosine"])
@pytest.mark.parametrize("method,steps", [("euler", 200), ("heun", 40), ("sde", 400)])
def test_samplers_reach_the_gaussian_data_distribution(path, method, steps):
    proc = Interpolant(path=path)
    mu, var = torch.tensor([1.5, -0.5]), torch.tensor([0.25, 2.0])
    x = sample(None, proc, None, shape=(40000, 2), num_steps=steps, method=method,
               generator=torch.Generator().manual_seed(0), velocity=_gaussian_velocity(proc, mu, var))
    assert torch.allclose(x.mean(0), mu, atol=0.04), x.mean(0)
    cov = torch.cov(x.T)
    assert torch.allclose(cov.diagonal(), var, rtol=0.08), cov
    assert abs(cov[0, 1]) < 0.03


def test_guidance_interval_and_bad_values():
    torch.manual_seed(0)
    model = SiT(sit_config("tiny")).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    y = torch.tensor([3, 7])
    x = torch.randn(2, 1, 32, 32)
    plain = guided_velocity(model, y)(x, torch.full((2,), 0.9))
    v = guided_velocity(model, y, cfg=2.5, interval=(0.0, 0.75))
    assert torch.allclose(v(x, torch.full((2,), 0.9)), plain, atol=1e-5)  # outside the interval: no guidance
    inside = v(x, torch.full((2,), 0.5))
    cls, null = model(x, torch.full((2,), 0.5), y).prediction, model(x, torch.full((2,), 0.5), None).prediction
    assert torch.allclose(inside, null + 2.5 * (cls - null), atol=1e-5)
    imgs = sample(model, Interpolant(), y, shape=(1, 32, 32), num_steps=3, method="heun", cfg=1.5,
                  generator=torch.Generator().manual_seed(0))
    assert imgs.shape == (2, 1, 32, 32) and torch.isfinite(imgs).all()
    with pytest.raises(ValueError, match="cfg"):
        guided_velocity(model, y, cfg=0.5)
    with pytest.raises(ValueError, match="interval"):
        guided_velocity(model, y, cfg=2.0, interval=(0.8, 0.2))
    with pytest.raises(ValueError, match="sampler method"):
        sample(model, Interpolant(), y, shape=(1, 32, 32), method="ddim")


def test_hybrid_latents_start_at_zero_and_act_only_where_kept():
    from reed_core import LatentCondition

    torch.manual_seed(0)
    cfg = SiTConfig(hidden=32, depth=2, heads=2, patch=4, latent_dims={"tok": 5, "pool": 3})
    model = SiT(cfg).eval()
    for p in model.parameters():  # a trained-looking model (adaLN-Zero starts at the identity)
        torch.nn.init.normal_(p, std=0.05)
    x, t, y = torch.randn(3, 1, 32, 32), torch.rand(3), torch.tensor([1, 2, 3])
    keep = torch.tensor([True, False, True])
    lat = {"tok": LatentCondition(torch.randn(3, 64, 5), keep), "pool": LatentCondition(torch.randn(3, 3), keep)}
    base = model(x, t, y).prediction
    with_z = model(x, t, y, latents=lat).prediction
    assert torch.allclose(base[1], with_z[1], atol=1e-6) and not torch.allclose(base[0], with_z[0], atol=1e-3)
    fresh = SiT(cfg).eval()  # zero-initialised embeddings: a fresh hybrid ignores z
    assert torch.equal(fresh(x, t, y).prediction, fresh(x, t, y, latents=lat).prediction)
    with pytest.raises(ValueError, match="16 tokens; SiT has 64"):
        model(x, t, y, latents={"tok": LatentCondition(torch.randn(3, 16, 5), keep)})
    with pytest.raises(ValueError, match="built for hybrid latents"):
        model(x, t, y, latents={"other": LatentCondition(torch.randn(3, 3), keep)})


def test_self_predicted_latents_drive_the_sampler():
    from reed_core import AlignmentSpec, ProjectorBank
    from reed_image.sampler import hybrid_latents

    torch.manual_seed(0)
    model = SiT(SiTConfig(hidden=32, depth=2, heads=2, patch=4, latent_dims={"z": 6})).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    specs = (AlignmentSpec("z", "block1", "pooled", condition=True),)
    bank = ProjectorBank({"z": (32, 6)}, hidden_dim=16)
    y = torch.tensor([0, 1])
    kw = dict(shape=(1, 32, 32), num_steps=3, method="euler")
    plain = sample(model, Interpolant(), y, generator=torch.Generator().manual_seed(0), **kw)
    assert hybrid_latents(model, specs, bank, y, "none") is None
    lat = hybrid_latents(model, specs, bank, y, "self")
    guided = sample(model, Interpolant(), y, generator=torch.Generator().manual_seed(0), latents=lat, cfg=2.0, **kw)
    selfz = sample(model, Interpolant(), y, generator=torch.Generator().manual_seed(0), latents=lat, **kw)
    assert guided.shape == selfz.shape == plain.shape and not torch.allclose(plain, selfz, atol=1e-4)
