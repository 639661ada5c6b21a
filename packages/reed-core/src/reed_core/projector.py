"""The projector head that maps student hidden states to a teacher's feature space, defined once."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class Projector(nn.Sequential):
    """REPA's projector MLP: Linear-SiLU-(Linear-SiLU)*(depth-2)-Linear. Acts on the last dim.

    ``depth`` counts linear layers (>= 1; 3 is REPA's default). ``hidden_dim`` defaults to 4x ``in_dim``
    capped at 2048.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None, depth: int = 3) -> None:
        if depth < 1:
            raise ValueError(f"projector depth must be >= 1, got {depth}")
        if in_dim < 1 or out_dim < 1:
            raise ValueError(f"projector dims must be positive, got in={in_dim} out={out_dim}")
        hidden = hidden_dim if hidden_dim is not None else min(4 * in_dim, 2048)
        dims = [in_dim] + [hidden] * (depth - 1) + [out_dim]
        layers = [m for i in range(depth) for m in (nn.Linear(dims[i], dims[i + 1]), nn.SiLU())][:-1]
        super().__init__(*layers)
        self.in_dim, self.out_dim, self.depth = in_dim, out_dim, depth


class ProjectorBank(nn.ModuleDict):
    """Projectors keyed by latent name. ``dims`` maps name -> (student hidden dim, teacher dim)."""

    def __init__(self, dims: Mapping[str, tuple[int, int]], hidden_dim: int | None = None, depth: int = 3) -> None:
        super().__init__({name: Projector(i, o, hidden_dim, depth) for name, (i, o) in dims.items()})

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> ProjectorBank:
        """The bank whose ``state_dict`` is ``state`` (sizes read off the weight shapes), weights loaded."""
        shapes: dict[str, list[tuple[int, int]]] = {}
        for key in sorted((k for k in state if k.endswith(".weight")), key=lambda k: int(k.split(".")[-2])):
            shapes.setdefault(key.split(".")[0], []).append(tuple(state[key].shape))
        bank = cls({})
        for name, ws in shapes.items():
            bank[name] = Projector(ws[0][1], ws[-1][0], ws[0][0] if len(ws) > 1 else None, depth=len(ws))
        bank.load_state_dict(state)
        return bank

    def project(self, name: str, h: torch.Tensor) -> torch.Tensor:
        if name not in self:
            raise KeyError(f"no projector for latent {name!r}; have {sorted(self.keys())}")
        return self[name](h)
