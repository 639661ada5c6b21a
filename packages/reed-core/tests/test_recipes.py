import pytest

from reed_core import Constant, LinearInterpolant, reed_curriculum
from reed_core.recipes import LatentPlan, method_objective, run_train_config


def test_methods_differ_only_in_coefficients_and_curriculum():
    cur = reed_curriculum("molecule", 100)
    plan = [LatentPlan("graph2d", "layer2", "pooled", 16, reed_coefficient=0.2)]
    kw = {"student_dim": 8, "curriculum": cur, "repa_coefficient": 0.5, "projector_hidden": 4}
    reed = method_objective("reed", LinearInterpolant(), plan, **kw)
    repa = method_objective("repa", LinearInterpolant(), plan, **kw)
    vanilla = method_objective("vanilla", LinearInterpolant(), [], **kw)
    assert reed.specs[0].coefficient == 0.2 and reed.specs[0].schedule is cur.align
    assert reed.denoise_schedule is cur.denoise and reed.denoise_schedule(0) == 0.0
    assert repa.specs[0].coefficient == 0.5 and isinstance(repa.specs[0].schedule, Constant)
    assert repa.denoise_schedule(0) == 1.0 and not vanilla.specs
    assert reed.projectors["graph2d"][0].in_features == 8 and reed.projectors["graph2d"][-1].out_features == 16
    with pytest.raises(ValueError, match="no latents"):
        method_objective("vanilla", LinearInterpolant(), plan, **kw)
    with pytest.raises(ValueError, match="method"):
        method_objective("repa-ish", LinearInterpolant(), plan, **kw)


def test_run_train_config_cadence():
    cfg = run_train_config(1000, lr=1e-3, seed=1, ema_decay=0.99, max_warmup=50)
    assert (cfg.log_every, cfg.checkpoint_every, cfg.lr_warmup_steps) == (50, 250, 50)
    assert run_train_config(3, lr=1e-3, seed=0, ema_decay=0.9).checkpoint_every == 1
