"""The seed summary shared by the families whose exits are the small-step rule (in-context learners, video).

Each seed's row holds ``full`` (the full model's quality), ``fixed`` (quality truncated after each layer),
``small_step`` (a (mean layers, quality) pair per tolerance), ``tol`` (the calibrated tolerance or None) and, where
calibrated, the quality under the quality's own name, ``mean_layers`` and ``timing``.
"""

from __future__ import annotations

from typing import Any

from unrolled.experiments.icl.aggregate import seed_interval

__all__ = ["small_step_summary"]


def small_step_summary(rows: list[dict[str, Any]], depth: int, points: int, quality: str) -> dict[str, Any]:
    """Means over seeds of the truncated and swept curves, and 95% intervals of the calibrated exits."""
    calibrated = [r for r in rows if r.get("tol") is not None]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    return {
        "depth": depth,
        "seeds": [r["seed"] for r in rows],
        "full": seed_interval([r["full"] for r in rows]),
        "fixed": [mean([r["fixed"][l] for r in rows]) for l in range(depth)],
        "small_step": {
            "mean_layers": [mean([r["small_step"][i][0] for r in rows]) for i in range(points)],
            quality: [mean([r["small_step"][i][1] for r in rows]) for i in range(points)],
        },
        "calibrated": {
            "seeds": len(calibrated),
            "tol": [r["tol"] for r in rows],
            quality: seed_interval([r[quality] for r in calibrated]),
            "mean_layers": seed_interval([r["mean_layers"] for r in calibrated]),
            "time_ratio": seed_interval([r["timing"]["ratio"] for r in calibrated]),
        },
    }
