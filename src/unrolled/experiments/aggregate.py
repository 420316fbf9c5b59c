"""Statistics over seeds that every family's aggregation uses: means and spreads that survive divergence.

JSON has no inf or NaN, so a loss that diverged is stored as None; these helpers count such seeds, average the
rest, and turn non-finite results back into None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def header(cfg: Any, task: str) -> dict[str, Any]:
    """The first keys of every ``results.json``: name, description, what the task is."""
    return {"name": cfg.name, "description": cfg.description, "task": task}


def losses(values: Tensor) -> list[float | None]:
    """Plain floats for JSON; a non-finite loss (a method that diverged on some problems) becomes None."""
    return [float(v) if math.isfinite(float(v)) else None for v in values.detach().cpu()]


def safe_log(x: float) -> float:
    """log of a loss; an exact zero (a solved problem batch) maps to log(1e-300) so JSON stays finite."""
    return math.log(max(x, 1e-300))


def finite_mean(t: Tensor) -> Tensor:
    """Mean over seeds (dim 0) of the finite entries; NaN where every seed diverged."""
    return torch.where(t.isfinite(), t, torch.nan).nanmean(dim=0)


def finite_std(t: Tensor) -> Tensor:
    """Std over seeds of the finite entries (0 with one finite seed; NaN with none)."""
    ok = t.isfinite()
    k = ok.sum(0)
    mean = finite_mean(t)
    sq = torch.where(ok, (t - mean) ** 2, 0.0).sum(0)
    std = (sq / (k - 1).clamp_min(1)).sqrt()
    return torch.where(k > 0, std, torch.nan)


def finite_or_none(t: Tensor) -> Any:
    """A tensor as a (nested) list with non-finite values as None."""
    if t.dim() == 0:
        v = float(t)
        return v if math.isfinite(v) else None
    return [finite_or_none(x) for x in t]


def mean_std(rows: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """Mean and sample std over seeds (rows) of finite values; the std is 0 with one seed."""
    t = torch.tensor(rows, dtype=torch.float64)
    std = t.std(0, unbiased=True) if t.shape[0] > 1 else torch.zeros(t.shape[1], dtype=torch.float64)
    return t.mean(0).tolist(), std.tolist()


def published_at(
    published: dict[str, dict[Any, float]] | None, points: Sequence[Any]
) -> dict[str, list[float | None]]:
    """The paper's numbers of each method at ``points`` (depths, γ values), None where the paper has none.

    Methods with no number at any of the points are left out.
    """
    out: dict[str, list[float | None]] = {}
    for name, values in (published or {}).items():
        row = [values.get(p) for p in points]
        if any(v is not None for v in row):
            out[name] = row
    return out
