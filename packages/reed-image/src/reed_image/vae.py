"""The latent path of the paper (SiT on SD-VAE latents): a frozen ``diffusers`` AutoencoderKL from a local directory.

Training images are encoded once into the posterior's moments (mean and log-variance, (N, 2C, h, w)); at every
step ``LatentInterpolant.corrupt`` draws z = (mean + exp(logvar / 2) eps - shift) * scale from them with the
step's generator (REPA's per-step posterior sampling; exact resume) before the usual interpolant. Samples are
decoded with ``VAE.decode`` (z / scale + shift). Grey images are repeated to the VAE's RGB input and averaged
back after decoding. Teachers always see pixels (``ImageTrainingData.whole``), so their features are cached.

A real SD-VAE is a ``diffusers`` directory (``config.json`` + weights), e.g. ``stabilityai/sd-vae-ft-ema``
downloaded beforehand; nothing downloads here. Needs ``reed-image[vae]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from reed_core import Corruption, Interpolant

__all__ = ["VAE", "LatentInterpolant", "load_vae"]


@dataclass(frozen=True)
class LatentInterpolant(Interpolant):
    """An ``Interpolant`` whose x0 are VAE posterior moments (B, 2C, h, w): ``corrupt`` samples the latent first."""

    scale: float = 0.18215
    shift: float = 0.0

    def latent(self, moments: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mean, logvar = moments.float().chunk(2, dim=1)
        eps = torch.randn(mean.shape, device=mean.device, generator=generator)
        return ((mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * eps) - self.shift) * self.scale

    def corrupt(self, x0: torch.Tensor, t: torch.Tensor, *, generator: torch.Generator | None = None) -> Corruption:
        return super().corrupt(self.latent(x0, generator), t, generator=generator)


class VAE(nn.Module):
    """A frozen AutoencoderKL with the image <-> latent conversions SiT training and sampling need."""

    def __init__(self, autoencoder: nn.Module, source: str = "") -> None:
        super().__init__()
        self.ae, self.source = autoencoder.eval().requires_grad_(False), source
        cfg = autoencoder.config
        self.scale, self.shift = float(cfg.scaling_factor), float(getattr(cfg, "shift_factor", None) or 0.0)
        self.channels, self.in_channels = int(cfg.latent_channels), int(cfg.in_channels)
        self.factor = 2 ** (len(cfg.block_out_channels) - 1)

    def train(self, mode: bool = True) -> VAE:
        return super().train(False)  # frozen: always eval

    def latent_size(self, image_size: int) -> int:
        if image_size % self.factor:
            raise ValueError(f"image size {image_size} is not a multiple of the VAE's downsampling factor {self.factor}")
        return image_size // self.factor

    def process(self, **kw) -> LatentInterpolant:
        return LatentInterpolant(scale=self.scale, shift=self.shift, **kw)

    @torch.no_grad()
    def moments(self, images: torch.Tensor, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        """Posterior moments (N, 2C, h, w) of images (N, C, H, W) in [-1, 1] (float32, on the CPU)."""
        from tqdm.auto import tqdm

        device, out = next(self.ae.parameters()).device, []
        for lo in tqdm(range(0, len(images), batch_size), desc="encoding with the VAE", disable=not progress):
            x = images[lo:lo + batch_size].to(device).float()
            if x.shape[1] == 1 and self.in_channels == 3:
                x = x.expand(-1, 3, -1, -1)
            dist = self.ae.encode(x).latent_dist
            out.append(torch.cat([dist.mean, dist.logvar], dim=1).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, channels: int = 3) -> torch.Tensor:
        """Images (B, channels, H, W) in [-1, 1] from scaled latents z (B, C, h, w)."""
        x = self.ae.decode(z / self.scale + self.shift).sample.float().clamp(-1.0, 1.0)
        return x.mean(dim=1, keepdim=True) if channels == 1 and x.shape[1] != 1 else x


def load_vae(path: str | os.PathLike, device: str | torch.device = "cpu") -> VAE:
    """The AutoencoderKL saved (``save_pretrained``) in directory ``path``; never downloads."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a diffusers AutoencoderKL directory (no config.json)")
    try:
        from diffusers import AutoencoderKL
    except ImportError as e:
        raise ImportError(f"the latent path needs diffusers: pip install 'reed-image[vae]' ({e})") from None
    return VAE(AutoencoderKL.from_pretrained(str(path), local_files_only=True), str(path)).to(device)
