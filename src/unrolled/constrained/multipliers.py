"""Lagrange multipliers of the descent constraints: projected or resilient dual ascent, synced across ranks.

Projected ascent:   λ ← [λ + η_λ s]_+
Resilient ascent:   λ ← [(1 − 1/ρ) λ + η_λ s]_+   (Hounie et al. 2023: the constraint may be relaxed at a
                    quadratic cost ‖u‖²/(2ρ); the multipliers stay bounded, by ρ η_λ max s at a fixed slack).

The slack estimate ``s`` is the mean over whatever batch the trainer measured it on. Under
``torch.distributed`` :meth:`Multipliers.step` all-reduces it (mean over ranks) before the update, so every
rank takes the same dual step and holds identical multipliers.
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
    """λ ∈ R^L_{≥0} with projected (``rho=None``) or resilient (finite ``rho``) dual ascent.

    Args:
        num: number of constraints L.
        lr: dual step size η_λ > 0.
        rho: resilience ρ > 1 (None: plain projected ascent).
        init: initial value of every λ_l (≥ 0; the paper starts at 0).
    """

    def __init__(self, num: int, lr: float, rho: float | None = None, init: float = 0.0) -> None:
        if num < 1:
            raise ValueError(f"need at least one constraint, got {num}")
        if lr <= 0:
            raise ValueError(f"dual lr must be > 0, got {lr}")
        if rho is not None and rho <= 1:
            raise ValueError(f"resilience rho must be > 1, got {rho}")
        if init < 0:
            raise ValueError(f"multipliers start at >= 0, got {init}")
        self.lr, self.rho = lr, rho
        self.value = torch.full((num,), float(init), dtype=torch.float64)
        self.steps = 0

    def step(self, slack: Tensor) -> Tensor:
        """One dual step with the slack estimate ``[L]`` (averaged over ranks first); returns λ."""
        s = all_reduce_mean(slack).to(self.value)
        if s.shape != self.value.shape:
            raise ValueError(f"slack of shape {tuple(s.shape)} for {self.value.numel()} multipliers")
        if not torch.isfinite(s).all():
            raise ValueError(f"non-finite slack estimate {s.tolist()} at dual step {self.steps + 1}")
        decay = 1.0 - 1.0 / self.rho if self.rho is not None else 1.0
        self.value = (decay * self.value + self.lr * s).clamp_min(0.0)
        self.steps += 1
        return self.value

    def as_tensor(self, like: Tensor) -> Tensor:
        """λ on the device/dtype of ``like``."""
        return self.value.to(dtype=like.dtype, device=like.device)

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value.clone(), "steps": self.steps, "lr": self.lr, "rho": self.rho}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        value = state["value"].to(torch.float64)
        if value.shape != self.value.shape:
            raise ValueError(
                f"checkpoint holds {value.numel()} multipliers, this problem has {self.value.numel()}"
            )
        self.value, self.steps = value, int(state["steps"])
