"""Samplers for SiT: functions of (model, interpolant, labels) with an explicit generator and no state.

Time runs from t = 1 (noise) to t = 0 (data). ``method``:

* ``"euler"`` / ``"heun"``: the probability-flow ODE dx = v dt (Heun: second-order, no correction on the last
  step, as in EDM);
* ``"sde"``: Euler-Maruyama on the reverse SDE dx = [v - w(t)/2 * score] dt + sqrt(w(t)) dW with diffusion
  w(t) = 2t (SiT's / REPA's default), over ``num_steps - 1`` steps from 1 to ``t_last`` and a deterministic last
  step to 0.

Classifier-free guidance: v = v_null + cfg (v_class - v_null) for t inside ``guidance_interval`` (REPA-E pins
cfg 2.5 on t in [0, 0.75] for its best FID; with t = 1 noise that is the low-noise end), plain class velocity
outside. The conditional and null halves run in one batch.

A variational-hybrid SiT (trained with ``LatentSpec(condition=True)``) samples unconditionally on its latents
(``latents=None``), or with ``hybrid_latents(model, specs, projectors, labels, mode="self")``: at each step the
model's own projected hidden state z_hat(x_t) is fed back as z (one extra forward pass per step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from reed_core import Interpolant, LatentCondition, latent_conditions

__all__ = ["SAMPLER_METHODS", "guided_velocity", "hybrid_latents", "sample"]

Latents = Callable[[torch.Tensor, torch.Tensor], "dict[str, LatentCondition] | None"]

SAMPLER_METHODS = ("sde", "euler", "heun")


def guided_velocity(model: nn.Module, labels: torch.Tensor | None, cfg: float = 1.0,
                    interval: Sequence[float] = (0.0, 1.0), null_class: int | None = None,
                    latents: Latents | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """v(x, t) of ``model`` for ``labels`` with classifier-free guidance ``cfg`` on t in ``interval``;
    ``latents(x, t)``: the hybrid's representations at this step (the same for both guidance halves)."""
    lo, hi = float(interval[0]), float(interval[1])
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"guidance interval must satisfy 0 <= lo < hi <= 1, got ({lo}, {hi})")
    if cfg < 1.0:
        raise ValueError(f"cfg must be >= 1 (1 = no guidance), got {cfg}")
    guided = cfg > 1.0 and labels is not None

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        lat = latents(x, t) if latents is not None else None
        if not guided:
            return model(x, t, labels, **({"latents": lat} if lat else {})).prediction
        null = torch.full_like(labels, null_class if null_class is not None else model.null_class)
        twice = {"latents": {k: LatentCondition(torch.cat([c.z, c.z]), torch.cat([c.keep, c.keep]),
                                                None if c.mask is None else torch.cat([c.mask, c.mask]))
                             for k, c in lat.items()}} if lat else {}
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]), **twice).prediction
        v_cls, v_null = out.chunk(2)
        inside = ((t >= lo) & (t <= hi)).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return v_cls + inside * (cfg - 1.0) * (v_cls - v_null)

    return v


def hybrid_latents(model: nn.Module, specs: Sequence, projectors: nn.Module, labels: torch.Tensor | None,
                   mode: str = "self") -> Latents | None:
    """The ``latents`` hook of ``sample`` for a hybrid SiT: ``"none"`` (unconditional on z: None) or ``"self"``
    (z = the trained projector applied to the model's own hidden state at (x_t, t), class-conditional)."""
    if mode not in ("none", "self"):
        raise ValueError(f"hybrid latent mode must be 'none' or 'self', got {mode!r}")
    if mode == "none":
        return None
    return lambda x, t: latent_conditions("self", specs, model=model, projectors=projectors, x_t=x, t=t, cond=labels)


@torch.no_grad()
def sample(model: nn.Module, process: Interpolant, labels: torch.Tensor | None, *, shape: Sequence[int],
           num_steps: int = 50, method: str = "sde", cfg: float = 1.0,
           guidance_interval: Sequence[float] = (0.0, 1.0), t_last: float = 0.04,
           generator: torch.Generator | None = None, velocity: Callable | None = None,
           latents: Latents | None = None) -> torch.Tensor:
    """Images (N, *shape) for ``labels`` (N,) (None: unconditional; then N = shape[0] of a leading batch given
    through ``shape=(N, C, H, W)``). ``velocity`` overrides the model (tests drive an analytic field);
    ``latents`` feeds a hybrid model its representations (``hybrid_latents``)."""
    if method not in SAMPLER_METHODS:
        raise ValueError(f"sampler method must be one of {SAMPLER_METHODS}, got {method!r}")
    if num_steps < 1 or (method == "sde" and num_steps < 2):
        raise ValueError(f"num_steps must be >= {2 if method == 'sde' else 1} for {method}, got {num_steps}")
    if not 0.0 < t_last < 1.0:
        raise ValueError(f"t_last must be in (0, 1), got {t_last}")
    n = labels.shape[0] if labels is not None else shape[0]
    full = (n, *shape) if labels is not None else tuple(shape)
    device = labels.device if labels is not None else (
        next(model.parameters()).device if model is not None else torch.device("cpu"))
    v = velocity or guided_velocity(model, labels, cfg, guidance_interval, latents=latents)
    x = torch.randn(full, device=device, generator=generator)
    if method == "sde":
        times = torch.cat([torch.linspace(1.0, t_last, num_steps, device=device), torch.zeros(1, device=device)])
    else:
        times = torch.linspace(1.0, 0.0, num_steps + 1, device=device)
    for i in range(len(times) - 1):
        t, t_next = times[i].expand(n), times[i + 1].expand(n)
        dt = times[i + 1] - times[i]
        pred = v(x, t)  # guided model prediction; the process turns it into a velocity / score
        vel = process.velocity(pred, x, t)
        if method == "sde" and i < len(times) - 2:
            w = 2.0 * times[i]
            drift = vel - 0.5 * w * process.score(pred, x, t)
            noise = torch.randn(x.shape, device=device, generator=generator)
            x = x + drift * dt + torch.sqrt(w * dt.abs()) * noise
        elif method == "heun" and i < len(times) - 2:
            x_euler = x + vel * dt
            x = x + 0.5 * (vel + process.velocity(v(x_euler, t_next), x_euler, t_next)) * dt
        else:
            x = x + vel * dt
    return x
