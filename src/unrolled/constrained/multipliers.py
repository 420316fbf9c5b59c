"""Lagrange multipliers of the descent constraints: projected, bounded or resilient dual ascent, synced across
ranks.

Projected ascent:   λ ← [λ + η_λ s]_+
Bounded ascent:     λ ← min(λ_max, [λ + η_λ s]_+). Projecting onto [0, λ_max] is the dual of the L1-relaxed
                    ("elastic") problem  min f + λ_max Σ_l [g_l]_+ : a constraint that cannot be met costs at
                    most λ_max per unit of violation instead of a multiplier that grows for the whole run.
Resilient ascent:   λ ← [(1 − η_λ / c) λ + η_λ s]_+   (Hounie, Ribeiro & Chamon, NeurIPS 2023). Each
                    constraint g ≤ 0 may be relaxed to g ≤ u at a cost h(u) = c u² / 2; at the optimum
                    u = λ / c, and the update is dual ascent on g − u. At a fixed slack s the multiplier
                    converges to λ* = c · s whatever η_λ is: the cost c, not the dual step, sets how far a
                    constraint gives (by u* = s). The iteration converges for η_λ < 2c (monotonically for
                    η_λ ≤ c).

The slack estimate ``s`` is the mean over whatever batches the trainer measured it on. Under
``torch.distributed`` :meth:`Multipliers.step` all-reduces it (mean over ranks) before the update, so every
rank takes the same dual step and holds identical multipliers. A constraint whose slack was not measured
since the last dual step (``observed`` False: the SFT trainer reads a layer whose λ is 0 only on some
batches) keeps its multiplier.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def all_reduce_mean(t: Tensor) -> Tensor:
    """The mean of ``t`` over all ranks (``t`` itself when not distributed). Returns a new tensor."""
    out = t.detach().clone()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= dist.get_world_size()
    return out


class Multipliers:
    """λ ∈ [0, λ_max]^L with projected, bounded (``bound``) and/or resilient (``cost``) dual ascent.

    Args:
        num: number of constraints L.
        lr: dual step size η_λ > 0.
        cost: the resilient relaxation's cost c > 0 (h(u) = c u² / 2); None: no relaxation. Needs η_λ < 2c.
        bound: λ_max > 0, the largest value a multiplier may take; None: unbounded.
        init: initial value of every λ_l (≥ 0; the paper starts at 0).
    """

    def __init__(
        self,
        num: int,
        lr: float,
        cost: float | None = None,
        bound: float | None = None,
        init: float = 0.0,
    ) -> None:
        if num < 1:
            raise ValueError(f"need at least one constraint, got {num}")
        if lr <= 0:
            raise ValueError(f"dual lr must be > 0, got {lr}")
        if cost is not None and cost <= 0:
            raise ValueError(f"resilient cost must be > 0, got {cost}")
        if cost is not None and lr >= 2 * cost:
            raise ValueError(
                f"resilient ascent with dual lr {lr} and cost {cost} diverges (it needs dual lr < 2 × cost): "
                f"lower the dual lr below {2 * cost:g} or raise the cost above {lr / 2:g}"
            )
        if bound is not None and bound <= 0:
            raise ValueError(f"multiplier bound must be > 0, got {bound}")
        if init < 0 or (bound is not None and init > bound):
            raise ValueError(f"multipliers start in [0, {bound if bound is not None else '∞'}], got {init}")
        self.lr, self.cost, self.bound = lr, cost, bound
        self.value = torch.full((num,), float(init), dtype=torch.float64)
        self.steps = 0

    def step(self, slack: Tensor, observed: Tensor | None = None) -> Tensor:
        """One dual step with the slack estimate ``[L]`` (averaged over ranks first); returns λ.

        ``observed`` ``[L]`` (bool) marks the constraints whose slack was measured; the others keep their λ
        (their entries of ``slack`` are ignored). Every rank must pass the same mask.
        """
        s = all_reduce_mean(slack).to(self.value)
        if s.shape != self.value.shape:
            raise ValueError(f"slack of shape {tuple(s.shape)} for {self.value.numel()} multipliers")
        seen = (
            torch.ones_like(self.value, dtype=torch.bool)
            if observed is None
            else observed.to(torch.bool).cpu()
        )
        if not torch.isfinite(s[seen]).all():
            raise ValueError(f"non-finite slack estimate {s.tolist()} at dual step {self.steps + 1}")
        decay = 1.0 - self.lr / self.cost if self.cost is not None else 1.0
        new = (decay * self.value + self.lr * torch.where(seen, s, 0.0)).clamp_min(0.0)
        if self.bound is not None:
            new = new.clamp_max(self.bound)
        self.value = torch.where(seen, new, self.value)
        self.steps += 1
        return self.value

    def as_tensor(self, like: Tensor) -> Tensor:
        """λ on the device/dtype of ``like``."""
        return self.value.to(dtype=like.dtype, device=like.device)

    def state_dict(self) -> dict[str, Any]:
        return {
            "value": self.value.clone(),
            "steps": self.steps,
            "lr": self.lr,
            "cost": self.cost,
            "bound": self.bound,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        value = state["value"].to(torch.float64)
        if value.shape != self.value.shape:
            raise ValueError(
                f"checkpoint holds {value.numel()} multipliers, this problem has {self.value.numel()}"
            )
        self.value, self.steps = value, int(state["steps"])
