"""SiT (Ma et al. 2024): DiT blocks with adaLN-Zero over patch tokens, conditioned on time and class.

Built from timm's ``PatchEmbed``, ``Attention`` (PyTorch's fused scaled-dot-product attention) and ``Mlp``;
fixed 2-D sin-cos position embedding; a label table with a null class (index ``num_classes``) used for label
dropout and classifier-free guidance; every adaLN modulation and the final layer start at zero, so a fresh
model predicts 0 and each block starts as the identity. ``capture=("block4",)`` returns the tokens after block 4
(1-based) as a (B, N, D) hidden state for alignment.

The variational hybrid (``LatentSpec(condition=True)``): ``latents={name: LatentCondition}`` adds a linear
embedding of each representation where ``keep`` is set: a pooled z (B, D) to the adaLN conditioning vector, a
token z (B, N, D) on SiT's token grid to the patch tokens. The embeddings start at zero (the hybrid starts as
the plain model).

Presets match the papers' sizes (DiT/SiT on 32x32x4 SD-VAE latents with 1,000 classes and learned sigma):
S/2 33 M, B/2 130 M, L/2 458 M, XL/2 675 M parameters; ``tiny`` is for 2 CPU cores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from timm.layers import Attention, Mlp, PatchEmbed, build_sincos2d_pos_embed
from torch import nn

from reed_core import DenoiserOutput, LatentCondition

__all__ = ["SIT_PRESETS", "SiT", "SiTConfig", "sit_config"]


@dataclass(frozen=True)
class SiTConfig:
    """Architecture (``hidden``, ``depth``, ``heads``, ``patch``) and data shape (``image_size``,
    ``in_channels``, ``num_classes``). ``learn_sigma`` doubles the output channels as DiT/SiT checkpoints do
    (the extra half is unused by velocity training; kept for parameter parity). ``latent_dims``: the hybrid's
    representations (name -> feature dim)."""

    hidden: int = 384
    depth: int = 12
    heads: int = 6
    patch: int = 2
    mlp_ratio: float = 4.0
    image_size: int = 32
    in_channels: int = 1
    num_classes: int = 10
    class_dropout: float = 0.1
    learn_sigma: bool = False
    latent_dims: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image_size % self.patch:
            raise ValueError(f"image size {self.image_size} is not a multiple of the patch size {self.patch}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden width {self.hidden} is not divisible by {self.heads} heads")
        if not 0.0 <= self.class_dropout < 1.0:
            raise ValueError(f"class_dropout must be in [0, 1), got {self.class_dropout}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)


_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}
SIT_PRESETS: dict[str, SiTConfig] = {
    f"{name}/{p}": SiTConfig(hidden=h, depth=d, heads=n, patch=p) for name, (h, d, n) in _SIZES.items() for p in (2, 4, 8)
}
SIT_PRESETS["tiny"] = SiTConfig(hidden=96, depth=6, heads=4, patch=4)


def sit_config(preset: str, **data_shape: Any) -> SiTConfig:
    """The preset's architecture with the data's shape (``image_size``, ``in_channels``, ``num_classes``...)."""
    if preset not in SIT_PRESETS:
        raise ValueError(f"SiT preset must be one of {sorted(SIT_PRESETS)}, got {preset!r}")
    return replace(SIT_PRESETS[preset], **data_shape)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of t (B,) -> (B, dim), as in DiT (t is scaled by 1000 first: SiT's t lies in [0, 1])."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class SiTBlock(nn.Module):
    """Pre-norm attention and MLP, each shifted, scaled and gated by the conditioning vector (adaLN-Zero)."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, num_heads=heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio), act_layer=lambda: nn.GELU(approximate="tanh"))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        s1, g1, a1, s2, g2, a2 = self.ada(c).chunk(6, dim=-1)
        x = x + a1[:, None] * self.attn(modulate(self.norm1(x), s1, g1))
        return x + a2[:, None] * self.mlp(modulate(self.norm2(x), s2, g2))


class SiT(nn.Module):
    """``forward(x_t (B,C,H,W), t (B,), y (B,) class ids, *, capture) -> DenoiserOutput`` with the predicted
    velocity (B,C,H,W) (the first ``in_channels`` of the output). ``y`` may be None (unconditional = null class).
    In training mode labels are replaced by the null class with probability ``class_dropout``."""

    def __init__(self, cfg: SiTConfig = SIT_PRESETS["tiny"]) -> None:
        super().__init__()
        self.cfg = cfg
        H = cfg.hidden
        self.patch_embed = PatchEmbed(cfg.image_size, cfg.patch, cfg.in_channels, H)
        pos = build_sincos2d_pos_embed([cfg.grid, cfg.grid], H)
        self.register_buffer("pos_embed", pos.reshape(1, cfg.grid * cfg.grid, H), persistent=False)
        self.t_embed = nn.Sequential(nn.Linear(256, H), nn.SiLU(), nn.Linear(H, H))
        self.y_embed = nn.Embedding(cfg.num_classes + 1, H)
        self.blocks = nn.ModuleList(SiTBlock(H, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(H, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(H, 2 * H))
        self.final = nn.Linear(H, cfg.patch * cfg.patch * cfg.out_channels)
        self.latent_embed = nn.ModuleDict({name: nn.Linear(dim, H) for name, dim in cfg.latent_dims.items()})
        self._init_weights()

    def _init_weights(self) -> None:
        def xavier(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

        self.apply(xavier)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.y_embed.weight, std=0.02)
        for layer in (self.t_embed[0], self.t_embed[2]):
            nn.init.normal_(layer.weight, std=0.02)
        for ada in [b.ada for b in self.blocks] + [self.final_ada]:
            nn.init.zeros_(ada[-1].weight)
            nn.init.zeros_(ada[-1].bias)
        for layer in [self.final, *self.latent_embed.values()]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def null_class(self) -> int:
        return self.cfg.num_classes

    def capture_names(self) -> list[str]:
        return [f"block{k}" for k in range(1, self.cfg.depth + 1)]

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B,C,H,W) -> (B, N, p*p*C), row-major patches."""
        B, C, _, _ = x.shape
        p, g = self.cfg.patch, self.cfg.grid
        return x.reshape(B, C, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(B, g * g, p * p * C)

    def unpatchify(self, x: torch.Tensor, channels: int | None = None) -> torch.Tensor:
        """(B, N, p*p*C) -> (B,C,H,W), the inverse of ``patchify``."""
        B = x.shape[0]
        p, g = self.cfg.patch, self.cfg.grid
        C = channels if channels is not None else x.shape[-1] // (p * p)
        return x.reshape(B, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4).reshape(B, C, g * p, g * p)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, *,
                capture: tuple[str, ...] = (), latents: Mapping[str, LatentCondition] | None = None) -> DenoiserOutput:
        B = x_t.shape[0]
        if y is None:
            y = torch.full((B,), self.null_class, dtype=torch.long, device=x_t.device)
        if self.training and self.cfg.class_dropout > 0:
            drop = torch.rand(B, device=x_t.device) < self.cfg.class_dropout
            y = torch.where(drop, torch.full_like(y, self.null_class), y)
        c = self.t_embed(timestep_embedding(t, 256).to(x_t.dtype)) + self.y_embed(y)
        x = self.patch_embed(x_t) + self.pos_embed.to(x_t.dtype)
        if latents:
            c, x = self._add_latents(latents, c, x)
        wanted, hiddens = set(capture), {}
        unknown = wanted - set(self.capture_names())
        if unknown:
            raise ValueError(f"unknown SiT layer(s) {sorted(unknown)}; use block1..block{self.cfg.depth}")
        for k, block in enumerate(self.blocks, 1):
            x = block(x, c)
            if f"block{k}" in wanted:
                hiddens[f"block{k}"] = x
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        out = self.unpatchify(self.final(modulate(self.final_norm(x), shift, scale)), self.cfg.out_channels)
        return DenoiserOutput(prediction=out[:, : self.cfg.in_channels], hiddens=hiddens)

    def _add_latents(self, latents: Mapping[str, LatentCondition], c: torch.Tensor, x: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        if unknown := set(latents) - set(self.latent_embed):
            raise ValueError(f"SiT was built for hybrid latents {sorted(self.latent_embed)}, got {sorted(unknown)}")
        for name, lat in latents.items():
            e = self.latent_embed[name](lat.z.to(x.dtype)) * lat.keep.to(x.dtype).reshape(-1, *[1] * (lat.z.dim() - 1))
            if e.dim() == 2:  # pooled: into the conditioning vector
                c = c + e
            elif e.shape[1] == x.shape[1]:  # tokens on SiT's grid
                x = x + e
            else:
                raise ValueError(f"hybrid latent {name!r} has {e.shape[1]} tokens; SiT has {x.shape[1]} patches")
        return c, x
