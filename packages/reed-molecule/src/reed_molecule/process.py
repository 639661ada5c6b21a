"""Joint molecular diffusion (t = 0 clean, t = 1 noise): zero-centre-of-mass Gaussian coordinates and
categorical diffusion with the empirical marginal as prior for atom types, charges and bonds.

Both use the cosine schedule abar(t) = cos^2(pi/2 (t + s) / (1 + s)) / cos^2(pi/2 s / (1 + s)):
coordinates x_t = sqrt(abar) x0 + sqrt(1 - abar) eps (eps with zero CoM over real atoms); categories
q(x_t | x0) = abar onehot(x0) + (1 - abar) prior. The model predicts x0; the per-sample loss is
w(t) [3 MSE(pos) + 0.4 CE(atoms) + 2 CE(bonds) + 1 CE(charges)] with w(t) = clip(SNR(t), 0.05, 1.5) as in
EQGAT-diff. Training times are t = u^P, u ~ U(0, 1): P = ``time_power`` = 1 is EQGAT-diff's uniform t; P > 1
draws the low-noise end more often (P = 2: t < 0.55 in 74 % of the draws instead of 55 %) with w(t) unchanged, so
the objective's weight moves towards the times where the denoiser's errors still fall. ``step`` is one ancestral
step (the exact Gaussian posterior and the categorical posterior q(x_s | x_t, x0 ~ p_theta)) given a prediction;
the loop that calls the model is ``sampler.sample``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from reed_core import Corruption

from .data import MoleculeBatch, remove_com


@dataclass(frozen=True)
class LossWeights:
    pos: float = 3.0
    atoms: float = 0.4
    bonds: float = 2.0
    charges: float = 1.0


def _uniform(n: int) -> tuple[float, ...]:
    return tuple([1.0 / n] * n)


def check_noise_scale(value: float, name: str = "noise_scale") -> float:
    """``value`` if it is a valid factor on the sampler's coordinate noise (finite, >= 0), else a ValueError."""
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def check_time_power(value: float, name: str = "time_power") -> float:
    """``value`` if it is a valid power P of a time grid t = u^P (finite, > 0): the training-time draw's or the
    sampler's spacing; else a ValueError naming ``name``."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


@dataclass(frozen=True)
class MolecularDiffusion:
    """The process. ``atom_prior``/``charge_prior``/``bond_prior`` are the empirical marginals."""

    atom_prior: tuple[float, ...] = _uniform(5)
    charge_prior: tuple[float, ...] = (0.0, 1.0, 0.0)
    bond_prior: tuple[float, ...] = _uniform(4)
    weights: LossWeights = field(default_factory=LossWeights)
    snr_min: float = 0.05
    snr_max: float = 1.5
    offset: float = 0.008
    time_power: float = 1.0

    def __post_init__(self) -> None:
        check_time_power(self.time_power)
        for name, p in (("atom", self.atom_prior), ("charge", self.charge_prior), ("bond", self.bond_prior)):
            if abs(sum(p) - 1.0) > 1e-4 or min(p) < 0:
                raise ValueError(f"{name}_prior must be a probability vector, got {p}")

    @classmethod
    def from_marginals(cls, marginals: Mapping[str, np.ndarray], **kw) -> MolecularDiffusion:
        def clean(p):
            p = np.asarray(p, float) + 1e-6
            return tuple((p / p.sum()).tolist())

        return cls(clean(marginals["atoms"]), clean(marginals["charges"]), clean(marginals["bonds"]), **kw)

    # ------------------------------------------------------------------------------------------ schedule
    def abar(self, t: torch.Tensor) -> torch.Tensor:
        s = self.offset
        t64 = t.double()
        f = torch.cos(0.5 * math.pi * (t64 + s) / (1 + s)) ** 2
        f0 = torch.cos(0.5 * math.pi * (torch.zeros_like(t64) + s) / (1 + s)) ** 2  # same ops: abar(0) == 1 exactly
        return (f / f0).clamp(0.0, 1.0).to(t.dtype if t.is_floating_point() else torch.float32)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        a = self.abar(t)
        return (a / (1 - a).clamp_min(1e-8)).clamp(self.snr_min, self.snr_max)

    def sample_time(self, batch_size: int, *, device="cpu", generator: torch.Generator | None = None) -> torch.Tensor:
        """Training times t = u^time_power, u ~ U(0, 1) (the same draws for every power)."""
        return torch.rand(batch_size, device=device, generator=generator).pow(self.time_power)

    # ---------------------------------------------------------------------------------------- corruption
    def prior(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The empirical marginal of ``name`` ("atoms", "charges" or "bonds"): the t = 1 distribution, float32 on
        ``like``'s device."""
        p = {"atoms": self.atom_prior, "charges": self.charge_prior, "bonds": self.bond_prior}[name]
        return torch.tensor(p, dtype=torch.float32, device=like.device)

    def _corrupt_cat(self, x0: torch.Tensor, abar: torch.Tensor, prior: torch.Tensor, generator) -> torch.Tensor:
        k = prior.shape[0]
        a = abar.reshape(-1, *([1] * (x0.dim() - 1)), 1).float()
        probs = a * F.one_hot(x0, k).float() + (1 - a) * prior
        u = torch.rand(x0.shape, device=x0.device, generator=generator)[..., None]
        return (probs.cumsum(-1) < u).sum(-1).clamp_max(k - 1)

    def noise_like(self, x0: MoleculeBatch, generator: torch.Generator | None) -> torch.Tensor:
        eps = torch.randn(x0.pos.shape, device=x0.pos.device, dtype=x0.pos.dtype, generator=generator)
        return remove_com(eps, x0.mask)

    def corrupt(self, x0: MoleculeBatch, t: torch.Tensor, *, generator: torch.Generator | None = None) -> Corruption:
        abar = self.abar(t)
        eps = self.noise_like(x0, generator)
        a = abar.to(x0.pos.dtype)[:, None, None]
        pos = a.sqrt() * x0.pos + (1 - a).sqrt() * eps
        atoms = self._corrupt_cat(x0.atoms, abar, self.prior("atoms", x0.atoms), generator)
        charges = self._corrupt_cat(x0.charges, abar, self.prior("charges", x0.charges), generator)
        upper = torch.triu(self._corrupt_cat(x0.bonds, abar, self.prior("bonds", x0.bonds), generator), 1)
        bonds = (upper + upper.transpose(1, 2)) * x0.pair_mask
        atoms = torch.where(x0.mask, atoms, 0)
        charges = torch.where(x0.mask, charges, x0.charges)
        x_t = x0.with_(pos=remove_com(pos, x0.mask), atoms=atoms, charges=charges, bonds=bonds)
        return Corruption(x_t=x_t, t=t, target=x0, extras={"noise": eps})

    # ---------------------------------------------------------------------------------------------- loss
    def loss_terms(self, pred, corruption: Corruption) -> dict[str, torch.Tensor]:
        """Unweighted per-sample terms (B,) for each component."""
        x0: MoleculeBatch = corruption.target
        m = x0.mask.float()
        pm = x0.pair_mask.float()
        n_atoms = m.sum(1).clamp_min(1.0)
        pos = (((pred.pos.float() - x0.pos.float()) ** 2).sum(-1) * m).sum(1) / (3 * n_atoms)

        def ce(logits, target, w):
            flat = F.cross_entropy(logits.float().flatten(0, -2), target.flatten(), reduction="none")
            flat = flat.view(target.shape) * w
            return flat.flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1.0)

        return {
            "pos": pos,
            "atoms": ce(pred.atom_logits, x0.atoms, m),
            "charges": ce(pred.charge_logits, x0.charges, m),
            "bonds": ce(pred.bond_logits, x0.bonds, pm),
        }

    def loss(self, pred, corruption: Corruption) -> torch.Tensor:
        terms = self.loss_terms(pred, corruption)
        w = self.weights
        total = w.pos * terms["pos"] + w.atoms * terms["atoms"] + w.bonds * terms["bonds"] + w.charges * terms["charges"]
        return self.loss_weight(corruption.t).to(total.dtype) * total

    # ------------------------------------------------------------------------------------------ sampling
    def sample_prior(self, mask: torch.Tensor, generator: torch.Generator | None, dtype=torch.float32) -> MoleculeBatch:
        B, N = mask.shape
        dev = mask.device
        pos = remove_com(torch.randn(B, N, 3, device=dev, dtype=dtype, generator=generator), mask)

        def draw(prior, shape):
            return torch.multinomial(prior, int(np.prod(shape)), replacement=True, generator=generator).view(shape)

        atoms = draw(self.prior("atoms", mask), (B, N)) * mask
        charges = torch.where(mask, draw(self.prior("charges", mask), (B, N)), 1)
        upper = torch.triu(draw(self.prior("bonds", mask), (B, N, N)), 1)
        x = MoleculeBatch(pos, atoms, charges, upper + upper.transpose(1, 2), mask,
                          torch.full((B,), -1, dtype=torch.long, device=dev))
        return x.with_(bonds=x.bonds * x.pair_mask)

    def _posterior_cat(self, x_t: torch.Tensor, probs0: torch.Tensor, abar_t, abar_s, prior, generator,
                       posterior: str = "exact"):
        """Sample x_s from ``posterior_probs``."""
        post = self.posterior_probs(x_t, probs0, abar_t, abar_s, prior, posterior)
        return torch.multinomial(post.reshape(-1, prior.shape[0]), 1, generator=generator).view(x_t.shape)

    @staticmethod
    def posterior_probs(x_t: torch.Tensor, probs0: torch.Tensor, abar_t, abar_s, prior,
                        posterior: str = "exact") -> torch.Tensor:
        """(..., K) probabilities of x_s ~ p(x_s | x_t) = sum_x0 q(x_s | x_t, x0) p_theta(x0 | x_t) for the marginal-prior transition
        (D3PM's x0-parameterised reverse step), where q(x_s | x_t, x0) = q(x_t | x_s) q(x_s | x0) / q(x_t | x0).
        ``posterior="proportional"``: the form this package sampled with before, q(x_t | x_s) sum_x0 q(x_s | x0)
        p_theta(x0), which leaves out the 1 / q(x_t | x0) and so weighs each x0 by how likely it makes the current
        state: at low noise the state then keeps a type the model no longer predicts."""
        k = prior.shape[0]
        shape = (-1, *([1] * (x_t.dim() - 1)), 1)
        a_ts = (abar_t / abar_s.clamp_min(1e-12)).clamp(0, 1).reshape(shape)
        a_s = abar_s.reshape(shape)
        onehot_t = F.one_hot(x_t, k).float()
        like = a_ts * onehot_t + (1 - a_ts) * prior[x_t][..., None]  # q(x_t | x_s = k)
        if posterior == "exact":
            a_t = abar_t.reshape(shape).float()
            w = probs0 / (a_t * onehot_t + (1 - a_t) * prior[x_t][..., None]).clamp_min(1e-30)  # p(x0) / q(x_t | x0)
            marg = a_s * w + (1 - a_s) * prior * w.sum(-1, keepdim=True)  # sum_x0 q(x_s = k | x0) w(x0)
        elif posterior == "proportional":
            marg = a_s * probs0 + (1 - a_s) * prior  # sum_x0 q(x_s = k | x0) p(x0)
        else:
            raise ValueError(f"posterior must be 'exact' or 'proportional', got {posterior!r}")
        post = (like * marg).clamp_min(0)
        return post / post.sum(-1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def step(self, x: MoleculeBatch, pred, t: torch.Tensor, s: torch.Tensor, generator: torch.Generator | None,
             last: bool = False, noise_scale: float = 1.0, posterior: str = "exact") -> MoleculeBatch:
        """One ancestral step from time t to s < t given the model's x0 prediction ``pred`` at (x, t): the exact
        Gaussian posterior for coordinates (its noise times ``noise_scale``: 1 is the exact posterior, < 1 a
        lower-temperature step, 0 its mean), p(x_s | x_t) = sum_x0 q(x_s | x_t, x0) p_theta(x0 | x_t) for the
        categories (``posterior_probs``; ``posterior``: "exact" or the earlier "proportional"); ``last`` returns the
        prediction itself (argmax categories)."""
        mask, pm = x.mask, x.pair_mask
        if last:
            return x.with_(pos=remove_com(pred.pos, mask), atoms=pred.atom_logits.argmax(-1) * mask,
                           charges=torch.where(mask, pred.charge_logits.argmax(-1), 1),
                           bonds=pred.bond_logits.argmax(-1) * pm)
        abar_t, abar_s = self.abar(t), self.abar(s)
        a_t, a_s = abar_t.sqrt()[:, None, None], abar_s.sqrt()[:, None, None]
        sig_t, sig_s = (1 - abar_t).sqrt()[:, None, None], (1 - abar_s).sqrt()[:, None, None]
        a_ts = a_t / a_s.clamp_min(1e-12)
        var_ts = (sig_t**2 - a_ts**2 * sig_s**2).clamp_min(0)
        mean = (a_ts * sig_s**2 / sig_t**2) * x.pos + (a_s * var_ts / sig_t**2) * pred.pos
        std = (noise_scale * var_ts.sqrt() * sig_s / sig_t).to(x.pos.dtype)  # x 1.0 is exact: the same bits
        pos = remove_com(mean + std * self.noise_like(x, generator), mask)

        def cat(name: str, current: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            return self._posterior_cat(current, logits.softmax(-1).float(), abar_t, abar_s, self.prior(name, mask),
                                       generator, posterior)

        atoms = cat("atoms", x.atoms, pred.atom_logits) * mask
        charges = torch.where(mask, cat("charges", x.charges, pred.charge_logits), 1)
        upper = torch.triu(cat("bonds", x.bonds, pred.bond_logits), 1)
        return x.with_(pos=pos, atoms=atoms, charges=charges, bonds=(upper + upper.transpose(1, 2)) * pm)
