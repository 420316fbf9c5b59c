"""The runner: a validated config becomes a run folder, whatever the experiment family.

A run folder holds ``config.yaml`` (resolved), ``metrics.jsonl`` (training logs), ``checkpoints/``, ``units/``
(one JSON record per finished unit of work), ``results.json``, ``report.md`` and the plots. The family (found
by ``task.kind``) says which units there are and how each runs; the runner owns the rest: the folder and the
config check on resume, checkpoint and record paths, skipping finished units, trimming the metrics of an
interrupted one, worker processes, ranks under ``torchrun``, the progress bar, ``results.json`` and the
report. An interrupted unit continues from its checkpoint, so an interrupted and resumed run gives the same
results as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from unrolled.experiments.config import ExperimentConfig, dump_config, parse_config
from unrolled.experiments.family import ExperimentFamily, Unit, UnitContext
from unrolled.experiments.registry import get_family
from unrolled.experiments.workers import RunFolderError, barrier, on_rank0_then_share, run_in_pool
from unrolled.extras import require
from unrolled.train.checkpoint import atomic_write_json, atomic_write_text, load_checkpoint, read_json
from unrolled.train.loop import rank_and_world

DTYPES = {"float32": torch.float32, "float64": torch.float64}

__all__ = ["DTYPES", "RunFolderError", "Runner", "run_experiment"]


class Runner:
    """Runs (or resumes) an experiment into a run folder. See the module docstring.

    Args:
        cfg: the experiment config (any family's).
        out_dir: the run folder.
        resume: continue a run folder that exists (its ``config.yaml`` must equal ``cfg``'s).
        progress: show a progress bar.
        on_step: ``(unit, step)`` after every optimizer step (only with ``workers=1``).
        log: where messages go.
        workers: processes that run units side by side (1: this process).
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        out_dir: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
        on_step: Callable[[Unit, int], None] | None = None,
        log: Callable[[str], None] = print,
        workers: int = 1,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if workers > 1 and on_step is not None:
            raise ValueError("on_step callbacks need workers=1 (they run in the main process)")
        self.rank, self.world = rank_and_world()
        if self.world > 1:
            workers = 1  # under torchrun the processes are the ranks
        self.workers = workers
        self.cfg, self.out, self.resume, self.progress = cfg, Path(out_dir), resume, progress
        self.on_step, self.log = on_step, log
        self.family: ExperimentFamily = get_family(cfg.kind)
        self.dtype = DTYPES[cfg.dtype]
        if cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise RunFolderError(f"device: {cfg.device!r} asked for, but CUDA is not available here")
        self.device = cfg.device
        if self.world > 1 and cfg.device == "cuda":
            self.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"

    # -- run folder ----------------------------------------------------------------------------------------
    def unit_path(self, unit: Unit) -> Path:
        return self.out / "units" / f"{unit.key}.json"

    def checkpoint_path(self, unit: Unit) -> Path:
        return self.out / "checkpoints" / f"{unit.key}.pt"

    def _prepare(self) -> None:
        cfg_file = self.out / "config.yaml"
        text = dump_config(self.cfg)
        if cfg_file.exists():
            if not self.resume:
                raise RunFolderError(
                    f"{self.out} already holds a run; pass --resume to continue it, or choose another --out"
                )
            old = cfg_file.read_text()
            if old != text and not _same_config(old, self.cfg):
                raise RunFolderError(
                    f"{cfg_file} differs from the config given ({_first_difference(old, text)}); "
                    "resume with the same config, or choose another --out"
                )
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cfg_file, text)
        self._trim_metrics()

    def _trim_metrics(self) -> None:
        """Drop metric lines of unfinished units past their last checkpoint (they will be logged again)."""
        path = self.out / "metrics.jsonl"
        if not path.exists():
            return
        keep_upto: dict[str, int] = {}
        for unit in self.family.plan(self.cfg):
            if not self.unit_path(unit).exists():
                ckpt = self.checkpoint_path(unit)
                keep_upto[unit.key] = int(load_checkpoint(ckpt)["step"]) if ckpt.exists() else 0
        lines = []
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            key = Unit(str(rec.get("method")), rec.get("seed", -1), rec.get("depth")).key
            if key in keep_upto and rec.get("step", 0) > keep_upto[key]:
                continue
            lines.append(line)
        atomic_write_text(path, "".join(f"{ln}\n" for ln in lines))

    # -- work ----------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run every unfinished unit, then aggregate ``results.json`` and write the report.

        Under ``torchrun`` every rank runs every unit (DDP inside), rank 0 alone writes files, and the
        ranks wait for each other after each unit.
        """
        t0 = time.perf_counter()
        if any(not self.unit_path(u).exists() for u in self.family.plan(self.cfg)):
            require(self.family.requirements(self.cfg))  # before the run folder is made
        on_rank0_then_share(self._prepare)
        units = self.family.plan(self.cfg)
        todo = [u for u in units if not self.unit_path(u).exists()]
        if len(todo) < len(units) and self.rank == 0:
            self.log(f"resuming {self.out}: {len(units) - len(todo)} of {len(units)} units already done")
        total_steps = sum(u.steps for u in todo)
        bar = tqdm(
            total=total_steps,
            disable=not self.progress or total_steps == 0 or self.rank != 0,
            desc=self.cfg.name,
            unit="step",
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 30.0,
        )
        groups = self.family.ensembles(self.cfg, todo)
        try:
            if self.workers > 1 and len(groups) > 1:
                run_in_pool(self.cfg, str(self.out), groups, self.workers, bar)
            else:
                data: dict[int, Any] = {}
                for group in groups:
                    seeds = sorted({u.seed for u in group})
                    if any(
                        s not in data for s in seeds
                    ):  # the data of the seeds at hand, shared by their units
                        data = {s: data.get(s) or self.family.seed_data(self.cfg, s, self.dtype, self.device)
                                for s in seeds}  # fmt: skip
                    bar.set_postfix_str(group[0].key + (f" (+{len(group) - 1})" if len(group) > 1 else ""),
                                        refresh=False)  # fmt: skip
                    self.run_group(group, data, bar.update)
                    barrier()
        finally:
            bar.close()
        records = [read_json(self.unit_path(u)) for u in units]
        results = self.family.aggregate(self.cfg, records)
        results["timing"] = {
            "this_invocation_seconds": time.perf_counter() - t0,
            "compute_seconds": sum(r["seconds"] for r in records),
            "workers": self.workers,
        }
        results["distributed_world_size"] = self.world
        if self.rank == 0:
            atomic_write_json(self.out / "results.json", results)
            from unrolled.experiments.reporting import write_report

            write_report(self.out)
        barrier()
        return results

    def run_group(self, units: list[Unit], data: dict[int, Any], advance: Callable[[int], object]) -> None:
        """Run a group of :meth:`ExperimentFamily.ensembles` (one unit: :meth:`run_unit`) and write every
        unit's record to ``units/`` atomically (rank 0). ``data``: seed -> its data."""
        if len(units) == 1:
            self.run_unit(units[0], data[units[0].seed], advance)
            return
        ctxs = [self._context(unit, advance) for unit in units]
        t0 = time.perf_counter()
        records = self.family.run_ensemble(units, [data[u.seed] for u in units], ctxs)
        for unit, record in zip(units, records, strict=True):
            record.setdefault("seconds", (time.perf_counter() - t0) / len(units))
            if self.rank == 0:
                atomic_write_json(self.unit_path(unit), record)

    def _context(self, unit: Unit, advance: Callable[[int], object]) -> UnitContext:
        ckpt = self.checkpoint_path(unit)
        if ckpt.exists():  # the steps done before an interruption count as progress
            advance(int(load_checkpoint(ckpt)["step"]))
        return UnitContext(
            cfg=self.cfg,
            unit=unit,
            out=self.out,
            checkpoint=ckpt,
            dtype=self.dtype,
            device=self.device,
            rank=self.rank,
            world=self.world,
            advance=advance,
            callback=self.on_step,
        )

    def run_unit(self, unit: Unit, data: Any, advance: Callable[[int], object]) -> None:
        """Run one unit and write its record to ``units/`` atomically (rank 0)."""
        ctx = self._context(unit, advance)
        t0 = time.perf_counter()
        record = self.family.run_unit(unit, data, ctx)
        record.setdefault("seconds", time.perf_counter() - t0)
        if self.rank == 0:
            atomic_write_json(self.unit_path(unit), record)


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[Unit, int], None] | None = None,
    log: Callable[[str], None] = print,
    workers: int = 1,
) -> dict[str, Any]:
    """Run ``cfg`` into ``out_dir`` (see :class:`Runner`); returns the aggregated results."""
    runner = Runner(cfg, out_dir, resume=resume, progress=progress, on_step=on_step, log=log, workers=workers)
    return runner.run()


def _same_config(old_text: str, cfg: ExperimentConfig) -> bool:
    """Whether a run folder's ``config.yaml`` means ``cfg``, read by today's code: a run written before a
    field was added (and so without it) resumes when the new field is at its default."""
    try:
        old = parse_config(yaml.safe_load(old_text))
    except Exception:  # an old file today's code rejects is a different config; the caller says where
        return False
    return old == cfg


def _first_difference(a: str, b: str) -> str:
    for la, lb in zip(a.splitlines(), b.splitlines(), strict=False):
        if la != lb:
            return f"saved '{la.strip()}' vs given '{lb.strip()}'"
    return "different length"
