"""The auxiliary bound of the deep weight prior, measured (book/04_implicit_prior.md): per slice
w ``(k, k)``, log p(w) >= E_r(z|w) [ log p(w|z) + log p(z) - log r(z|w) ] (book/04 eq.
``eq-aux-slice``), with gap KL(r(z|w) || p(z|w)) (eq. ``eq-logp-decomposition``)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from . import gaussian
from .config import Presets, check_fields
from .gaussian import rsample, standard_log_prob
from .kernel_vae import KernelVAE
from .slices import gaussian_slices, shuffle_pixels, xavier_slices, xavier_std  # noqa: F401
from .train import fit


@dataclass
class ImplicitPriorConfig(Presets):
    """How chapter 4 measures the bound, its gap, and the penalty."""

    slices_per_kind: int = 48  # slices of each kind scored (at most)
    bound_samples: int = 32  # draws z ~ r(z|w) in each slice's bound
    iw_samples: int = 256  # K of the importance-weighted estimate of log p(w)
    curve_slices: int = 6  # slices whose IW estimate is followed as K grows (iw_curve) ...
    curve_samples: int = 512  # ... up to this K
    grid_size: int = 121  # points per axis of the quadrature grid (2-D latents only)
    grid_radius: float = 5.0  # the grid covers [-R, R]^2
    reverse_steps: int = 150  # Adam steps of train_reverse, at a constant rate ...
    reverse_lr: float = 3e-3
    reverse_batch_size: int | None = None  # ... on this many slices a step (None: all)
    penalty_samples: int = 8  # draws of w ~ q (and z ~ r) in layer_penalty
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self)  # every count >= 1, grid_radius and reverse_lr > 0
        if self.grid_size < 3:
            raise ValueError(f"grid_size={self.grid_size}: must be >= 3")

    @classmethod
    def tiny(cls) -> ImplicitPriorConfig:
        return cls(
            slices_per_kind=12,
            bound_samples=8,
            iw_samples=32,
            curve_slices=3,
            curve_samples=64,
            grid_size=41,
            reverse_steps=30,
            penalty_samples=2,
        )

    @classmethod
    def paper(cls) -> ImplicitPriorConfig:
        return cls(
            slices_per_kind=256,
            bound_samples=256,
            iw_samples=5000,
            curve_slices=32,
            curve_samples=8192,
            grid_size=301,
            grid_radius=6.0,
            reverse_steps=1000,
            reverse_lr=1e-3,
        )


class LatentGrid:
    """p(w) = ∫ p(w|z) p(z) dz by the midpoint rule on a grid of 2-D z (book/04, eq-dwp-marginal),
    exact when p(z|w) lies inside and wider than a cell (:meth:`edge_mass`, :meth:`peak_mass`)."""

    def __init__(self, vae: KernelVAE, size: int, radius: float, batch: int = 4096) -> None:
        if vae.latent_dim != 2:
            raise ValueError(
                f"LatentGrid integrates over a 2-D latent space; this KernelVAE has "
                f"latent_dim={vae.latent_dim}. Use vae.log_likelihood_iw for it instead."
            )
        if size < 3 or radius <= 0:
            raise ValueError(f"need size >= 3 and radius > 0, got size={size}, radius={radius}")
        self.vae, self.size, self.radius = vae, size, radius
        device = next(vae.parameters()).device
        self.axis = torch.linspace(-radius, radius, size, device=device)
        z1, z2 = torch.meshgrid(self.axis, self.axis, indexing="ij")
        self.z = torch.stack([z1.flatten(), z2.flatten()], -1)  # (G, 2), row-major over (z1, z2)
        self.log_cell = 2 * math.log(2 * radius / (size - 1))
        self.log_prior = standard_log_prob(self.z)  # (G,)
        with torch.no_grad():
            parts = [vae.decode(chunk) for chunk in self.z.split(batch)]
        self.mean = torch.cat([m for m, _ in parts])  # (G, k, k)
        self.logvar = torch.cat([v for _, v in parts])

    @torch.no_grad()
    def log_joint(self, w: Tensor, chunk: int = 8) -> Tensor:
        """log p(w|z_g) + log p(z_g) at every grid point, ``(B, G)``."""
        w = self.vae.check_input(w).to(self.mean.device)
        rows = []
        for part in w.split(chunk):
            ll = gaussian.log_prob(part[:, None], self.mean, self.logvar).sum((-2, -1))
            rows.append(ll + self.log_prior)
        return torch.cat(rows)

    def log_marginal(self, w: Tensor) -> Tensor:
        """log p(w) by quadrature, ``(B,)``."""
        return torch.logsumexp(self.log_joint(w), -1) + self.log_cell

    def log_posterior(self, w: Tensor) -> Tensor:
        """log p(z|w) = log p(w|z) + log p(z) - log p(w) on the grid (book/01, eq-bayes),
        ``(B, size, size)``; index [b, i, j] is z = (axis[i], axis[j])."""
        lj = self.log_joint(w)
        log_post = lj - torch.logsumexp(lj, -1, keepdim=True) - self.log_cell
        return log_post.reshape(-1, self.size, self.size)

    def _masses(self, w: Tensor) -> Tensor:
        return torch.softmax(self.log_joint(w), -1).reshape(-1, self.size, self.size)

    def edge_mass(self, w: Tensor) -> Tensor:
        """Posterior mass in the outermost ring of cells, ``(B,)``: near 0 if the grid is wide."""
        return 1.0 - self._masses(w)[:, 1:-1, 1:-1].sum((-2, -1))

    def peak_mass(self, w: Tensor) -> Tensor:
        """Mass of the heaviest cell, ``(B,)``: near 1 when the grid is too coarse to trust."""
        return self._masses(w).flatten(1).amax(-1)


@dataclass
class SliceScores:
    """Per-slice numbers (nats) for one kind of slice, all ``(B,)`` tensors on the CPU."""

    kind: str
    bound: Tensor  # the Monte-Carlo bound E_r(z|w)[...] (eq. ``eq-aux-slice``)
    log_p_iw: Tensor  # the IW estimate: a lower bound on log p(w) that rises to it with K
    log_p_grid: Tensor | None = None  # quadrature (None without a grid)
    edge_mass: Tensor | None = None
    peak_mass: Tensor | None = None
    info: dict = field(default_factory=dict)

    @property
    def log_p(self) -> Tensor:
        """The quadrature (no sampling noise) where there is a grid, else the IW estimate."""
        return self.log_p_iw if self.log_p_grid is None else self.log_p_grid

    @property
    def gap(self) -> Tensor:
        """log p(w) - bound: an estimate of KL(r(z|w) || p(z|w)) >= 0 (eq. ``eq-aux-gap``)."""
        return self.log_p - self.bound

    def summary(self) -> dict:
        """Means over the slices (and the median gap), as plain floats."""
        out = {
            "kind": self.kind,
            "slices": len(self.bound),
            "bound": self.bound.mean().item(),
            "log_p_iw": self.log_p_iw.mean().item(),
            "log_p": self.log_p.mean().item(),
            "gap": self.gap.mean().item(),
            "gap_median": self.gap.median().item(),
        }
        if self.log_p_grid is not None:
            out["log_p_grid"] = self.log_p_grid.mean().item()
            out["edge_mass_max"] = self.edge_mass.max().item()
            out["peak_mass_max"] = self.peak_mass.max().item()
        return out


def scores_table(scores: list[SliceScores], after: list[SliceScores] | None = None) -> str:
    """A Markdown table of :class:`SliceScores` means; ``after`` (a trained r) adds its gap."""
    if after is not None and [a.kind for a in after] != [s.kind for s in scores]:
        raise ValueError("after must score the same kinds, in the same order, as scores")
    grid = all(s.log_p_grid is not None for s in scores)
    k = scores[0].info.get("iw_samples", "?") if scores else "?"
    head = ["kind", "slices", f"log p(w), IW K={k}", "bound"]
    if grid:
        head.insert(2, "log p(w), grid")
    head += ["gap mean", "gap median"]
    if after is not None:
        head += ["gap mean, r trained", "gap median, r trained"]
    if grid:
        head += ["max edge mass", "max peak mass"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, s in enumerate(scores):
        d = s.summary()
        row = [s.kind, f"{d['slices']}", f"{d['log_p_iw']:.2f}", f"{d['bound']:.2f}"]
        if grid:
            row.insert(2, f"{d['log_p_grid']:.2f}")
        row += [f"{d['gap']:.2f}", f"{d['gap_median']:.2f}"]
        if after is not None:
            a = after[i].summary()
            row += [f"{a['gap']:.2f}", f"{a['gap_median']:.2f}"]
        if grid:
            row += [f"{d['edge_mass_max']:.1e}", f"{d['peak_mass_max']:.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


@torch.no_grad()
def score_slices(
    vae: KernelVAE,
    w: Tensor,
    cfg: ImplicitPriorConfig,
    kind: str = "",
    grid: LatentGrid | None = None,
    batch_size: int = 256,
    log_p_iw: Tensor | None = None,
) -> SliceScores:
    """The bound and log p(w) of every slice of ``w`` ``(B, k, k)``, by quadrature too with
    ``grid``; ``log_p_iw`` reuses an estimate (it depends on the decoder only)."""
    vae.eval()
    device = next(vae.parameters()).device
    gen = torch.Generator().manual_seed(cfg.seed)
    w = vae.check_input(w).float()
    if log_p_iw is not None and log_p_iw.shape != w.shape[:1]:
        raise ValueError(f"log_p_iw has shape {tuple(log_p_iw.shape)}, expected ({len(w)},)")
    bound, iw = [], []
    for part in w.split(batch_size):
        part = part.to(device)
        bound.append(vae.elbo(part, cfg.bound_samples, gen).cpu())
        if log_p_iw is None:
            iw.append(vae.log_likelihood_iw(part, cfg.iw_samples, gen).cpu())
    iw_values = torch.cat(iw) if log_p_iw is None else log_p_iw.detach().cpu()
    scores = SliceScores(kind, torch.cat(bound), iw_values)
    if grid is not None:
        if not same_decoder(grid.vae, vae):
            raise ValueError(
                "the grid was built from another VAE's decoder p(w|z); build it from this VAE "
                "(a copy from train_reverse shares the decoder and may use the original's grid)"
            )
        scores.log_p_grid = grid.log_marginal(w).cpu()
        scores.edge_mass = grid.edge_mass(w).cpu()
        scores.peak_mass = grid.peak_mass(w).cpu()
    scores.info = {"bound_samples": cfg.bound_samples, "iw_samples": cfg.iw_samples}
    return scores


@torch.no_grad()
def log_importance_weights(
    vae: KernelVAE, w: Tensor, num_samples: int, seed: int = 0, chunk: int = 256
) -> Tensor:
    """log p(w|z_k) + log p(z_k) - log r(z_k|w) for z_k ~ r(z|w), ``(K, B)`` (book/03, IWAE):
    their mean is the bound, their log-mean-exp the IW estimate."""
    vae.eval()
    device = next(vae.parameters()).device
    w = vae.check_input(w).float().to(device)
    gen = torch.Generator().manual_seed(seed)
    mu, logvar = vae.encode(w)
    out = []
    for start in range(0, num_samples, chunk):
        z = rsample(mu, logvar, min(chunk, num_samples - start), gen)  # (s, B, d)
        log_r = gaussian.log_prob(z, mu, logvar).sum(-1)
        out.append((vae.log_likelihood(w, z) + standard_log_prob(z) - log_r).cpu())
    return torch.cat(out)


def iw_curve(log_w: Tensor, ks: list[int] | None = None) -> tuple[list[int], Tensor]:
    """``(ks, (len(ks), B))``: the IW estimate of log p(w) for each K (default: powers of two),
    averaged over the K_max // K disjoint blocks of ``log_w`` ``(K_max, B)``."""
    k_max = log_w.shape[0]
    ks = ks or [2**i for i in range(int(math.log2(k_max)) + 1)]
    rows = []
    for k in ks:
        if not 1 <= k <= k_max:
            raise ValueError(f"K={k} outside 1..{k_max}")
        blocks = log_w[: (k_max // k) * k].reshape(k_max // k, k, -1)
        rows.append((torch.logsumexp(blocks, 1) - math.log(k)).mean(0))
    return list(ks), torch.stack(rows)


def same_decoder(a: KernelVAE, b: KernelVAE) -> bool:
    """Whether two kernel VAEs have the same p(w|z) (the same prior), value for value."""
    pa, pb = a.decoder_parameters(), b.decoder_parameters()
    return len(pa) == len(pb) and all(
        x.shape == y.shape and torch.equal(x.detach().cpu(), y.detach().cpu())
        for x, y in zip(pa, pb, strict=True)
    )


def train_reverse(
    vae: KernelVAE, slices: Tensor, cfg: ImplicitPriorConfig
) -> tuple[KernelVAE, list[float]]:
    """A copy of ``vae`` whose r(z|w) alone maximises the mean bound of ``slices`` ``(N, k, k)``,
    closing the gap (eq. ``eq-aux-gap``), and the loss of every step."""
    if len(slices) == 0:
        raise ValueError("train_reverse needs at least one slice")
    fitted = copy.deepcopy(vae).eval()  # eval: no dropout/BN here, but keep the VAE's mode
    fitted.requires_grad_(False)
    params = fitted.reverse_parameters()
    for p in params:
        p.requires_grad_(True)
    device = next(fitted.parameters()).device
    data = fitted.check_input(slices.float()).to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    n, b = len(data), cfg.reverse_batch_size or len(data)

    def loss_at(step: int) -> Tensor:
        idx = torch.randperm(n, generator=gen)[:b].to(device) if b < n else slice(None)
        return -fitted.elbo(data[idx], 1, gen).mean()

    log = fit(params, loss_at, cfg.reverse_steps, cfg.reverse_lr, "r(z|w)")
    fitted.requires_grad_(False)
    return fitted, log.loss


@dataclass
class PenaltyTerms:
    """The DWP penalty of one layer (eq. ``eq-dwp-penalty``), in nats."""

    neg_entropy: float  # -H(q), closed form
    slice_terms: Tensor  # per slice -E_q(w_s)[bound(w_s)], (M,), Monte-Carlo

    @property
    def total(self) -> float:
        """-H(q) + sum of slice terms: an upper bound on KL(q(w) || p(w)) (in expectation)."""
        return self.neg_entropy + self.slice_terms.sum().item()


@torch.no_grad()
def layer_penalty(
    vae: KernelVAE, mu: Tensor, log_var: Tensor, num_samples: int, seed: int = 0
) -> PenaltyTerms:
    """-H(q) + sum_s E_q(w_s)[-bound(w_s)] for q(w) = prod N(w | mu, exp(log_var)), ``(M, k, k)``
    each, over ``num_samples`` draws of w ~ q and z ~ r(z|w)."""
    if mu.shape != log_var.shape:
        raise ValueError(f"mu {tuple(mu.shape)} and log_var {tuple(log_var.shape)} differ")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    device = next(vae.parameters()).device
    mu, log_var = vae.check_input(mu).to(device), log_var.to(device)
    gen = torch.Generator().manual_seed(seed)
    neg_entropy = -gaussian.entropy(log_var).sum().item()
    total = torch.zeros(len(mu), device=device)
    for _ in range(num_samples):
        w = gaussian.rsample(mu, log_var, generator=gen)
        total -= vae.elbo(w, 1, gen)
    return PenaltyTerms(neg_entropy, (total / num_samples).cpu())
