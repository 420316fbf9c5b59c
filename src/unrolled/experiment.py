"""Experiments: a validated config becomes a run folder.

A run folder holds ``config.yaml`` (resolved), ``metrics.jsonl`` (training losses), ``checkpoints/``,
``units/`` (one JSON per finished unit of work), ``results.json``, ``report.md`` and the plots. A *unit* is one
learned method trained at one depth for one seed, or one classical method evaluated for one seed at every
depth. Finished units are skipped on ``resume``; an interrupted unit continues from its checkpoint, so an
interrupted and resumed run gives the same results as an uninterrupted one.

Every seed has its own task (its own rotation U), its own held-out test prompts (shared by all methods),
validation prompts (for tuning classical step sizes), and training stream.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import multiprocessing as mp
import os
import queue
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from unrolled.config import (
    ClassicalMethod,
    DenoiserMethod,
    ExperimentConfig,
    LearnedMethod,
    MethodConfig,
    MixtureMethod,
    RegressionConfig,
    TrainConfig,
    dump_config,
)
from unrolled.constrained import Objective
from unrolled.constrained.objective import objective_from_config
from unrolled.denoising import DenoisingData, aggregate_denoising, run_denoising_unit
from unrolled.models import MixtureOfExperts, build_model
from unrolled.seeding import generator
from unrolled.solvers import (
    ConjugateGradient,
    FirstOrderSolver,
    GradientDescent,
    HeavyBall,
    Nesterov,
    default_lr_grid,
    tune,
)
from unrolled.solvers.tuning import DEFAULT_MOMENTA
from unrolled.tasks.regression import RegressionBatch, RegressionTask
from unrolled.train.checkpoint import atomic_write_json, atomic_write_text, load_checkpoint, read_json
from unrolled.train.loop import NonFiniteLossError, RegressionStream, rank_and_world, train
from unrolled.trajectory import squared_error

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked (exists without --resume, or holds another config)."""


@dataclass(frozen=True)
class Unit:
    """One piece of work: a learned method at one depth, or a classical method at all depths, for one seed.

    ``variance`` is set for the experts of a mixture: the expert is trained on the task scaled to it.
    Experts run in phase 0, before the mixtures that use them (phase 1 holds everything else).
    """

    method: MethodConfig
    seed: int
    depth: int | None
    variance: float | None = None

    @property
    def key(self) -> str:
        tail = f"seed{self.seed}" if self.depth is None else f"seed{self.seed}_L{self.depth}"
        return f"{self.method.name}/{tail}"

    @property
    def learned(self) -> bool:
        return not isinstance(self.method, ClassicalMethod)

    @property
    def phase(self) -> int:
        return 0 if self.variance is not None else 1

    def cost(self, cfg: ExperimentConfig) -> float:
        """A rough relative cost (steps × layers × prompts), to start long units first in a worker pool."""
        m = self.method
        if isinstance(m, MixtureMethod):
            free = 3.0 if m.B == "free" else 1.0
            per_step = (self.depth or 1) * len(m.expert_variances) * m.adapt_size * free
            return self.steps(cfg) * per_step
        if isinstance(m, LearnedMethod):
            free = 3.0 if m.B == "free" else 1.0
            return cfg.train.steps * (self.depth or 1) * (m.batch_size or cfg.train.batch_size) * free
        if isinstance(m, DenoiserMethod):
            return float(cfg.train.steps * m.depth)
        return 0.0

    def steps(self, cfg: ExperimentConfig) -> int:
        """Optimizer steps this unit takes (for progress bars)."""
        if isinstance(self.method, MixtureMethod):
            return self.method.adapt_steps * (1 + len(cfg.eval.shifts))
        if not self.learned:
            return 0
        return cfg.train.steps


def expert_units(cfg: ExperimentConfig, seed: int) -> list[Unit]:
    """The experts the mixtures of ``cfg`` need for one seed (shared by mixtures with the same expert)."""
    seen: dict[str, Unit] = {}
    for m in cfg.methods:
        if isinstance(m, MixtureMethod):
            for v in m.expert_variances:
                for L in cfg.depths:
                    unit = Unit(mixture_expert(m, v), seed, L, v)
                    seen.setdefault(unit.key, unit)
    return list(seen.values())


def mixture_expert(m: MixtureMethod, variance: float) -> LearnedMethod:
    """The expert of ``m`` for ``variance``, named by its architecture so mixtures can share it."""
    spec = f"{m.expert_kind}_A{m.A}_B{m.B}_h{m.heads}_std{m.init_std:g}_g{m.gamma_init:g}"
    return dataclasses.replace(m.expert(variance), name=f"expert_{spec}_var{variance:g}")


def plan(cfg: ExperimentConfig) -> list[Unit]:
    """Every unit of an experiment: the mixtures' experts first, then the rest, seed-major."""
    units = [u for seed in cfg.seeds for u in expert_units(cfg, seed)]
    for seed in cfg.seeds:
        for m in cfg.methods:
            if isinstance(m, DenoiserMethod):
                units.append(Unit(m, seed, None))
            elif isinstance(m, LearnedMethod | MixtureMethod):
                units.extend(Unit(m, seed, L) for L in cfg.depths)
            else:
                units.append(Unit(m, seed, None))
    return units


def build_classical(
    method: ClassicalMethod, task: RegressionTask, lr: float | None, momentum: float | None
) -> FirstOrderSolver:
    """The classical solver a config entry describes, with the given step size and momentum."""
    if method.kind == "cg":
        return ConjugateGradient()
    assert lr is not None
    if method.kind == "gd":
        P = None
        if method.preconditioner == "inverse_covariance":
            P = torch.linalg.inv(task.input_second_moment())
        gd = GradientDescent(lr, preconditioner=P, objective=method.objective)
        return gd
    assert momentum is not None
    cls = HeavyBall if method.kind == "momentum" else Nesterov
    return cls(lr, momentum, objective=method.objective)


def regression_objective(
    method: LearnedMethod, depth: int, data: _SeedData, dtype: torch.dtype, device: str
) -> tuple[Objective, Callable[[torch.nn.Module], torch.Tensor] | None]:
    """ERM, or the constrained objective of ``method.constraints`` (with its held-out slack function)."""

    def heldout(size: int) -> tuple[RegressionBatch, torch.Tensor]:
        batch = data.task.sample(size, generator(data.seed, "constraint"), dtype, device)
        return batch, batch.y_query

    return objective_from_config(method.constraints, depth, squared_error, heldout)


class _SeedData:
    """The prompts of one seed: held-out test, validation, and (fixed_batch) the training batch."""

    def __init__(self, cfg: ExperimentConfig, seed: int, dtype: torch.dtype, device: str) -> None:
        self.seed = seed
        self.task = RegressionTask(cfg.task, seed)
        self.test = self.task.sample(cfg.eval.batch_size, generator(seed, "test"), dtype, device)
        self.validation = self.task.sample(
            cfg.eval.validation_size, generator(seed, "validation"), dtype, device
        )
        self.train_batch: RegressionBatch | None = None
        if cfg.train.protocol == "fixed_batch":
            # the same draw the training loop makes first from this seed's training stream
            self.train_batch = self.task.sample(cfg.train.batch_size, generator(seed, "train"), dtype, device)
        # out-of-distribution test prompts: the same rotation U (it depends on the seed only)
        self.shift_tasks = {name: RegressionTask(task, seed) for name, task in cfg.shifted_tasks().items()}
        self.shifts = {
            name: task.sample(cfg.eval.batch_size, generator(seed, "test", "shift", name), dtype, device)
            for name, task in self.shift_tasks.items()
        }

    def eval_splits(self) -> dict[str, RegressionBatch]:
        """Held-out batches every method is scored on: ``test`` and ``shift:<name>`` for each shift."""
        return {"test": self.test, **{f"shift:{k}": v for k, v in self.shifts.items()}}


def seed_data(cfg: ExperimentConfig, seed: int, dtype: torch.dtype, device: str) -> Any:
    """The per-seed data of the experiment's task."""
    if cfg.task.kind == "video":
        return DenoisingData(cfg, seed)
    return _SeedData(cfg, seed, dtype, device)


def _losses(values: torch.Tensor) -> list[float | None]:
    """Plain floats for JSON; a non-finite loss (a method that diverged on some prompts) becomes None."""
    return [float(v) if math.isfinite(float(v)) else None for v in values.detach().cpu()]


class ExperimentRunner:
    """Runs (or resumes) an experiment into a run folder. See the module docstring."""

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
            if old != text:
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
        for unit in plan(self.cfg):
            if unit.learned and not self.unit_path(unit).exists():
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
            depth = rec.get("depth")
            key = f"{rec.get('method')}/seed{rec.get('seed')}" + ("" if depth is None else f"_L{depth}")
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
        _on_rank0_then_share(self._prepare)
        units = plan(self.cfg)
        todo = [u for u in units if not self.unit_path(u).exists()]
        if len(todo) < len(units) and self.rank == 0:
            self.log(f"resuming {self.out}: {len(units) - len(todo)} of {len(units)} units already done")
        total_steps = sum(u.steps(self.cfg) for u in todo)
        bar = tqdm(
            total=total_steps,
            disable=not self.progress or total_steps == 0 or self.rank != 0,
            desc=self.cfg.name,
            unit="step",
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 30.0,
        )
        try:
            if self.workers > 1 and len(todo) > 1:
                for phase in (0, 1):  # the mixtures' experts before the mixtures
                    units_of_phase = [u for u in todo if u.phase == phase]
                    # longest first, so no worker is left with one long unit at the end
                    units_of_phase.sort(key=lambda u: -u.cost(self.cfg))
                    self._run_parallel(units_of_phase, bar)
            else:
                data: dict[int, _SeedData] = {}
                for unit in todo:
                    if unit.seed not in data:
                        data = {unit.seed: seed_data(self.cfg, unit.seed, self.dtype, self.device)}
                    bar.set_postfix_str(unit.key, refresh=False)
                    self.run_unit(unit, data[unit.seed], bar.update)
                    _barrier()
        finally:
            bar.close()
        records = [read_json(self.unit_path(u)) for u in units]
        for u, rec in zip(units, records, strict=True):
            if u.variance is not None:
                rec["expert_variance"] = u.variance
        if self.cfg.task.kind == "video":
            results = aggregate_denoising(self.cfg, records)
        else:
            results = aggregate(self.cfg, records)
        results["timing"] = {
            "this_invocation_seconds": time.perf_counter() - t0,
            "compute_seconds": sum(read_json(self.unit_path(u))["seconds"] for u in units),
            "workers": self.workers,
        }
        results["distributed_world_size"] = self.world
        if self.rank == 0:
            atomic_write_json(self.out / "results.json", results)
            from unrolled.report import write_report

            write_report(self.out)
        _barrier()
        return results

    def run_unit(self, unit: Unit, data: _SeedData, advance: Callable[[int], object]) -> None:
        """Run one unit and write its record to ``units/`` atomically (rank 0)."""
        if isinstance(unit.method, DenoiserMethod):
            record = run_denoising_unit(self, unit, data, advance)
        elif isinstance(unit.method, MixtureMethod):
            record = self._run_mixture(unit, data, advance)
        elif unit.learned:
            record = self._run_learned(unit, data, advance)
        else:
            record = self._run_classical(unit, data)
        if self.rank == 0:
            atomic_write_json(self.unit_path(unit), record)

    def _run_parallel(self, todo: list[Unit], bar: tqdm) -> None:
        """Units in ``workers`` processes (one thread each); results do not depend on the worker count."""
        if not todo:
            return
        ctx = mp.get_context("spawn")
        progress = ctx.Queue()
        with ctx.Pool(self.workers, initializer=_worker_init, initargs=(progress,)) as pool:
            pending = [pool.apply_async(_worker_run, (self.cfg, str(self.out), unit)) for unit in todo]
            while pending:
                try:
                    bar.update(progress.get(timeout=0.2))
                except queue.Empty:
                    pass
                for job in [j for j in pending if j.ready()]:
                    pending.remove(job)
                    bar.set_postfix_str(job.get(), refresh=False)  # re-raises a worker's error here
            while not progress.empty():
                bar.update(progress.get())

    def _run_learned(self, unit: Unit, data: _SeedData, advance: Callable[[int], object]) -> dict[str, Any]:
        assert isinstance(unit.method, LearnedMethod) and unit.depth is not None
        cfg = self.cfg
        t0 = time.perf_counter()
        model = build_model(
            unit.method,
            cfg.task.d,
            cfg.task.n,
            unit.depth,
            generator(unit.seed, unit.method.name, unit.depth, "init"),
        )
        metrics_path = self.out / "metrics.jsonl"

        def on_log(rec: dict[str, Any]) -> None:
            line = {"method": unit.method.name, "seed": unit.seed, "depth": unit.depth, **rec}
            with metrics_path.open("a") as f:  # one write per line: safe to share between workers
                f.write(json.dumps(line) + "\n")

        def on_step(step: int) -> None:
            advance(1)
            if self.on_step is not None:
                self.on_step(unit, step)

        ckpt = self.checkpoint_path(unit)
        if ckpt.exists():
            advance(int(load_checkpoint(ckpt)["step"]))
        train_cfg = cfg.train
        if unit.method.batch_size is not None:
            train_cfg = dataclasses.replace(train_cfg, batch_size=unit.method.batch_size)
        if unit.variance is None:
            task, train_gen = data.task, generator(unit.seed, "train")
        else:  # a mixture's expert: the task scaled to the expert's variance, its own prompts
            assert isinstance(cfg.task, RegressionConfig)
            scaled = dataclasses.replace(cfg.task, variance=unit.variance)
            task, train_gen = RegressionTask(scaled, unit.seed), generator(unit.seed, "train", unit.variance)
        stream = RegressionStream(task, train_cfg, train_gen, self.dtype, self.device)
        objective, heldout = regression_objective(unit.method, unit.depth, data, self.dtype, self.device)
        result = train(
            model,
            stream,
            train_cfg,
            objective=objective,
            dtype=self.dtype,
            device=self.device,
            checkpoint=ckpt,
            heldout_slack=heldout,
            on_log=on_log,
            on_step=on_step,
            where=f"method {unit.method.name}, seed {unit.seed}, depth {unit.depth}",
        )
        record: dict[str, Any] = {
            "method": unit.method.name,
            "seed": unit.seed,
            "depth": unit.depth,
            "final_train_loss": result.final_loss if math.isfinite(result.final_loss) else None,
            "steps": result.steps,
        }
        if objective.constrained:
            record["multipliers"] = [float(v) for v in objective.multipliers.value]
        with torch.no_grad():
            record["layerwise"] = {
                split: {str(unit.depth): _losses(model(batch).layerwise_losses(batch.y_query))}
                for split, batch in data.eval_splits().items()
            }
            if train_cfg.protocol == "fixed_batch":
                tb = stream.batch
                assert tb is not None
                record["layerwise"]["train"] = {
                    str(unit.depth): _losses(model(tb).layerwise_losses(tb.y_query))
                }
        record["seconds"] = time.perf_counter() - t0
        return record

    def _load_expert(self, method: MixtureMethod, variance: float, seed: int, depth: int) -> torch.nn.Module:
        """A trained expert of ``method`` (phase 0 wrote its final checkpoint)."""
        unit = Unit(mixture_expert(method, variance), seed, depth, variance)
        ckpt = self.checkpoint_path(unit)
        if not ckpt.exists():
            raise RunFolderError(f"{ckpt}: the expert of {method.name} for σ² = {variance:g} was not trained")
        assert isinstance(self.cfg.task, RegressionConfig)
        model = build_model(unit.method, self.cfg.task.d, self.cfg.task.n, depth, generator(seed, "unused"))
        model.load_state_dict(load_checkpoint(ckpt)["model"])
        return model.to(device=self.device, dtype=self.dtype)

    def _run_mixture(self, unit: Unit, data: _SeedData, advance: Callable[[int], object]) -> dict[str, Any]:
        """Adapt a mixture of trained experts to every evaluated distribution; score it in and out of sample.

        For the task itself (``base``) and every shift: fresh copies of the frozen experts, gates fit on one
        adaptation batch of that distribution, then layerwise losses on that batch (``adapt:<name>``) and on
        the distribution's held-out prompts (``test`` / ``shift:<name>``).
        """
        m = unit.method
        assert isinstance(m, MixtureMethod) and unit.depth is not None
        t0 = time.perf_counter()
        adapt_cfg = TrainConfig(
            protocol="fixed_batch",
            steps=m.adapt_steps,
            batch_size=m.adapt_size,
            optimizer="adam",
            lr=m.adapt_lr,
            log_every=m.adapt_steps,
            checkpoint_every=m.adapt_steps,
        )
        tasks = {"base": data.task, **data.shift_tasks}

        def on_step(step: int) -> None:
            advance(1)
            if self.on_step is not None:
                self.on_step(unit, step)

        tests = {"base": ("test", data.test), **{k: (f"shift:{k}", v) for k, v in data.shifts.items()}}
        record: dict[str, Any] = {"method": m.name, "seed": unit.seed, "depth": unit.depth}
        layerwise: dict[str, dict[str, list[float]]] = {}
        adapted: dict[str, Any] = {}
        trained = [self._load_expert(m, v, unit.seed, unit.depth) for v in m.expert_variances]
        for name, task in tasks.items():
            experts = copy.deepcopy(trained)  # every distribution adapts its own copy (Γ may change)
            mixture = MixtureOfExperts(experts, gate=m.gate, gate_init=m.gate_init)
            trainable = mixture.set_adaptable(m.adapt)
            stream = RegressionStream(
                task, adapt_cfg, generator(unit.seed, "adapt", name), self.dtype, self.device
            )
            split, test = tests[name]
            try:
                result = train(
                    mixture,
                    stream,
                    adapt_cfg,
                    dtype=self.dtype,
                    device=self.device,
                    on_step=on_step,
                    where=f"adapting {m.name} to {name}, seed {unit.seed}, depth {unit.depth}",
                )
            except NonFiniteLossError as exc:  # the experts blow up on this distribution: record, go on
                none = [None] * (unit.depth + 1)
                layerwise[split] = {str(unit.depth): none}
                layerwise[f"adapt:{name}"] = {str(unit.depth): none}
                adapted[name] = {"diverged": str(exc), "trainable": trainable}
                continue
            adapt_batch = stream.batch
            assert adapt_batch is not None
            with torch.no_grad():
                layerwise[split] = {str(unit.depth): _losses(mixture(test).layerwise_losses(test.y_query))}
                layerwise[f"adapt:{name}"] = {
                    str(unit.depth): _losses(mixture(adapt_batch).layerwise_losses(adapt_batch.y_query))
                }
            adapted[name] = {
                "gates": _losses(mixture.gates()),
                "final_adapt_loss": result.final_loss if math.isfinite(result.final_loss) else None,
                "trainable": trainable,
            }
        record["layerwise"] = layerwise
        record["adapted"] = adapted
        record["seconds"] = time.perf_counter() - t0
        return record

    def _run_classical(self, unit: Unit, data: _SeedData) -> dict[str, Any]:
        m = unit.method
        assert isinstance(m, ClassicalMethod)
        cfg = self.cfg
        t0 = time.perf_counter()
        splits = data.eval_splits()
        if data.train_batch is not None:
            splits["train"] = data.train_batch
        record: dict[str, Any] = {"method": m.name, "seed": unit.seed, "depth": None}
        settings: dict[int, tuple[float | None, float | None]]
        if m.tune:
            lr_grid = m.lr_grid or default_lr_grid(data.validation, m.objective)
            if m.kind in ("momentum", "nesterov"):
                mom_grid = (m.momentum,) if m.momentum is not None else (m.momentum_grid or DEFAULT_MOMENTA)
            else:
                mom_grid = None
            tuned = tune(
                lambda lr, mom: build_classical(m, data.task, lr, mom),
                data.validation,
                cfg.depths,
                lr_grid,
                mom_grid,
            )
            settings = {L: (t.lr, t.momentum) for L, t in tuned.items()}
            record["tuned"] = {
                str(L): {"lr": t.lr, "momentum": t.momentum, "validation_loss": t.validation_loss}
                for L, t in tuned.items()
            }
        else:
            settings = dict.fromkeys(cfg.depths, (m.lr, m.momentum))
        layerwise: dict[str, dict[str, list[float]]] = {name: {} for name in splits}
        with torch.no_grad():
            for name, batch in splits.items():
                if not m.tune:  # one trajectory serves every depth
                    traj = build_classical(m, data.task, m.lr, m.momentum)(batch, cfg.max_depth)
                    losses = _losses(traj.layerwise_losses(batch.y_query))
                    for L in cfg.depths:
                        layerwise[name][str(L)] = losses[: L + 1]
                    continue
                for L in cfg.depths:
                    lr, mom = settings[L]
                    traj = build_classical(m, data.task, lr, mom)(batch, L)
                    layerwise[name][str(L)] = _losses(traj.layerwise_losses(batch.y_query))
        record["layerwise"] = layerwise
        record["seconds"] = time.perf_counter() - t0
        return record


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
    """Run ``cfg`` into ``out_dir`` (see :class:`ExperimentRunner`); returns the aggregated results."""
    runner = ExperimentRunner(
        cfg, out_dir, resume=resume, progress=progress, on_step=on_step, log=log, workers=workers
    )
    return runner.run()


_PROGRESS: Any = None


def _worker_init(progress: Any) -> None:
    global _PROGRESS
    _PROGRESS = progress
    torch.set_num_threads(1)


def _worker_run(cfg: ExperimentConfig, out: str, unit: Unit) -> str:
    runner = ExperimentRunner(cfg, out, resume=True, progress=False, log=lambda _: None)
    pending = [0]

    def advance(k: int) -> None:
        pending[0] += k
        if pending[0] >= 50:
            _PROGRESS.put(pending[0])
            pending[0] = 0

    runner.run_unit(unit, seed_data(cfg, unit.seed, runner.dtype, runner.device), advance)
    if pending[0]:
        _PROGRESS.put(pending[0])
    return unit.key


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _on_rank0_then_share(fn: Callable[[], None]) -> None:
    """Run ``fn`` on rank 0 only; if it fails, every rank raises the same error (nobody hangs)."""
    rank, world = rank_and_world()
    if world == 1:
        fn()
        return
    message: list[str | None] = [None]
    if rank == 0:
        try:
            fn()
        except (RunFolderError, OSError) as exc:
            message[0] = str(exc)
    dist.broadcast_object_list(message, src=0)
    if message[0] is not None:
        raise RunFolderError(message[0])


def _safe_log(x: float) -> float:
    """log of a loss; an exact zero (a solved prompt batch) maps to log(1e-300) so JSON stays finite."""
    return math.log(max(x, 1e-300))


def aggregate(cfg: ExperimentConfig, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method and depth: log loss per seed, its mean and std over seeds, and mean layerwise curves.

    The headline split is ``test`` (fresh held-out prompts) unless ``eval.in_sample`` is set, when it is
    ``train`` (the fixed training batch) and the results say so. Every further split a method was scored
    on is aggregated the same way: ``train`` (fixed_batch), ``shift:<name>`` (held-out prompts of a shifted
    distribution) and, for mixtures, ``adapt:<name>`` (the batch the gates were fit on). A mixture's
    experts appear as methods of their own (``expert_variance`` set).
    """
    headline = "train" if cfg.eval.in_sample else "test"
    zero = RegressionTask(cfg.task, cfg.seeds[0]).zero_predictor_loss()
    shift_tasks = cfg.shifted_tasks()
    out: dict[str, Any] = {
        "name": cfg.name,
        "description": cfg.description,
        "task": "regression",
        "protocol": cfg.train.protocol,
        "headline_split": headline,
        "evaluation": "in-sample (the training batch)" if headline == "train" else "held-out prompts",
        "depths": list(cfg.depths),
        "seeds": list(cfg.seeds),
        "zero_predictor_log_loss": math.log(zero),
        "shifts": {
            name: {
                "zero_predictor_log_loss": math.log(RegressionTask(task, cfg.seeds[0]).zero_predictor_loss()),
                "variance": task.variance,
                "covariance": task.covariance,
            }
            for name, task in shift_tasks.items()
        },
        "methods": {},
        "published": {k: list(v) for k, v in (cfg.published or {}).items()},
        "published_source": cfg.published_source,
    }
    experts: dict[str, Any] = {}
    for rec in records:
        if "expert_variance" in rec:
            experts.setdefault(rec["method"], rec["expert_variance"])
    entries: list[tuple[str, str, str, bool, float | None]] = [
        (m.name, m.kind, m.label or m.name, not isinstance(m, ClassicalMethod), None) for m in cfg.methods
    ]
    entries += [(name, "expert", f"expert (σ² = {v:g})", True, v) for name, v in experts.items()]
    for name, kind, label, learned, variance in entries:
        entry: dict[str, Any] = {"kind": kind, "label": label, "learned": learned}
        if variance is not None:
            entry["expert_variance"] = variance
        recs = [r for r in records if r["method"] == name]
        splits = list(dict.fromkeys(k for r in recs for k in r["layerwise"]))
        for split in splits:
            per_seed = []  # [seed][depth] log loss at the last layer (inf: diverged)
            curves = []  # [seed][depth] log-loss curve over layers 0..L
            for seed in cfg.seeds:
                row, seed_curves = [], []
                for L in cfg.depths:
                    rec = next(r for r in recs if r["seed"] == seed and r["depth"] in (None, L))
                    curve = [math.inf if v is None else _safe_log(v) for v in rec["layerwise"][split][str(L)]]
                    row.append(curve[-1])
                    seed_curves.append(curve)
                per_seed.append(row)
                curves.append(seed_curves)
            mean_curves = {
                str(L): _finite_or_none(
                    _finite_mean(torch.tensor([c[i] for c in curves], dtype=torch.float64))
                )
                for i, L in enumerate(cfg.depths)
            }
            t = torch.tensor(per_seed, dtype=torch.float64)
            diverged = (~t.isfinite()).sum(0)
            entry[split] = {
                "log_loss_mean": _finite_or_none(_finite_mean(t)),
                "log_loss_std": _finite_or_none(_finite_std(t)),
                "log_loss_per_seed": [_finite_or_none(row) for row in t],
                "layerwise_log_loss_mean": mean_curves,
                "diverged_seeds": [int(k) for k in diverged],
            }
        tuned = {str(r["seed"]): r["tuned"] for r in recs if "tuned" in r}
        if tuned:
            entry["tuned"] = tuned
        adapted = {str(r["seed"]) + f"_L{r['depth']}": r["adapted"] for r in recs if "adapted" in r}
        if adapted:
            entry["adapted"] = adapted
        out["methods"][name] = entry
    return out


def _finite_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over seeds (dim 0) of the finite entries; NaN where every seed diverged."""
    return torch.where(t.isfinite(), t, torch.nan).nanmean(dim=0)


def _finite_std(t: torch.Tensor) -> torch.Tensor:
    """Std over seeds of the finite entries (0 with one finite seed; NaN with none)."""
    ok = t.isfinite()
    k = ok.sum(0)
    mean = _finite_mean(t)
    sq = torch.where(ok, (t - mean) ** 2, 0.0).sum(0)
    std = (sq / (k - 1).clamp_min(1)).sqrt()
    return torch.where(k > 0, std, torch.nan)


def _finite_or_none(t: torch.Tensor) -> list[Any]:
    """A tensor as a (nested) list with non-finite values as None (JSON has no inf or NaN)."""
    if t.dim() == 0:
        v = float(t)
        return v if math.isfinite(v) else None  # type: ignore[return-value]
    return [_finite_or_none(x) for x in t]


def _first_difference(a: str, b: str) -> str:
    for la, lb in zip(a.splitlines(), b.splitlines(), strict=False):
        if la != lb:
            return f"saved '{la.strip()}' vs given '{lb.strip()}'"
    return "different length"
