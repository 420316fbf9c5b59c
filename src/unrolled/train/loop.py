"""The training loop for the library's own solvers (plain PyTorch, optionally DDP under ``torchrun``).

The loop is task-agnostic: a *stream* hands out ``(inputs, target)`` batches and can save and restore its
position; an *objective* (:mod:`unrolled.constrained.objective`) turns the model's trajectory into the scalar
to minimise and takes dual steps for constrained training. Checkpoints hold everything needed to continue
bit for bit: model, optimizer, scheduler, stream state and objective state (multipliers). A non-finite loss
or gradient stops training with an error naming the step; the last checkpoint written before it stays.
``train.compile`` compiles each step's forward pass and loss (:mod:`unrolled.train.compiled`); checkpoints are
the same either way, so a run may resume in the other mode.

Two regression protocols (docs/MODELS.md): ``online`` draws a fresh batch every ``resample_every`` steps;
``fixed_batch`` draws one batch and fits it for every step (what produced the published Memformer figures).

Distributed: when ``torch.distributed`` is initialised (``torchrun``), the model is wrapped in DDP, every rank
draws the same global batch and keeps its own contiguous shard, the constrained objective all-reduces its
slack estimates, and only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn

from unrolled.constrained.multipliers import all_reduce_mean
from unrolled.constrained.objective import Objective
from unrolled.tasks.regression import RegressionBatch, RegressionTask
from unrolled.train.checkpoint import load_checkpoint, save_checkpoint
from unrolled.train.compiled import CompiledLoss, compile_mode
from unrolled.train.config import TrainConfig
from unrolled.train.tracking import Tracker
from unrolled.trajectory import Trajectory, squared_error


class NonFiniteLossError(RuntimeError):
    """The training loss or a gradient became NaN or infinite; the message names the step."""


def final_layer_mse(trajectory: Trajectory, target: Tensor) -> Tensor:
    """ERM objective: the mean squared error of the last layer's readout (a scalar)."""
    return squared_error(trajectory.prediction(), target).mean()


class Stream(Protocol):
    """A source of training batches with a resumable position."""

    def next(self) -> tuple[Any, Tensor]:
        """The next ``(inputs, target)``; ``model(inputs)`` gives a trajectory read against ``target``."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(batch_size: int, rank: int, world: int) -> slice:
    """This rank's contiguous share of a global batch (the batch must split evenly)."""
    if batch_size % world != 0:
        raise ValueError(f"batch_size {batch_size} does not split evenly over {world} processes")
    per = batch_size // world
    return slice(rank * per, (rank + 1) * per)


class RegressionStream:
    """Prompts for the online or fixed-batch protocol; under DDP each rank keeps its shard of the global batch.

    Attributes:
        batch: the current (full, global) batch; for ``fixed_batch`` the training batch itself.
    """

    def __init__(
        self,
        task: RegressionTask,
        cfg: TrainConfig,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        self.task, self.cfg, self.generator, self.dtype, self.device = task, cfg, generator, dtype, device
        self.rank, self.world = rank_and_world()
        self._slice = shard(cfg.batch_size, self.rank, self.world)
        self.batch: RegressionBatch | None = None
        self.drawn = 0  # batches served

    def _sample(self) -> RegressionBatch:
        return self.task.sample(self.cfg.batch_size, self.generator, dtype=self.dtype, device=self.device)

    def next(self) -> tuple[RegressionBatch, Tensor]:
        fresh = self.batch is None or (
            self.cfg.protocol == "online" and self.drawn % self.cfg.resample_every == 0
        )
        if fresh:
            self.batch = self._sample()
        self.drawn += 1
        assert self.batch is not None
        mine = self.batch if self.world == 1 else _slice_batch(self.batch, self._slice)
        return mine, mine.y_query

    def state_dict(self) -> dict[str, Any]:
        batch = (
            None if self.batch is None else {k: v.detach().cpu() for k, v in self.batch.state_dict().items()}
        )
        return {"generator": self.generator.get_state(), "batch": batch, "drawn": self.drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.drawn = int(state["drawn"])
        if state["batch"] is not None:
            self.batch = RegressionBatch.from_state_dict(state["batch"]).to(
                device=self.device, dtype=self.dtype
            )


def _slice_batch(batch: RegressionBatch, part: slice) -> RegressionBatch:
    return RegressionBatch(*(t[part] for t in batch.astuple()))


@dataclass
class TrainResult:
    """What training leaves behind.

    Attributes:
        steps: the number of optimizer steps taken in total (including those before a resume).
        final_loss: the objective at the last step (ERM: the training loss of the last layer).
        resumed_from: the checkpoint step training continued from (0 for a fresh start).
        seconds: wall-clock seconds of this call.
        last_info: what the objective reported at the last step (layer losses, slacks, multipliers).
    """

    steps: int
    final_loss: float
    resumed_from: int
    seconds: float
    last_info: dict[str, Any]


def make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD as the config says."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning-rate multiplier per step: constant, step decay, or cosine to zero over ``cfg.steps``."""
    sched = cfg.schedule

    def factor(step: int) -> float:
        if sched.kind == "step":
            return sched.factor ** (step // sched.every)
        if sched.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def clip_per_matrix(params: list[nn.Parameter], max_norm: float) -> None:
    """Scale each parameter tensor's gradient to norm at most ``max_norm`` (separately, per matrix)."""
    for p in params:
        if p.grad is not None:
            torch.nn.utils.clip_grad_norm_([p], max_norm)


def train(
    model: nn.Module,
    stream: Stream,
    cfg: TrainConfig,
    *,
    objective: Objective | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    checkpoint: str | Path | None = None,
    heldout_slack: Callable[[nn.Module], Tensor] | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    where: str = "",
    log_dir: str | Path | None = None,
) -> TrainResult:
    """Fit ``model`` on batches from ``stream``; resume from ``checkpoint`` if that file exists.

    Args:
        model: a solver returning a :class:`Trajectory` for the stream's inputs.
        stream: the batches (:class:`RegressionStream`, or the video clip stream).
        cfg: optimizer, schedule, clipping, steps, logging and checkpoint cadence.
        objective: ERM on the last layer (default, squared error) or :class:`ConstrainedObjective`.
        checkpoint: file to save to every ``cfg.checkpoint_every`` steps and at the end; if it exists,
            training continues from it (model, optimizer, scheduler, stream, multipliers).
        heldout_slack: ``model -> slacks [L]`` on a held-out constraint batch, for ``dual_source: heldout``.
        on_log: called every ``cfg.log_every`` steps with the step, loss, lr and the objective's report
            (layerwise losses, slacks, multipliers when constrained); rank 0 only.
        on_step: called with the step number after every step (progress bars, interrupt tests).
        where: a label for error messages (e.g. the method, seed and depth).
        log_dir: where ``cfg.report_to``'s writers log (TensorBoard event files); default
            ``runs/<date-time>`` in the working folder, as the Hugging Face Trainer's ``logging_dir``.

    Raises:
        NonFiniteLossError: the loss or a gradient is NaN/inf; names the step. No checkpoint is written
            for that step, so the last good one stays.
    """
    t0 = time.perf_counter()
    objective = objective or Objective()
    rank, world = rank_and_world()
    model.to(device=device, dtype=dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{where or 'model'}: nothing to train (no parameters require gradients)")
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)
    mode = compile_mode(cfg.compile)
    forward_loss: Callable[[Any, Tensor], tuple[Tensor, dict[str, Any]]] = (
        (lambda inputs, target: objective.loss(net(inputs), target))
        if mode is None
        else CompiledLoss(net, objective, mode)
    )
    optimizer = make_optimizer(cfg, params)
    scheduler = make_scheduler(cfg, optimizer)

    start = 0
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stream.load_state_dict(state["stream"])
        objective.load_state_dict(state["objective"])
        start = int(state["step"])
    objective.sync_step(start, cfg.steps)
    if objective.needs_calibration:  # a fresh run: targets from the untrained model (a resumed one has them)
        calibrate_on_stream(model, stream, objective, objective.calibration_config.batches)  # type: ignore[attr-defined]

    def save(step: int) -> None:
        if ckpt_path is None or rank != 0:
            return
        save_checkpoint(
            ckpt_path,
            {
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "stream": stream.state_dict(),
                "objective": objective.state_dict(),
            },
        )

    label = f" ({where})" if where else ""
    loss_value, info = float("nan"), {}
    tracker = Tracker(
        cfg.report_to if rank == 0 else None,
        log_dir if log_dir is not None else Path("runs") / time.strftime("%Y%m%d-%H%M%S"),
        run_name=where,
        config=cfg.model_dump(),
    )
    on_log = tracker.wrap(on_log)
    try:
        net.train()
        for step in range(start + 1, cfg.steps + 1):
            inputs, target = stream.next()
            optimizer.zero_grad(set_to_none=True)
            loss, info = forward_loss(inputs, target)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise NonFiniteLossError(
                    f"training loss is {loss_value} at step {step}{label}; stopped, the last good checkpoint "
                    f"(step {_last_saved(step, cfg, start)}) is kept. Try a smaller train.lr or set train.clip."
                )
            loss.backward()
            bad = [
                name
                for name, p in model.named_parameters()
                if p.grad is not None and not p.grad.isfinite().all()
            ]
            if bad:
                raise NonFiniteLossError(
                    f"non-finite gradient of {', '.join(bad)} at step {step}{label}; stopped, the last good "
                    f"checkpoint (step {_last_saved(step, cfg, start)}) is kept."
                )
            if cfg.clip is not None:
                clip_per_matrix(params, cfg.clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            dual = objective.after_step(
                step, (lambda: heldout_slack(model)) if heldout_slack is not None else None
            )
            if (
                on_log is not None
                and rank == 0
                and (step % cfg.log_every == 0 or step == cfg.steps or step == 1)
            ):
                on_log({"step": step, "loss": loss_value, "lr": lr, **info, **dual})
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save(step)
            if on_step is not None:
                on_step(step)
    finally:
        tracker.close()
    net.eval()
    return TrainResult(cfg.steps, loss_value, start, time.perf_counter() - t0, info)


def calibrate_on_stream(model: nn.Module, stream: Stream, objective: Objective, batches: int) -> None:
    """The objective's targets from the model's mean layerwise losses on the stream's next ``batches`` batches;
    the stream is put back where it was, so training sees the batches it would have (mean over ranks)."""
    position = stream.state_dict()
    sums: Tensor | None = None
    with torch.no_grad():
        for _ in range(batches):
            inputs, target = stream.next()
            losses = model(inputs).layerwise_losses(target, objective.per_sample_loss).double().cpu()
            sums = losses if sums is None else sums + losses
    stream.load_state_dict(position)
    assert sums is not None
    objective.calibrate(all_reduce_mean(sums / batches))  # type: ignore[attr-defined]


def _last_saved(step: int, cfg: TrainConfig, start: int) -> int:
    last = ((step - 1) // cfg.checkpoint_every) * cfg.checkpoint_every
    return max(last, start)
