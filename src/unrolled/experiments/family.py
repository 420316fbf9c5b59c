"""The protocol every experiment family implements, and the two small types it shares with the runner.

An *experiment family* (in-context regression, video denoising, …) is everything about an experiment that
depends on its task: its config, which units of work it has, how one unit runs, how unit records become
``results.json``, and what its report and CLI summary show. The :class:`~unrolled.experiments.runner.Runner`
does the rest (run folder, resume, checkpoints' paths, worker processes, ranks, progress, ``results.json``,
the report call) and never looks inside a family. docs/ADDING_AN_EXPERIMENT.md walks through writing one.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from unrolled.experiments.config import ExperimentConfig
    from unrolled.extras import Requirement


@dataclass(frozen=True)
class Unit:
    """One resumable piece of work; its record is ``units/<key>.json``, its checkpoint ``checkpoints/<key>.pt``.

    Attributes:
        method: the name of the method it runs (also the ``method`` of its lines in ``metrics.jsonl``).
        seed: the seed it runs for.
        depth: the depth it is trained at, or None when it has none (or covers every depth).
        spec: whatever the family needs to run it (e.g. the method's config); must pickle, for workers.
        phase: units of phase 0 finish before phase 1 starts (e.g. experts before the mixtures using them).
        steps: optimizer steps it takes (sizes the progress bar; 0 if it trains nothing).
        cost: a relative cost, so that a worker pool starts the longest units first.
    """

    method: str
    seed: int
    depth: int | None = None
    spec: Any = None
    phase: int = 1
    steps: int = 0
    cost: float = 0.0

    @property
    def key(self) -> str:
        tail = f"seed{self.seed}" if self.depth is None else f"seed{self.seed}_L{self.depth}"
        return f"{self.method}/{tail}"


@dataclass
class UnitContext:
    """What the runner hands a family for one unit: where to write, what to run on, how to report progress.

    Attributes:
        cfg: the experiment config.
        unit: the unit being run.
        out: the run folder.
        checkpoint: this unit's checkpoint file (training resumes from it when it exists).
        dtype, device: what tensors and models live in (``device`` is this rank's under ``torchrun``).
        rank, world: this process's rank and the number of ranks (1 outside ``torchrun``).
        advance: moves the progress bar by a number of steps.
        callback: the user's ``on_step(unit, step)``, or None.
    """

    cfg: ExperimentConfig
    unit: Unit
    out: Path
    checkpoint: Path
    dtype: torch.dtype
    device: str
    rank: int = 0
    world: int = 1
    advance: Callable[[int], object] = lambda _k: None
    callback: Callable[[Unit, int], None] | None = None
    _metrics: Path = field(init=False)

    def __post_init__(self) -> None:
        self._metrics = self.out / "metrics.jsonl"

    def on_step(self, step: int) -> None:
        """Call after every optimizer step: one step of progress, then the user's callback."""
        self.advance(1)
        if self.callback is not None:
            self.callback(self.unit, step)

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one line to ``metrics.jsonl``, tagged with the unit's method, seed and depth."""
        line = {"method": self.unit.method, "seed": self.unit.seed, "depth": self.unit.depth, **record}
        with self._metrics.open("a") as f:  # one write per line: safe to share between workers
            f.write(json.dumps(line) + "\n")

    @property
    def log_dir(self) -> Path:
        """Where this unit's TensorBoard / W&B files go when ``train.report_to`` asks: ``runs/<unit key>``."""
        return self.out / "runs" / self.unit.key

    def checkpoint_of(self, unit: Unit) -> Path:
        """The checkpoint file of another unit of the same run (e.g. a trained expert)."""
        return self.out / "checkpoints" / f"{unit.key}.pt"


class ExperimentFamily(ABC):
    """An experiment family: subclass it, set ``kind`` and ``config_class``, and register an instance.

    Class attributes:
        kind: the ``task.kind`` the family is registered for (e.g. ``"regression"``).
        config_class: its :class:`~unrolled.experiments.config.ExperimentConfig` subclass.
        title: a few words for what it is, e.g. ``"video denoising"`` (written to ``results.json``).
    """

    kind: ClassVar[str]
    config_class: ClassVar[type[ExperimentConfig]]
    title: ClassVar[str] = ""

    def requirements(self, cfg: Any) -> list[Requirement]:
        """The modules of optional extras that running ``cfg`` needs (:mod:`unrolled.extras`); checked before a
        run starts, and shown by ``unrolled configs``. Default: none (the core install runs it)."""
        return []

    @abstractmethod
    def plan(self, cfg: Any) -> list[Unit]:
        """Every unit of the experiment, in the order a single process runs them (seed-major)."""

    def seed_data(self, cfg: Any, seed: int, dtype: torch.dtype, device: str) -> Any:
        """Data every unit of one seed shares (test sets, splits); built once per seed and process."""
        return None

    @abstractmethod
    def run_unit(self, unit: Unit, data: Any, ctx: UnitContext) -> dict[str, Any]:
        """Run one unit; return its record (plain JSON data; ``seconds`` its compute time)."""

    def ensembles(self, cfg: Any, units: Sequence[Unit]) -> list[list[Unit]]:
        """The units to run together as one batched computation (:meth:`run_ensemble`), as groups; a group
        of one runs with :meth:`run_unit`. Default: every unit alone."""
        return [[u] for u in units]

    def run_ensemble(
        self, units: Sequence[Unit], data: Sequence[Any], ctxs: Sequence[UnitContext]
    ) -> list[dict[str, Any]]:
        """Run a group of :meth:`ensembles` together; one record per unit, each what :meth:`run_unit` would
        have returned (``data[i]`` is unit i's seed data, ``ctxs[i]`` its context)."""
        raise NotImplementedError(f"{type(self).__name__} runs no ensembles")

    @abstractmethod
    def aggregate(self, cfg: Any, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """``results.json`` (before the runner adds timing) from every unit's record, in plan order."""

    @abstractmethod
    def report(self, results: dict[str, Any], run_dir: Path, plt: Any | None) -> list[str]:
        """The Markdown lines of ``report.md``; writes the family's plots into ``run_dir`` when ``plt``
        (matplotlib's pyplot) is given. ``results`` is :func:`unrolled.report.load_run`'s."""

    @abstractmethod
    def summary(self, results: dict[str, Any]) -> str:
        """What ``unrolled run`` prints at the end: a title line and the headline table."""

    def overlay(self, runs: Sequence[dict[str, Any]], path: Path, plt: Any | None) -> list[str]:
        """Markdown lines comparing several runs of this family: each run's summary, then the overlay plot
        (to ``path``, when ``plt`` is given and :meth:`overlay_plot` draws one)."""
        lines: list[str] = []
        for run in runs:
            lines += [f"## {run['name']} ({run['run_dir']})", "", self.summary(run), ""]
        if plt is not None and self.overlay_plot(runs, path, plt):
            lines += [f"![overlay]({path.name})"]
        return lines

    def overlay_plot(self, runs: Sequence[dict[str, Any]], path: Path, plt: Any) -> bool:
        """Draw several runs in one figure at ``path``; False if the family has no such plot."""
        return False
