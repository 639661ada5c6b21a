import math

import pytest
import torch

from reed_core.curriculum import (
    Constant,
    ConstantTime,
    Cosine,
    CosineTime,
    CutoffTime,
    Delayed,
    Linear,
    LinearTime,
    Piecewise,
    SigmoidTime,
    TerminalTime,
    WarmUp,
)
from reed_core.recipe import Curriculum


def test_constant():
    s = Constant(0.3)
    assert s(0) == s(10**6) == 0.3


def test_linear_values_and_hold():
    s = Linear(1.0, 0.0, 10, 20)
    assert s(0) == 1.0 and s(10) == 1.0
    assert s(15) == pytest.approx(0.5)
    assert s(20) == 0.0 and s(1000) == 0.0


def test_cosine_values_and_continuity():
    s = Cosine(1.0, 0.2, 100, 300)
    assert s(0) == s(100) == pytest.approx(1.0)
    assert s(200) == pytest.approx(0.6)
    assert s(300) == pytest.approx(0.2) and s(10**5) == pytest.approx(0.2)
    # continuity at both joins
    assert abs(s(101) - s(100)) < 1e-3 and abs(s(299) - s(300)) < 1e-3


def test_warmup_with_delay():
    s = WarmUp(steps=10, delay=5, value=2.0)
    assert s(0) == 0.0 and s(4) == 0.0 and s(5) == 0.0
    assert s(10) == pytest.approx(1.0)
    assert s(15) == 2.0 and s(100) == 2.0
    assert WarmUp(0)(0) == 1.0


def test_delayed():
    s = Delayed(Linear(0.0, 1.0, 0, 10), delay=5)
    assert s(4) == 0.0 and s(5) == 0.0 and s(10) == pytest.approx(0.5) and s(15) == 1.0


def test_piecewise_selects_pieces_and_validates():
    s = Piecewise((10, 20), (Constant(1.0), Linear(1.0, 0.0, 10, 20), Constant(0.0)))
    assert s(0) == 1.0 and s(9) == 1.0 and s(10) == 1.0 and s(15) == pytest.approx(0.5) and s(20) == 0.0
    with pytest.raises(ValueError, match="len"):
        Piecewise((10,), (Constant(1.0),))
    with pytest.raises(ValueError, match="increase"):
        Piecewise((10, 5), (Constant(1.0),) * 3)


@pytest.mark.parametrize("bad", [lambda: Linear(0, 1, 5, 5), lambda: Cosine(0, 1, -1, 3), lambda: WarmUp(-1)])
def test_invalid_intervals_raise(bad):
    with pytest.raises(ValueError):
        bad()


CURRICULA = {"image": Curriculum(warmup=0.05), "protein": Curriculum(warmup=0.25, decay="cosine"),
             "molecule": Curriculum(warmup=0.15), "delayed-linear": Curriculum(warmup=0.1, delay=0.1, decay="linear")}


@pytest.mark.parametrize("name,total", [("image", 1000), ("protein", 800), ("molecule", 200), ("delayed-linear", 500)])
def test_curricula_continuous_and_in_range(name, total):
    c = CURRICULA[name]
    for sched in (c.denoise(total), c.align(total)):
        values = [sched(s) for s in range(0, total + 5)]
        assert all(0.0 <= v <= 1.0 for v in values)
        jumps = [abs(b - a) for a, b in zip(values, values[1:], strict=False)]
        assert max(jumps) <= 2.0 / (0.05 * total) + 1e-9  # no jump larger than a ramp step
    assert c.denoise(total)(0) == 0.0 and c.denoise(total)(total) == 1.0


def test_protein_curriculum_matches_paper():
    c = CURRICULA["protein"]
    denoise, align = c.denoise(2000), c.align(2000)
    assert denoise(500) == 1.0 and denoise(250) == pytest.approx(0.5)
    # alignment held during warm-up, continuous at the join, cosine-decayed to 0 at the end
    assert align(0) == align(500) == 1.0
    assert abs(align(501) - align(500)) < 1e-4
    assert align(1250) == pytest.approx(0.5) and align(2000) == pytest.approx(0.0)


def test_curriculum_boundaries_and_validation():
    img = CURRICULA["image"]
    assert img.denoise(1_000_000)(50_000) == 1.0 and img.denoise(1_000_000)(25_000) == pytest.approx(0.5)
    assert img.align(10)(10**6) == 1.0 and Curriculum().denoise(100)(0) == 1.0  # no warm-up: full weight at once
    d = CURRICULA["delayed-linear"]  # alignment only for 50 steps, ramp 50 steps, then linear decay to 0 at 500
    assert d.denoise(500)(49) == 0.0 and d.denoise(500)(75) == pytest.approx(0.5) and d.denoise(500)(100) == 1.0
    assert d.align(500)(100) == 1.0 and d.align(500)(300) == pytest.approx(0.5) and d.align(500)(500) == 0.0
    for bad in ({"warmup": 1.0}, {"delay": -0.1}, {"decay": "exp"}):
        with pytest.raises(ValueError):
            Curriculum(**bad)


def test_time_weights_values_and_ranges():
    t = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    assert torch.allclose(ConstantTime(2.0)(t), torch.full_like(t, 2.0))
    assert torch.allclose(LinearTime(1.0, 0.0)(t), 1 - t)
    c = CosineTime(1.0, 0.0)(t)
    assert c[0] == pytest.approx(1.0) and c[2] == pytest.approx(0.5) and c[-1] == pytest.approx(0.0, abs=1e-7)
    cut = CutoffTime(0.25, 0.5)(t)
    assert cut.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    sig = SigmoidTime(0.5, 20.0)(t)
    assert sig[0] > 0.99 and sig[2] == pytest.approx(0.5) and sig[-1] < 0.01
    assert torch.all(sig[:-1] >= sig[1:])
    assert TerminalTime()(t).tolist() == [0, 0, 0, 0, 1]
    with pytest.raises(ValueError):
        CutoffTime(0.6, 0.5)


def test_cumulative_weight_matches_analytic():
    t = torch.linspace(0, 1, 11)
    assert torch.allclose(ConstantTime().cumulative(t), 1 - t, atol=1e-6)
    assert torch.allclose(LinearTime(1.0, 0.0).cumulative(t), (1 - t) ** 2, atol=1e-5)
    assert torch.allclose(CutoffTime(0.0, 0.5).cumulative(t), ((0.5 - t) / 0.5).clamp_min(0), atol=1e-3)
    assert torch.all(TerminalTime().cumulative(t) == 1)
    a = SigmoidTime().cumulative(t)
    assert a[0] == pytest.approx(1.0) and a[-1] == pytest.approx(0.0) and torch.all(a[:-1] >= a[1:])
    assert math.isclose(float(LinearTime(0.0, 1.0).cumulative(torch.tensor(0.5))), 0.75, abs_tol=1e-5)
