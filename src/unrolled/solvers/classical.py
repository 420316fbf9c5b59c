"""Classical first-order methods for in-context least squares, batched over prompts (docs/MODELS.md).

Each prompt defines f(w) = (1/2s)‖Xw − y‖² with s = 1 (``objective="sum"``, the scale the published
baseline step sizes refer to) or s = n (``"mean"``, the scale of Ahn et al.'s Lemma 1), so
∇f(w) = H w − b with H = XᵀX / s ``[B, d, d]`` and b = Xᵀy / s ``[B, d]``. Every method starts at w_0 = 0
and returns a :class:`~unrolled.trajectory.Trajectory` of iterates w_0..w_K (``[B, d]`` each) whose readout
is the query prediction <x_q, w>, so it plots on the same axes as the transformers. No loop over prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from unrolled.tasks.regression import RegressionBatch
from unrolled.trajectory import Readout, Trajectory

Objective = Literal["sum", "mean"]


@dataclass(frozen=True)
class LeastSquares:
    """The quadratic of a batch of prompts: ∇f(w) = H w − b.

    Attributes:
        H: ``[B, d, d]`` = XᵀX / s.
        b: ``[B, d]`` = Xᵀy / s.
    """

    H: Tensor
    b: Tensor

    @classmethod
    def from_batch(cls, batch: RegressionBatch, objective: Objective = "sum") -> LeastSquares:
        if objective not in ("sum", "mean"):
            raise ValueError(f"objective must be 'sum' or 'mean', got {objective!r}")
        s = batch.n if objective == "mean" else 1
        H = batch.X.transpose(1, 2) @ batch.X / s
        b = torch.einsum("bnd,bn->bd", batch.X, batch.y) / s
        return cls(H, b)

    def grad(self, w: Tensor) -> Tensor:
        """∇f(w) for iterates ``[B, d]`` -> ``[B, d]``."""
        return torch.einsum("bij,bj->bi", self.H, w) - self.b

    def hess_vec(self, v: Tensor) -> Tensor:
        """H v, ``[B, d] -> [B, d]``."""
        return torch.einsum("bij,bj->bi", self.H, v)


def linear_readout(x_query: Tensor) -> Readout:
    """The readout of iterates w ``[B, d]``: the query prediction <x_q, w> ``[B]``."""

    def readout(w: Tensor) -> Tensor:
        return (w * x_query).sum(dim=-1)

    return readout


def _per_step(value: float | Sequence[float] | Tensor, steps: int, name: str) -> list[float | Tensor]:
    if isinstance(value, Tensor) and value.dim() > 0:
        if value.shape[0] < steps:
            raise ValueError(f"{name} has {value.shape[0]} entries, need one per step ({steps})")
        return [value[k] for k in range(steps)]
    if isinstance(value, Sequence):
        if len(value) < steps:
            raise ValueError(f"{name} has {len(value)} entries, need one per step ({steps})")
        return list(value[:steps])
    return [value] * steps


class FirstOrderSolver(nn.Module):
    """Base class: ``solver(batch, steps)`` returns the trajectory w_0..w_steps (``[B, d]`` each)."""

    objective: Objective = "sum"

    def iterate(self, problem: LeastSquares, steps: int) -> list[Tensor]:
        raise NotImplementedError

    def forward(self, batch: RegressionBatch, steps: int) -> Trajectory:
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        problem = LeastSquares.from_batch(batch, self.objective)
        return Trajectory(tuple(self.iterate(problem, steps)), linear_readout(batch.x_query))


class GradientDescent(FirstOrderSolver):
    """(Preconditioned) gradient descent: w_{k+1} = w_k − η_k P ∇f(w_k).

    Args:
        lr: step size η, one number or one per step.
        preconditioner: P, ``[d, d]`` or per prompt ``[B, d, d]``; identity if None.
        objective: gradient scale, see the module docstring.
    """

    def __init__(
        self,
        lr: float | Sequence[float] | Tensor,
        preconditioner: Tensor | None = None,
        objective: Objective = "sum",
    ) -> None:
        super().__init__()
        self.lr, self.preconditioner, self.objective = lr, preconditioner, objective

    def iterate(self, problem: LeastSquares, steps: int) -> list[Tensor]:
        w = torch.zeros_like(problem.b)
        out = [w]
        P = self.preconditioner
        for lr in _per_step(self.lr, steps, "lr"):
            g = problem.grad(w)
            if P is not None:
                g = g @ P.T if P.dim() == 2 else torch.einsum("bij,bj->bi", P, g)
            w = w - lr * g
            out.append(w)
        return out


class HeavyBall(FirstOrderSolver):
    """Heavy-ball momentum: v_{k+1} = β v_k − η ∇f(w_k), w_{k+1} = w_k + v_{k+1} (v_0 = 0)."""

    lookahead = False  # Nesterov evaluates the gradient at w_k + β v_k instead

    def __init__(self, lr: float | Sequence[float], momentum: float, objective: Objective = "sum") -> None:
        super().__init__()
        self.lr, self.momentum, self.objective = lr, momentum, objective

    def iterate(self, problem: LeastSquares, steps: int) -> list[Tensor]:
        w = torch.zeros_like(problem.b)
        v = torch.zeros_like(w)
        out = [w]
        for lr in _per_step(self.lr, steps, "lr"):
            point = w + self.momentum * v if self.lookahead else w
            v = self.momentum * v - lr * problem.grad(point)
            w = w + v
            out.append(w)
        return out


class Nesterov(HeavyBall):
    """Nesterov's accelerated gradient: v_{k+1} = β v_k − η ∇f(w_k + β v_k), w_{k+1} = w_k + v_{k+1}."""

    lookahead = True


class ConjugateGradient(FirstOrderSolver):
    """Conjugate gradient on the normal equations XᵀX w = Xᵀy (Fletcher–Reeves, exact line search).

    No hyper-parameters; on a well-conditioned prompt it reaches the least-squares solution in d steps.
    Uses all n context points. Prompts that have converged (zero residual) stay put.

    The iteration runs in a batch-last layout (vectors ``[d, B]``, H ``[d, d, B]``): with d this small,
    elementwise work over a contiguous batch is much faster than batched tiny matrix products.
    """

    def forward(self, batch: RegressionBatch, steps: int) -> Trajectory:
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        X = batch.X.permute(1, 2, 0).contiguous()  # [n, d, B]
        H = torch.linalg.vecdot(X.unsqueeze(2), X.unsqueeze(1), dim=0)  # XᵀX  [d, d, B]
        rhs = torch.linalg.vecdot(X, batch.y.T.unsqueeze(1), dim=0)  # Xᵀy  [d, B]
        return Trajectory(tuple(cg_iterates(H, rhs, steps)), linear_readout(batch.x_query))


def cg_iterates(H: Tensor, rhs: Tensor, steps: int) -> list[Tensor]:
    """Conjugate gradient on H w = rhs from w_0 = 0 (Fletcher–Reeves, exact line search), batch-last.

    Args:
        H: symmetric positive semi-definite systems ``[d, d, M]``.
        rhs: right-hand sides ``[d, M]``.
        steps: iterations K.

    Returns:
        The iterates w_0..w_K, each ``[M, d]``. A system stops where its search direction has no curvature
        left (p·Hp ≤ 10 eps · tr(H) · ‖p‖²: a zero residual, or on a singular H a direction that round-off
        put in its null space), so converged and rank-deficient systems stay put instead of blowing up.
    """
    tiny = torch.finfo(rhs.dtype).tiny
    floor = 10 * torch.finfo(rhs.dtype).eps * torch.diagonal(H).sum(dim=-1)  # [M]
    r = rhs  # residual rhs − H w at w = 0
    w, p = torch.zeros_like(r), r
    rr = torch.linalg.vecdot(r, r, dim=0)
    states = [w.T]
    for _ in range(steps):
        Hp = torch.linalg.vecdot(H, p.unsqueeze(0), dim=1)
        pHp = torch.linalg.vecdot(p, Hp, dim=0)
        flat = pHp <= floor * torch.linalg.vecdot(p, p, dim=0)
        step = torch.where(flat, 0.0, rr / pHp.clamp_min(tiny))  # exact line search along p
        w = torch.addcmul(w, step, p)
        r = torch.addcmul(r, step, Hp, value=-1.0)
        rr_next = torch.linalg.vecdot(r, r, dim=0)
        p = torch.addcmul(r, rr_next / rr.clamp_min(tiny), p)  # Fletcher–Reeves
        rr = rr_next
        states.append(w.T)
    return states


class LFOM(FirstOrderSolver):
    """A linear first-order method with diagonal coefficients (Dutta & Sra, Sec. 3 and the learnable LFOM).

    w_{k+1} = w_k − Σ_{i≤k} Γ^k_i ⊙ ∇f(w_i), with Γ^k_i ∈ R^d.

    Args:
        gamma: either ``[K, d]``, the tied form Γ^k_i = Γ_i of the paper's learnable LFOM (each step's
            coefficient reused by every later step), or ``[K, K, d]`` with ``gamma[k, i]`` = Γ^k_i (entries
            with i > k are ignored). The full form contains GD (Γ^k_k = η), heavy-ball momentum
            (Γ^k_i = η β^{k−i}) and, on quadratics, CG's iterates for a fixed problem.
        objective: gradient scale.
        learnable: make ``gamma`` an ``nn.Parameter``.
    """

    def __init__(self, gamma: Tensor, objective: Objective = "sum", learnable: bool = False) -> None:
        super().__init__()
        if gamma.dim() not in (2, 3) or (gamma.dim() == 3 and gamma.shape[0] != gamma.shape[1]):
            raise ValueError(f"gamma must be [K, d] or [K, K, d], got {tuple(gamma.shape)}")
        self.objective = objective
        if learnable:
            self.gamma = nn.Parameter(gamma.clone())
        else:
            self.register_buffer("gamma", gamma.clone())

    @property
    def max_steps(self) -> int:
        return self.gamma.shape[0]

    def iterate(self, problem: LeastSquares, steps: int) -> list[Tensor]:
        if steps > self.max_steps:
            raise ValueError(f"LFOM has coefficients for {self.max_steps} steps, asked for {steps}")
        w = torch.zeros_like(problem.b)
        out = [w]
        if self.gamma.dim() == 2:  # tied: carry the running sum Σ_{i≤k} Γ_i ⊙ g_i
            memory = torch.zeros_like(w)
            for k in range(steps):
                memory = memory + self.gamma[k] * problem.grad(w)
                w = w - memory
                out.append(w)
            return out
        grads: list[Tensor] = []
        for k in range(steps):
            grads.append(problem.grad(w))
            w = w - sum(self.gamma[k, i] * g for i, g in enumerate(grads))
            out.append(w)
        return out


class UnrolledLFOM(nn.Module):
    """A learnable LFOM with a fixed number of steps, trained like a transformer (Dutta & Sra, Sec. 6).

    ``model(batch)`` runs K = ``steps`` iterations of :class:`LFOM` with learned coefficients and returns
    the trajectory w_0..w_K (``[B, d]`` each), read out at the query.

    Args:
        d: input dimension.
        steps: K, the number of iterations (the model's depth).
        form: ``tied`` (Γ ``[K, d]``: w_{k+1} = w_k − Σ_{i≤k} Γ_i ⊙ g_i, the paper's learnable LFOM) or
            ``full`` (Γ^k_i ``[K, K, d]``, every step its own weights on every past gradient).
        init: tied: every Γ_i starts at ``init``; full: Γ^k_k = ``init`` and Γ^k_i = 0 for i < k, i.e.
            gradient descent with step ``init``.
        objective: the gradient's scale (``mean``: ∇ (1/2n)‖Xw − y‖²; ``sum``: ∇ ½‖Xw − y‖²).
    """

    def __init__(
        self,
        d: int,
        steps: int,
        form: Literal["tied", "full"] = "tied",
        init: float = 0.0,
        objective: Objective = "mean",
    ) -> None:
        super().__init__()
        if steps < 1 or d < 1:
            raise ValueError(f"need d >= 1 and steps >= 1, got d={d}, steps={steps}")
        if form == "tied":
            gamma = torch.full((steps, d), float(init))
        elif form == "full":
            gamma = torch.zeros(steps, steps, d)
            idx = torch.arange(steps)
            gamma[idx, idx] = float(init)
        else:
            raise ValueError(f"form must be 'tied' or 'full', got {form!r}")
        self.d, self.depth, self.form = d, steps, form
        self.lfom = LFOM(gamma, objective=objective, learnable=True)

    def forward(self, batch: RegressionBatch) -> Trajectory:
        if not isinstance(batch, RegressionBatch):
            raise TypeError(f"a learnable LFOM runs on a RegressionBatch, got {type(batch).__name__}")
        if batch.d != self.d:
            raise ValueError(f"LFOM built for d={self.d}, got prompts with d={batch.d}")
        return self.lfom(batch, self.depth)
