"""Exponential moving average of a model's floating-point state."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Shadow copy of ``model.state_dict()`` updated as shadow <- d_n * shadow + (1 - d_n) * param.
    Integer buffers are copied. ``state_dict``/``load_state_dict`` make it checkpointable.

    With ``warmup`` (default) the decay of update n (0-based) is d_n = min(decay, (1 + n) / (10 + n)), the rule of
    TensorFlow's ExponentialMovingAverage with num_updates: the share of the random initial weights after N
    updates is 9! N! / (N + 9)! (1e-5 at N = 30), instead of decay^N (55 % after 600 updates at 0.999). The
    decay reaches ``decay`` after 9 / (1 - decay) - 10 updates. n is the optimizer step, so resume is exact.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay, self.warmup = decay, warmup
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold in ``model`` as update number ``step`` (0-based: the optimizer steps taken before this one)."""
        state = model.state_dict()
        floats = [k for k, s in self.shadow.items() if s.is_floating_point()]
        for k in self.shadow.keys() - set(floats):
            self.shadow[k].copy_(state[k])
        if floats:
            torch._foreach_lerp_([self.shadow[k] for k in floats], [state[k].detach() for k in floats],
                                 1.0 - self.decay_at(step))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        """Copy ``state`` into the shadow in place (the signature of ``nn.Module``'s, for ``load_weights``)."""
        if missing := set(self.shadow) - set(state):
            raise RuntimeError(f"EMA state lacks {sorted(missing)[:5]}")
        for k, s in self.shadow.items():
            s.copy_(state[k])

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow)
