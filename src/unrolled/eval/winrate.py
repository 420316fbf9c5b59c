"""Win rates of outputs A against outputs B under a pairwise judge, and AlpacaEval's model-output files.

Every item is judged in both orders (A shown first, then B shown first), which cancels the judge's position
bias: per order the outcome for A is 1 (P(A better) > 0.5), 0.5 (exactly 0.5, a tie) or 0, and the item's
score is the mean of its two outcomes, so a judge that always picks the first position scores every item 0.5.
An item on which either order failed is excluded from the rate and counted in ``failures``. The confidence
interval is a seeded percentile bootstrap over the items' scores.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unrolled.eval.judges import Judge, Verdict

__all__ = ["ItemRecord", "WinRate", "win_rate", "write_alpaca_eval"]


@dataclass(frozen=True)
class ItemRecord:
    """One item: ``p_a`` = P(A better) with A shown first and with B shown first (``None``: that order failed;
    the second is ``1 - p_first`` of the swapped verdict); ``score`` in {0, 0.25, 0.5, 0.75, 1} or ``None``."""

    instruction: str
    output_a: str
    output_b: str
    p_a: tuple[float | None, float | None]
    score: float | None
    errors: tuple[str, ...] = ()
    attempts: int = 0


@dataclass(frozen=True)
class WinRate:
    """The win rate of A over B (``rate``, the mean item score in [0, 1]; ``None`` if every item failed).

    ``wins``/``ties``/``losses`` count item scores > 0.5, == 0.5, < 0.5 among the ``n - failures`` judged
    items; ``ci_low``/``ci_high`` a percentile bootstrap interval at ``confidence``; ``soft_rate`` the mean
    P(A better) over both orders; ``position_bias`` the mean P(first better) over every judged order - 0.5.
    """

    judge: str
    n: int
    failures: int
    wins: int
    ties: int
    losses: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    soft_rate: float | None
    position_bias: float | None
    items: list[ItemRecord] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (items as dicts, tuples as lists)."""
        out = asdict(self)
        out["items"] = [
            {**item, "p_a": list(item["p_a"]), "errors": list(item["errors"])} for item in out["items"]
        ]
        return out


def _outcome(p: float) -> float:
    return 1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0


def _check(verdicts: list[Verdict], n: int, judge: Judge) -> list[Verdict]:
    if len(verdicts) != n:
        raise ValueError(f"judge {judge.name!r} returned {len(verdicts)} verdicts for {n} items")
    return verdicts


def win_rate(
    judge: Judge,
    instructions: Sequence[str],
    outputs_a: Sequence[str],
    outputs_b: Sequence[str],
    references: Sequence[str] | None = None,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> WinRate:
    """The win rate of ``outputs_a`` over ``outputs_b`` (all of length ``N``), each item judged in both orders.

    Args:
        judge: a :class:`~unrolled.eval.judges.Judge`.
        instructions, outputs_a, outputs_b: the items.
        references: reference answers, for judges that need them (:class:`~unrolled.eval.ReferenceJudge`).
        confidence: of the bootstrap interval.
        n_bootstrap, seed: bootstrap resamples of the items and their seed.
    """
    n = len(instructions)
    if len(outputs_a) != n or len(outputs_b) != n or (references is not None and len(references) != n):
        raise ValueError("instructions, outputs_a, outputs_b (and references) must have equal lengths")
    if not 0 < confidence < 1 or n_bootstrap < 1:
        raise ValueError(
            f"confidence must be in (0, 1) and n_bootstrap >= 1, got {confidence}, {n_bootstrap}"
        )
    a_first = _check(judge.judge(instructions, outputs_a, outputs_b, references), n, judge)
    b_first = _check(judge.judge(instructions, outputs_b, outputs_a, references), n, judge)

    items, scores, soft, firsts = [], [], [], []
    for i in range(n):
        v1, v2 = a_first[i], b_first[i]
        p1 = v1.p_first
        p2 = None if v2.p_first is None else 1.0 - v2.p_first  # P(A better) with B shown first
        firsts += [v.p_first for v in (v1, v2) if v.p_first is not None]
        score = None
        if p1 is not None and p2 is not None:
            score = (_outcome(p1) + _outcome(p2)) / 2
            scores.append(score)
            soft += [p1, p2]
        errors = tuple(
            f"{order}: {v.error}" for order, v in (("A first", v1), ("B first", v2)) if v.p_first is None
        )
        items.append(
            ItemRecord(
                instructions[i],
                outputs_a[i],
                outputs_b[i],
                (p1, p2),
                score,
                errors,
                v1.attempts + v2.attempts,
            )
        )

    rate = ci_low = ci_high = None
    if scores:
        values = np.asarray(scores, dtype=np.float64)
        rate = float(values.mean())
        rng = np.random.default_rng(seed)
        means = values[rng.integers(0, len(values), size=(n_bootstrap, len(values)))].mean(axis=1)
        alpha = (1 - confidence) / 2
        ci_low, ci_high = (float(q) for q in np.quantile(means, [alpha, 1 - alpha]))
    return WinRate(
        judge=judge.name,
        n=n,
        failures=n - len(scores),
        wins=sum(s > 0.5 for s in scores),
        ties=sum(s == 0.5 for s in scores),
        losses=sum(s < 0.5 for s in scores),
        rate=rate,
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=confidence,
        soft_rate=float(np.mean(soft)) if soft else None,
        position_bias=float(np.mean(firsts)) - 0.5 if firsts else None,
        items=items,
    )


def write_alpaca_eval(
    path: str | Path,
    instructions: Sequence[str],
    outputs: Sequence[str],
    generator: str,
    dataset: str = "unrolled",
) -> Path:
    """Write the JSON list ``alpaca_eval --model_outputs`` reads (``instruction``, ``output``, ``generator``,
    ``dataset`` per record), atomically: a temporary file in the same folder, then ``os.replace``."""
    if len(instructions) != len(outputs):
        raise ValueError(f"{len(instructions)} instructions but {len(outputs)} outputs")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [
        {"instruction": i, "output": o, "generator": generator, "dataset": dataset}
        for i, o in zip(instructions, outputs, strict=True)
    ]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(records, f, ensure_ascii=False, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
