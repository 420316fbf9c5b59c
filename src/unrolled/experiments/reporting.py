"""``report.md`` of a run folder, and overlays of several runs, from the files alone.

The family that wrote a run (its config's ``task.kind``) supplies the sections and plots; this module reads
the folder, asks the family, and writes the result atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unrolled.experiments.config import task_kind
from unrolled.experiments.family import ExperimentFamily
from unrolled.experiments.registry import get_family
from unrolled.report import PLOT_HINT, load_run, pyplot, write_markdown
from unrolled.train.checkpoint import atomic_write_text
from unrolled.training_plots import training_plots


def family_of(run: dict[str, Any]) -> ExperimentFamily:
    """The family of a loaded run (:func:`~unrolled.report.load_run`), from its saved config."""
    return get_family(task_kind(run.get("config", {})))


def write_report(run_dir: str | Path) -> Path:
    """(Re)build ``report.md`` and the PNG plots of a run folder from its files alone; returns the report."""
    run_dir = Path(run_dir)
    results = load_run(run_dir)
    plt = pyplot()
    parts = family_of(results).report(results, run_dir, plt)
    parts += [f"_{PLOT_HINT}_", ""] if plt is None else training_plots(run_dir, plt)
    return write_markdown(run_dir, results, parts)


def overlay(run_dirs: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Several runs of one family in one plot (``overlay.png``) with their tables (``overlay.md``)."""
    runs = [load_run(d) for d in run_dirs]
    families = [family_of(r) for r in runs]
    kinds = sorted({f.kind for f in families})
    if len(kinds) > 1:
        raise ValueError(
            f"cannot overlay runs of different experiment families in one plot ({', '.join(kinds)})"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    parts = ["# Overlay", "", *families[0].overlay(runs, out / "overlay.png", plt)]
    if plt is None:
        parts += [f"_{PLOT_HINT}_"]
    md = out / "overlay.md"
    atomic_write_text(md, "\n".join(parts) + "\n")
    return md
