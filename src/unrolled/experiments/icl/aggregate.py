"""``results.json`` of an in-context learning experiment: curves over seeds, the paired gaps of the layerwise
methods against their ERM baselines with 95% intervals, and the layer reading.

Two intervals are given for every number (docs/REPRODUCTION.md, the shift table):

* **seed-level** (the headline): a t interval over the seeds' means, t_{0.975, S−1} · sd / √S. It contains the
  training's variability (each seed is a separately trained model) as well as the prompts';
* **prompt-level**: 1.96 · the standard error of the mean over every test prompt of every seed, treating the
  trained models as fixed: how precisely the prompts measure these models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from unrolled.experiments.aggregate import finite_or_none, header
from unrolled.experiments.icl.config import ICLExperiment
from unrolled.experiments.icl.units import BASELINES

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
"""Student's t quantile t_{0.975, df} (larger df: 1.96 + 2.5/df, within 0.01 of the exact value)."""


def t975(df: int) -> float:
    """t_{0.975, df} for a two-sided 95% interval."""
    if df < 1:
        return math.nan
    return T975.get(df, 1.96 + 2.5 / df)


def seed_interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean over seeds and the half-width of its 95% t interval (NaN with one seed)."""
    t = torch.tensor([v for v in values if v is not None and math.isfinite(v)], dtype=torch.float64)
    if len(t) == 0:
        return {"mean": None, "ci": None, "seeds": list(values)}
    half = t975(len(t) - 1) * float(t.std()) / math.sqrt(len(t)) if len(t) > 1 else math.nan
    return {"mean": float(t.mean()), "ci": half if math.isfinite(half) else None, "seeds": list(values)}


def fmt_interval(entry: dict[str, Any], digits: int = 3) -> str:
    """A :func:`seed_interval` as text: ``mean ± half-width`` (``–`` without a mean, no ± with one seed)."""
    if entry["mean"] is None:
        return "–"
    ci = entry["ci"]
    return f"{entry['mean']:.{digits}f}" + (
        f" ± {ci:.{digits}f}" if ci is not None and math.isfinite(ci) else ""
    )


def prompt_interval(means: Sequence[float], sds: Sequence[float], n: Sequence[int]) -> float | None:
    """1.96 × the standard error of the mean of every prompt of every seed (seeds weigh equally)."""
    if not means:
        return None
    var = sum((sd**2) / k for sd, k in zip(sds, n, strict=True)) / len(means) ** 2
    return 1.96 * math.sqrt(var)


def _stack(rows: Sequence[Any]) -> torch.Tensor:
    return torch.tensor([[math.nan if v is None else v for v in r] for r in rows], dtype=torch.float64)


def _curve_mean(curves: Sequence[list[list[float | None]]]) -> list[list[float | None]]:
    """Mean over seeds of ``[S][N]`` curves."""
    t = torch.stack([_stack(c) for c in curves])
    return finite_or_none(t.nanmean(dim=0))


def _entry(stats: Sequence[dict[str, Any]], state: int, what: str) -> dict[str, Any]:
    """The seed interval and the prompt interval of one state's ``last`` or ``all`` error."""
    means = [s[what]["mean"][state] for s in stats]
    out = seed_interval(means)
    out["prompt_ci"] = prompt_interval(
        means, [s[what]["sd"][state] for s in stats], [s[what]["n"] for s in stats]
    )
    return out


def aggregate(cfg: ICLExperiment, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Curves, headline errors, paired gaps and the layer reading, from every unit's record."""
    by: dict[str, dict[int, dict[str, Any]]] = {}
    for r in records:
        by.setdefault(r["method"], {})[r["seed"]] = r
    splits = cfg.splits()
    out = header(cfg, f"in-context regression, d = {cfg.task.d}, {cfg.task.points} pairs")
    out.update(
        kind="icl",
        d=cfg.task.d,
        points=cfg.task.points,
        gd_lr=cfg.baselines.gd_lr,
        seeds=list(cfg.seeds),
        splits={name: {"points": points, **_split_size(name)} for name, (_, points) in splits.items()},
        methods={
            m.name: {
                "label": m.label or m.name,
                "kind": m.kind,
                "layers": m.depth,
                "objective": "constrained" if m.constraints else "early_exit" if m.early_exit else "erm",
                "baseline": m.baseline,
            }
            for m in cfg.methods
        },
    )
    learners: dict[str, Any] = {}
    for m in cfg.methods:
        recs = [by.get(m.name, {}).get(s) for s in cfg.seeds]
        recs = [r for r in recs if r is not None]
        if not recs:
            continue
        entry: dict[str, Any] = {"seeds_done": [r["seed"] for r in recs], "splits": {}}
        for split in splits:
            stats = [r["splits"][split] for r in recs]
            L = len(stats[0]["curve"]) - 1
            entry["splits"][split] = {
                "curve": _curve_mean([s["curve"] for s in stats])[-1],
                "layers_curve": _curve_mean([s["curve"] for s in stats]),
                "last": _entry(stats, L, "last"),
                "all": _entry(stats, L, "all"),
                "layers_last": [_entry(stats, l, "last")["mean"] for l in range(L + 1)],
                "layers_all": [_entry(stats, l, "all")["mean"] for l in range(L + 1)],
            }
        if all("learning_curve" in r for r in recs):
            entry["learning_curve"] = _learning_curve([r["learning_curve"] for r in recs])
        entry["train_seconds"] = [r.get("train_seconds") for r in recs]
        if any("multipliers" in r for r in recs):
            entry["multipliers"] = [r.get("multipliers") for r in recs]
        if any("objective" in r for r in recs):
            entry["objective"] = [r.get("objective") for r in recs]
        if all("reading" in r for r in recs):
            entry["reading"] = _reading([r["reading"] for r in recs])
        learners[m.name] = entry
    out["learners"] = learners
    out["baselines"] = _baselines([by[BASELINES][s] for s in cfg.seeds if s in by.get(BASELINES, {})], splits)
    out["gaps"] = _gaps(cfg, by, splits)
    out["bar"] = _bar(cfg, out)
    return out


def _split_size(name: str) -> dict[str, Any]:
    if not name.startswith("shift:"):
        return {"family": None, "size": None}
    family, size = name[len("shift:") :].split("=")
    return {"family": family, "size": float(size)}


def _baselines(recs: Sequence[dict[str, Any]], splits: dict[str, Any]) -> dict[str, Any]:
    if not recs:
        return {}
    out: dict[str, Any] = {"tuned": [r["tuned"] for r in recs], "seeds_done": [r["seed"] for r in recs]}
    for split in splits:
        out[split] = {}
        for name in recs[0]["splits"][split]:
            stats = [r["splits"][split][name] for r in recs]
            S = len(stats[0]["curve"])
            out[split][name] = {
                "curves": _curve_mean([s["curve"] for s in stats]),
                "last": [_entry(stats, k, "last")["mean"] for k in range(S)],
                "all": [_entry(stats, k, "all")["mean"] for k in range(S)],
                "final": {"last": _entry(stats, S - 1, "last"), "all": _entry(stats, S - 1, "all")},
            }
    return out


def _gaps(
    cfg: ICLExperiment, by: dict[str, dict[int, dict[str, Any]]], splits: dict[str, Any]
) -> dict[str, Any]:
    """Per split, layerwise method − its ERM baseline, paired by seed (the same prompts, data and init)."""
    out: dict[str, Any] = {}
    for m in cfg.methods:
        if m.baseline is None:
            continue
        seeds = [s for s in cfg.seeds if s in by.get(m.name, {}) and s in by.get(m.baseline, {})]
        if not seeds:
            continue
        entry: dict[str, Any] = {"baseline": m.baseline, "seeds": seeds, "splits": {}}
        for split in splits:
            row = {}
            for what in ("last", "all"):
                diffs, sds, ns = [], [], []
                for s in seeds:
                    a, b = by[m.name][s]["splits"][split], by[m.baseline][s]["splits"][split]
                    diffs.append(a[what]["mean"][-1] - b[what]["mean"][-1])
                    sds.append(math.hypot(a[what]["sd"][-1], b[what]["sd"][-1]))
                    ns.append(a[what]["n"])
                row[what] = seed_interval(diffs)
                # unpaired: an upper bound on the paired interval when the twins' errors correlate positively
                row[what]["prompt_ci"] = prompt_interval(diffs, sds, ns)
            entry["splits"][split] = row
        out[m.name] = entry
    return out


def _reading(readings: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"probe_curve": _curve_mean([r["probe_errors"]["curve"] for r in readings])}
    out["probe_last"] = finite_or_none(
        torch.tensor([r["probe_errors"]["last"]["mean"] for r in readings], dtype=torch.float64).nanmean(0)
    )
    for reading in ("readout", "probe"):
        out[reading] = {}
        for name, first in readings[0][reading].items():
            sims = torch.stack([_stack(r[reading][name]["similarity"]) for r in readings])
            mean = sims.nanmean(dim=0)
            counts = first["counts"]
            out[reading][name] = {
                "counts": counts,
                "similarity": finite_or_none(mean),
                "best": [counts[j] for j in mean.argmax(dim=1).tolist()],
                "best_per_seed": [r[reading][name]["best"] for r in readings],
            }
    return out


def _bar(cfg: ICLExperiment, results: dict[str, Any]) -> dict[str, Any]:
    """The issue's bar for every ERM learner: its error minus least squares' at every n ≥ 2d on ``test``."""
    base = results["baselines"].get("test", {}).get("least_squares")
    if base is None:
        return {}
    ls = base["curves"][0]
    out = {}
    for name, entry in results["learners"].items():
        if results["methods"][name]["objective"] != "erm":
            continue
        curve = entry["splits"]["test"]["curve"]
        ns = [n for n in range(len(curve)) if n >= 2 * cfg.task.d]
        excess = [curve[n] - ls[n] for n in ns if curve[n] is not None and ls[n] is not None]
        out[name] = {
            "n": ns,
            "max_excess": max(excess) if excess else None,
            "met": bool(excess) and max(excess) <= 0.05,
        }
    return out


def _learning_curve(curves: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of the held-out curves at the steps every seed logged: the error at every prompt length
    ``curve [T][N]`` and at the last pair ``last [T]`` (with its spread over seeds, ``last_sd``)."""
    steps = sorted(set.intersection(*(set(c["steps"]) for c in curves)))
    if not steps:
        return {"steps": [], "curve": [], "last": [], "last_sd": []}
    t = torch.stack([_stack([c["curve"][c["steps"].index(s)] for s in steps]) for c in curves])  # [S, T, N]
    last = t[..., -1]
    sd = last.std(dim=0) if len(curves) > 1 else torch.zeros_like(last[0])
    return {
        "steps": steps,
        "curve": finite_or_none(t.nanmean(dim=0)),
        "last": finite_or_none(last.nanmean(dim=0)),
        "last_sd": finite_or_none(sd),
    }
