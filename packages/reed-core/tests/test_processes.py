"""The shared interpolant: both paths, every prediction target, both time samplers."""

import pytest
import torch

from reed_core import Interpolant


@pytest.mark.parametrize("path", ["linear", "cosine"])
def test_interpolant_target_is_the_time_derivative_and_inverts(path):
    proc = Interpolant(path=path)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, 0.4, 0.7, 0.95], dtype=torch.float64)
    c = proc.corrupt(x0, t, generator=torch.Generator().manual_seed(1))
    h = 1e-5
    a1, s1, _, _ = proc.coefficients(t + h)
    a0, s0, _, _ = proc.coefficients(t - h)
    eps = c.extras["noise"]
    fd = ((a1 - a0)[:, None, None, None] * x0 + (s1 - s0)[:, None, None, None] * eps) / (2 * h)
    assert torch.allclose(fd, c.target, atol=1e-6)
    assert proc.loss(c.target, c).abs().max() == 0  # the exact velocity has zero loss
    x0_hat, eps_hat = proc.x0_and_noise(c.target, c.x_t, t)
    assert torch.allclose(x0_hat, x0, atol=1e-9) and torch.allclose(eps_hat, eps, atol=1e-9)


@pytest.mark.parametrize("path", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["x0", "noise"])
def test_every_prediction_target_gives_the_same_velocity_and_score(path, prediction):
    ref, proc = Interpolant(path=path), Interpolant(prediction=prediction, path=path)
    x0 = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.05, 0.3, 0.5, 0.8, 0.97], dtype=torch.float64)
    c, r = (p.corrupt(x0, t, generator=torch.Generator().manual_seed(1)) for p in (proc, ref))
    assert torch.equal(c.x_t, r.x_t)
    assert torch.allclose(proc.velocity(c.target, c.x_t, t), r.target, atol=1e-9)
    assert torch.allclose(proc.score(c.target, c.x_t, t), ref.score(r.target, r.x_t, t), atol=1e-7)


def test_time_sampling():
    g = torch.Generator().manual_seed(0)
    u = Interpolant(t_min=0.1, t_max=0.9).sample_time(20000, generator=g)
    assert 0.1 <= u.min() and u.max() <= 0.9 and abs(u.mean() - 0.5) < 0.01
    ln = Interpolant(time_sampling="lognormal").sample_time(20000, generator=g)
    assert abs(torch.logit(ln).mean()) < 0.03 and abs(torch.logit(ln).std() - 1.0) < 0.03
    for bad in ({"path": "vp"}, {"time_sampling": "beta"}, {"prediction": "score"}, {"lognormal_std": 0.0}):
        with pytest.raises(ValueError):
            Interpolant(**bad)
