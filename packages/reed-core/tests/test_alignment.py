import pytest
import torch

from reed_core.alignment import alignment_loss, masked_pool, pair_alignment, pooled_alignment, token_alignment
from reed_core.projector import Projector, ProjectorBank
from reed_core.testing import tiny_pair_batch, tiny_token_batch


def test_identical_features_reach_minimum():
    z, mask = tiny_token_batch(3, 5, 8)
    assert torch.allclose(token_alignment(z, z, mask), torch.full((3,), -1.0), atol=1e-6)
    zp, mp = tiny_pair_batch()
    assert torch.allclose(pair_alignment(zp, zp, mp), torch.full((2,), -1.0), atol=1e-6)
    assert torch.allclose(pooled_alignment(z[:, 0], z[:, 0]), torch.full((3,), -1.0), atol=1e-6)
    # scale-invariant, and the opposite direction is the maximum
    assert torch.allclose(token_alignment(3 * z, z, mask), torch.full((3,), -1.0), atol=1e-6)
    assert torch.allclose(token_alignment(-z, z, mask), torch.full((3,), 1.0), atol=1e-6)


def test_padding_is_ignored_token_and_pair():
    z_hat, mask = tiny_token_batch(4, 7, 8, min_length=2, seed=1)
    z, _ = tiny_token_batch(4, 7, 8, min_length=2, seed=2)
    base = token_alignment(z_hat, z, mask)
    garbage = torch.randn_like(z_hat) * 100
    noisy = torch.where(mask[..., None], z_hat, garbage)
    assert torch.allclose(token_alignment(noisy, z, mask), base)
    for b in range(4):  # equals the per-sample computation on the valid part only
        n = int(mask[b].sum())
        one = token_alignment(z_hat[b:b + 1, :n], z[b:b + 1, :n])
        assert torch.allclose(one, base[b:b + 1], atol=1e-6)
    zp, mp = tiny_pair_batch(seed=3)
    zhp = torch.randn_like(zp)
    ref = pair_alignment(zhp, zp, mp)
    assert torch.allclose(pair_alignment(torch.where(mp[..., None], zhp, 1e3), zp, mp), ref)


def test_masked_pool_ignores_padding():
    h, mask = tiny_token_batch(3, 6, 4, min_length=2, seed=4)
    noisy = torch.where(mask[..., None], h, torch.full_like(h, 1e4))
    assert torch.allclose(masked_pool(noisy, mask), masked_pool(h, mask))
    n = int(mask[1].sum())
    assert torch.allclose(masked_pool(h, mask)[1], h[1, :n].mean(0), atol=1e-6)
    assert torch.allclose(masked_pool(h, mask, "sum")[1], h[1, :n].sum(0), atol=1e-5)


def test_float32_under_low_precision_and_standardize():
    z, mask = tiny_token_batch(2, 4, 8)
    out = token_alignment(z.bfloat16(), z.bfloat16(), mask)
    assert out.dtype == torch.float32
    a = alignment_loss("token", z, z * 5 + 3, mask, standardize_target=True)
    b = alignment_loss("token", z, z, mask, standardize_target=True)
    assert torch.allclose(a, b, atol=1e-5)  # per-channel affine changes vanish after standardisation
    with pytest.raises(ValueError, match="granularity"):
        alignment_loss("edge", z, z, mask)
    with pytest.raises(ValueError, match="shape"):
        token_alignment(z[..., :4], z, mask)


def test_empty_sample_contributes_zero():
    z, mask = tiny_token_batch(2, 4, 8)
    mask[1] = False
    out = token_alignment(torch.randn_like(z), z, mask)
    assert out[1] == 0.0 and torch.isfinite(out).all()


def test_projector_shapes_and_bank():
    p = Projector(16, 8, hidden_dim=32, depth=3)
    assert [type(m).__name__ for m in p] == ["Linear", "SiLU", "Linear", "SiLU", "Linear"]
    assert p(torch.randn(2, 5, 16)).shape == (2, 5, 8)
    bank = ProjectorBank({"a": (16, 8), "b": (16, 4)}, hidden_dim=32, depth=2)
    assert bank.project("b", torch.randn(3, 16)).shape == (3, 4)
    with pytest.raises(KeyError, match="no projector"):
        bank.project("c", torch.randn(3, 16))
    with pytest.raises(ValueError):
        Projector(4, 4, depth=0)
