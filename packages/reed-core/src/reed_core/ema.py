"""Exponential moving average of a model's floating-point state."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Shadow copy of ``model.state_dict()`` updated as shadow <- decay * shadow + (1 - decay) * param.
    Integer buffers are copied. ``state_dict``/``load_state_dict`` make it checkpointable."""

    def __init__(self, model: nn.Module, decay: float = 0.9999) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        state = model.state_dict()
        floats_s, floats_p = [], []
        for k, s in self.shadow.items():
            v = state[k]
            if s.is_floating_point():
                floats_s.append(s)
                floats_p.append(v.detach())
            else:
                s.copy_(v)
        if floats_s:
            torch._foreach_lerp_(floats_s, floats_p, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:5]}")
        for k, s in self.shadow.items():
            s.copy_(state[k])

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow)
