"""Classical in-context regressors at every prompt length, batched over prompts and prefixes.

A prompt of N pairs gives N problems: prefix i (i = 0..N−1) fits the pairs before it and predicts y_i, as the
in-context learners of :mod:`unrolled.models.icl` do. Every method here works on the normal equations of all
prefixes at once,

    S_i = Σ_{j<i} x_j x_jᵀ   ``[B, N, d, d]``,     b_i = Σ_{j<i} y_j x_j   ``[B, N, d]``,

with no loop over prompts or prefixes, and returns a :class:`~unrolled.trajectory.Trajectory` whose states are
the estimates w ``[B, N, d]`` (one per prefix) and whose readout is ⟨x_i, w_i⟩ ``[B, N]``: the learners'
shape, so one evaluation path serves both. Closed forms and converged methods (least squares, ridge, Bayes,
Lasso) have one state; iterative ones (Newton, GD, CG) have one per iteration, or those in ``keep``.

Every method computes in float64 (the rank-deficient prefixes i < d need a pseudo-inverse threshold that
float32 cannot resolve) and returns states in the prompts' dtype.

* :func:`least_squares`: the minimum-norm least-squares solution S⁺ b = X⁺ y (Garg et al.'s baseline).
* :func:`ridge`: (S + λ I)⁻¹ b, or (S + Λ)⁻¹ b for a matrix Λ; :func:`bayes`: the posterior mean when the
  label noise σ and the prior E[w wᵀ] = Σ_w are known, Λ = σ² Σ_w⁻¹.
* :class:`IterativeNewton`: Fu et al. 2023's iteration for S⁺: M_0 = α S, α = 1/‖S Sᵀ‖_F,
  M_{k+1} = M_k (2I − S M_k), ŵ_k = M_k b. State k is k iterations (state 0 is M_0 b, not 0).
* :class:`PrefixGD`: w_{k+1} = w_k − η (S w_k − b) / s, s = 1 (``sum``; Fu et al. use η = 0.01) or the
  prefix's number of pairs (``mean``); :func:`tune_gd` picks η per iteration count on validation prompts.
* :class:`PrefixCG`: the library's conjugate gradient (:func:`~unrolled.solvers.classical.cg_iterates`).
* :class:`Lasso`: FISTA on (1 / 2i) ‖X_i w − y_i‖² + α ‖w‖₁ (scikit-learn's ``Lasso`` objective, as Garg
  et al.'s baseline uses it); :func:`tune_alpha` picks α (or ridge's λ) on validation prompts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from unrolled.models.icl import Prompts
from unrolled.solvers.classical import cg_iterates
from unrolled.trajectory import Readout, Trajectory

F64 = torch.float64


@dataclass(frozen=True)
class PrefixProblems:
    """The normal equations of every prefix of a batch of prompts (float64).

    Attributes:
        S: ``[B, N, d, d]``, S_i = Σ_{j<i} x_j x_jᵀ (zero for i = 0).
        b: ``[B, N, d]``, b_i = Σ_{j<i} y_j x_j.
        counts: ``[N]``, i: the pairs prefix i fits.
        xs: the inputs ``[B, N, d]`` (the readout's).
    """

    S: Tensor
    b: Tensor
    counts: Tensor
    xs: Tensor

    @classmethod
    def from_prompts(cls, prompts: Prompts) -> PrefixProblems:
        xs, ys = prompts.xs.to(F64), prompts.ys.to(F64)
        # exclusive sums as shifted inclusive ones (not cumsum − term: that cancellation leaves rounding of the
        # size of the *next* term in S_i, which breaks the rank of the prefixes i < d)
        S = _exclusive_cumsum(xs.unsqueeze(-1) * xs.unsqueeze(-2))  # [B, N, d, d]
        b = _exclusive_cumsum(xs * ys.unsqueeze(-1))
        counts = torch.arange(prompts.points, dtype=F64, device=xs.device)
        return cls(S, b, counts, xs)

    @property
    def d(self) -> int:
        return self.S.shape[-1]

    def matvec(self, w: Tensor) -> Tensor:
        """S w for estimates ``[B, N, d]``."""
        return (self.S @ w.unsqueeze(-1)).squeeze(-1)


def _exclusive_cumsum(t: Tensor) -> Tensor:
    """Σ_{j<i} t_j along dim 1 (zero at i = 0)."""
    return torch.cat([torch.zeros_like(t[:, :1]), t[:, :-1].cumsum(dim=1)], dim=1)


def prefix_readout(xs: Tensor) -> Readout:
    """The readout of estimates w ``[B, N, d]``: the predictions ⟨x_i, w_i⟩ ``[B, N]``."""

    def readout(w: Tensor) -> Tensor:
        return (w * xs.to(w.dtype)).sum(dim=-1)

    return readout


def _trajectory(states: Sequence[Tensor], prompts: Prompts) -> Trajectory:
    dtype = prompts.xs.dtype
    return Trajectory(tuple(s.to(dtype) for s in states), prefix_readout(prompts.xs))


def _solve_sym(S: Tensor, b: Tensor, rank: Tensor | None = None, rtol: float | None = None) -> Tensor:
    """S⁺ b for symmetric PSD ``S [..., d, d]`` by its eigen-decomposition (the minimum-norm solution).

    Eigenvalues under ``rtol`` × the largest (default d · eps) count as zero, and so do all but the ``rank``
    largest (``[...]``, when given: a prefix of i pairs has rank at most i, and the rounding of its zero
    eigenvalues can exceed any fixed tolerance relative to the largest)."""
    lam, V = torch.linalg.eigh(S)  # ascending
    tol = (rtol if rtol is not None else S.shape[-1] * torch.finfo(S.dtype).eps) * lam[..., -1:].clamp_min(0)
    keep = lam > tol
    if rank is not None:
        d = S.shape[-1]
        keep = keep & (torch.arange(d, device=S.device) >= d - rank.unsqueeze(-1))
    inv = torch.where(keep, 1.0 / lam.clamp_min(torch.finfo(S.dtype).tiny), 0.0)
    coef = (V.transpose(-1, -2) @ b.unsqueeze(-1)).squeeze(-1) * inv
    return (V @ coef.unsqueeze(-1)).squeeze(-1)


def least_squares(prompts: Prompts) -> Trajectory:
    """Minimum-norm least squares on every prefix: one state, w_i = S_i⁺ b_i ``[B, N, d]`` (prefix 0: w = 0)."""
    p = PrefixProblems.from_prompts(prompts)
    rank = p.counts.to(torch.long).clamp_max(p.d).expand(p.b.shape[:-1])  # at most i pairs, at most d
    return _trajectory([_solve_sym(p.S, p.b, rank)], prompts)


def ridge(prompts: Prompts, lam: float | Tensor) -> Trajectory:
    """Ridge on every prefix: one state, w_i = (S_i + Λ)⁻¹ b_i with Λ = λ I (a number) or a ``[d, d]`` matrix."""
    p = PrefixProblems.from_prompts(prompts)
    reg = lam.to(F64) if isinstance(lam, Tensor) else float(lam) * torch.eye(p.d, dtype=F64)
    if isinstance(lam, Tensor) and lam.shape != (p.d, p.d):
        raise ValueError(f"a matrix Λ must be [d, d] = [{p.d}, {p.d}], got {list(lam.shape)}")
    if not isinstance(lam, Tensor) and lam <= 0:
        raise ValueError(f"ridge needs λ > 0, got {lam} (λ = 0 is least_squares)")
    A = p.S + reg.to(p.S.device)
    return _trajectory([torch.linalg.solve(A, p.b)], prompts)


def bayes(prompts: Prompts, noise_std: float, prior_cov: Tensor) -> Trajectory:
    """The Bayes predictor (posterior mean of w) when y = ⟨x, w⟩ + N(0, σ²) and w ~ N(0, Σ_w): ridge with
    Λ = σ² Σ_w⁻¹. With σ = 0 it is the limit Λ → 0 on the prior's support: minimum-norm least squares."""
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    if noise_std == 0:
        return least_squares(prompts)
    return ridge(prompts, noise_std**2 * torch.linalg.inv(prior_cov.to(F64)))


def _keep(steps: int, keep: Sequence[int] | None) -> set[int]:
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    kept = set(range(steps + 1)) if keep is None else set(keep)
    bad = sorted(k for k in kept if not 0 <= k <= steps)
    if bad:
        raise ValueError(f"keep has iteration counts outside 0..{steps}: {bad}")
    return kept


class IterativeNewton:
    """Fu et al.'s iterative Newton for the pseudo-inverse of S, on every prefix (module docstring).

    ``solver(prompts, steps, keep=None)``: states ŵ_k ``[B, N, d]`` for k in 0..steps (or in ``keep``).
    """

    def __call__(self, prompts: Prompts, steps: int, keep: Sequence[int] | None = None) -> Trajectory:
        kept = _keep(steps, keep)
        p = PrefixProblems.from_prompts(prompts)
        S = p.S
        norm = torch.linalg.matrix_norm(S @ S.transpose(-1, -2))  # Frobenius  [B, N]
        alpha = torch.where(norm > 0, 1.0 / norm.clamp_min(torch.finfo(F64).tiny), 0.0)
        M = alpha[..., None, None] * S.transpose(-1, -2)
        eye2 = 2 * torch.eye(p.d, dtype=F64, device=S.device)
        states = []
        for k in range(steps + 1):
            if k > 0:
                M = M @ (eye2 - S @ M)
            if k in kept:
                states.append((M @ p.b.unsqueeze(-1)).squeeze(-1))
        return _trajectory(states, prompts)


class PrefixGD:
    """Gradient descent on every prefix from w_0 = 0: w_{k+1} = w_k − η_k (S w_k − b) / s.

    Args:
        lr: η, one number, or one per step (``[steps]``: the k-th step uses ``lr[k]``).
        objective: ``sum`` (s = 1, Fu et al.'s GD) or ``mean`` (s = the prefix's pairs).
    """

    def __init__(self, lr: float | Sequence[float], objective: Literal["sum", "mean"] = "sum") -> None:
        if objective not in ("sum", "mean"):
            raise ValueError(f"objective must be 'sum' or 'mean', got {objective!r}")
        self.lr, self.objective = lr, objective

    def __call__(self, prompts: Prompts, steps: int, keep: Sequence[int] | None = None) -> Trajectory:
        kept = _keep(steps, keep)
        p = PrefixProblems.from_prompts(prompts)
        scale = torch.ones_like(p.counts) if self.objective == "sum" else 1.0 / p.counts.clamp_min(1)
        lrs = [float(self.lr)] * steps if isinstance(self.lr, int | float) else [float(v) for v in self.lr]
        if len(lrs) < steps:
            raise ValueError(f"lr has {len(lrs)} entries, need one per step ({steps})")
        w = torch.zeros_like(p.b)
        states = [w] if 0 in kept else []
        for k in range(steps):
            w = w - lrs[k] * scale[None, :, None] * (p.matvec(w) - p.b)
            if k + 1 in kept:
                states.append(w)
        return _trajectory(states, prompts)


class PrefixCG:
    """The library's conjugate gradient on S w = b for every prefix (no hyper-parameters); states w_k.

    A system stays at its first iterate whose residual ‖S w − b‖ is within ``rtol`` of ‖b‖: past convergence
    CG's directions are rounding noise, and on the rank-deficient prefixes (i < d) its steps along them can
    grow instead of vanishing. (Every b lies in the range of S, so every system's residual reaches 0.)
    """

    def __init__(self, rtol: float = 1e-10) -> None:
        self.rtol = rtol

    def __call__(self, prompts: Prompts, steps: int, keep: Sequence[int] | None = None) -> Trajectory:
        kept = _keep(steps, keep)
        p = PrefixProblems.from_prompts(prompts)
        B, N, d = p.b.shape
        H = p.S.reshape(B * N, d, d).permute(1, 2, 0).contiguous()  # batch-last [d, d, B·N]
        iterates = cg_iterates(H, p.b.reshape(B * N, d).T.contiguous(), steps)
        bound = self.rtol * p.b.norm(dim=-1)  # [B, N]
        done = torch.zeros(B, N, dtype=torch.bool, device=p.b.device)
        frozen = torch.zeros_like(p.b)
        states = []
        for k, w in enumerate(iterates):
            w = torch.where(done.unsqueeze(-1), frozen, w.reshape(B, N, d))
            done = done | ((p.matvec(w) - p.b).norm(dim=-1) <= bound)
            frozen = w
            if k in kept:
                states.append(w)
        return _trajectory(states, prompts)


class Lasso:
    """The Lasso on every prefix by FISTA (Beck & Teboulle 2009), one state: the estimate after ``steps``.

    Minimises (1 / 2i) ‖X_i w − y_i‖² + α ‖w‖₁ (scikit-learn's ``Lasso`` objective, no intercept), i.e.
    ½ wᵀ S w − bᵀ w + i α ‖w‖₁, with step 1 / λ_max(S_i). Prefix 0 (no pairs) predicts 0.

    Args:
        alpha: α > 0.
        steps: FISTA iterations (d ≤ 20 converges to 1e-8 well within the default).
    """

    def __init__(self, alpha: float, steps: int = 2000) -> None:
        if alpha <= 0 or steps < 1:
            raise ValueError(f"need alpha > 0 and steps >= 1, got alpha={alpha}, steps={steps}")
        self.alpha, self.steps = alpha, steps

    def __call__(self, prompts: Prompts) -> Trajectory:
        p = PrefixProblems.from_prompts(prompts)
        L = torch.linalg.eigvalsh(p.S)[..., -1].clamp_min(torch.finfo(F64).tiny)  # [B, N]
        step = (1.0 / L).unsqueeze(-1)
        thresh = step * (self.alpha * p.counts)[None, :, None]
        w = torch.zeros_like(p.b)
        z, t = w, 1.0
        for _ in range(self.steps):
            u = z - step * (p.matvec(z) - p.b)
            w_next = torch.sign(u) * (u.abs() - thresh).clamp_min(0)
            t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
            z = w_next + ((t - 1) / t_next) * (w_next - w)
            w, t = w_next, t_next
        return _trajectory([w], prompts)


def prefix_errors(trajectory: Trajectory, prompts: Prompts) -> Tensor:
    """Squared errors of every state at every prefix: ``[S, B, N]`` (S states)."""
    ys = prompts.ys
    return torch.stack([(trajectory.readout(s) - ys.to(s.dtype)).square() for s in trajectory.states])


def tune_alpha(
    solve: Callable[[Prompts, float], Trajectory], validation: Prompts, grid: Sequence[float]
) -> tuple[float, list[float]]:
    """The grid value whose one-state solver (``solve(prompts, value)``: :func:`ridge`'s λ, :class:`Lasso`'s α)
    has the least mean squared error over every prefix of the validation prompts; also every value's error."""
    if not grid:
        raise ValueError("the grid is empty")
    errors = []
    for value in grid:
        err = float(prefix_errors(solve(validation, float(value)), validation).mean())
        errors.append(err if math.isfinite(err) else math.inf)
    best = min(range(len(grid)), key=errors.__getitem__)
    return float(grid[best]), errors


def default_gd_grid(objective: Literal["sum", "mean"], d: int, points: int, size: int = 24) -> list[float]:
    """Step sizes c / λ for c log-spaced in [0.02, 2], λ ≈ the largest eigenvalue of S for standard
    Gaussian inputs ((√i + √d)² at the longest prefix for ``sum``; (1 + √(d / i))² for ``mean``)."""
    i = max(points - 1, 1)
    lam = (math.sqrt(i) + math.sqrt(d)) ** 2 if objective == "sum" else (1 + math.sqrt(d / i)) ** 2
    return [c / lam for c in torch.logspace(math.log10(0.02), math.log10(2.0), size, dtype=F64).tolist()]


def tune_gd(
    validation: Prompts,
    steps: Sequence[int],
    grid: Sequence[float],
    objective: Literal["sum", "mean"] = "mean",
) -> dict[int, float]:
    """For every iteration count k in ``steps``, the step η (from ``grid``) whose k-step GD has the least mean
    squared error over every prefix of the validation prompts. Diverging steps are never chosen."""
    K = max(steps)
    errors = []
    for lr in grid:
        traj = PrefixGD(lr, objective)(validation, K, keep=steps)
        err = prefix_errors(traj, validation).mean(dim=(1, 2))
        errors.append(torch.where(err.isfinite(), err, math.inf))
    table = torch.stack(errors)  # [grid, len(steps)]
    best = table.argmin(dim=0)
    if not bool(table.min(dim=0).values.isfinite().all()):
        raise RuntimeError("every step size in the grid diverged; widen the grid")
    return {k: float(grid[int(best[j])]) for j, k in enumerate(sorted(set(steps)))}


def tuned_gd(
    prompts: Prompts, tuned: dict[int, float], objective: Literal["sum", "mean"] = "mean"
) -> Trajectory:
    """GD whose state for each k of ``tuned`` (ascending) is k steps at that k's own tuned step."""
    states = []
    for k in sorted(tuned):
        states.append(PrefixGD(tuned[k], objective)(prompts, k, keep=[k]).states[0])
    return Trajectory(tuple(states), prefix_readout(prompts.xs))
