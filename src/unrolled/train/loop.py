"""The training loop for the library's own in-context solvers (plain PyTorch).

Two protocols (docs/MODELS.md): ``online`` draws a fresh batch every ``resample_every`` steps; ``fixed_batch``
draws one batch and fits it for every step (what produced the published Memformer figures). Checkpoints hold
everything needed to continue bit for bit: model, optimizer, scheduler, the data generator's state and the
current batch. A non-finite loss or gradient stops training with an error naming the step; the last
checkpoint written before it is left untouched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from unrolled.config import TrainConfig
from unrolled.tasks.regression import RegressionBatch, RegressionTask
from unrolled.train.checkpoint import load_checkpoint, save_checkpoint
from unrolled.trajectory import Trajectory, squared_error

LossFn = Callable[[Trajectory, Tensor], Tensor]


class NonFiniteLossError(RuntimeError):
    """The training loss or a gradient became NaN or infinite; the message names the step."""


def final_layer_mse(trajectory: Trajectory, target: Tensor) -> Tensor:
    """ERM objective: the mean squared error of the last layer's readout (a scalar)."""
    return squared_error(trajectory.prediction(), target).mean()


@dataclass
class TrainResult:
    """What training leaves behind.

    Attributes:
        steps: the number of optimizer steps taken in total (including those before a resume).
        final_loss: training loss at the last step.
        train_batch: the fixed training batch (``fixed_batch`` protocol), else the last batch seen.
        resumed_from: the checkpoint step training continued from (0 for a fresh start).
        seconds: wall-clock seconds of this call.
    """

    steps: int
    final_loss: float
    train_batch: RegressionBatch
    resumed_from: int
    seconds: float


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
    task: RegressionTask,
    cfg: TrainConfig,
    generator: torch.Generator,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    loss_fn: LossFn = final_layer_mse,
    checkpoint: str | Path | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    where: str = "",
) -> TrainResult:
    """Fit ``model`` on prompts from ``task``; resume from ``checkpoint`` if that file exists.

    Args:
        model: a solver returning a :class:`Trajectory` for a :class:`RegressionBatch`.
        task: the prompt sampler.
        cfg: protocol, optimizer, schedule, clipping, logging and checkpoint cadence.
        generator: the data stream (its state is saved in checkpoints).
        loss_fn: ``(trajectory, target [B]) -> scalar``; ERM on the last layer by default.
        checkpoint: file to save to every ``cfg.checkpoint_every`` steps and at the end; if it exists,
            training continues from it.
        on_log: called with ``{"step", "loss", "lr"}`` every ``cfg.log_every`` steps.
        on_step: called with the step number after every step (progress bars, interrupt tests).
        where: a label for error messages (e.g. the method, seed and depth).

    Raises:
        NonFiniteLossError: the loss or a gradient is NaN/inf; names the step. No checkpoint is written
            for that step, so the last good one stays.
    """
    t0 = time.perf_counter()
    model.to(device=device, dtype=dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{where or 'model'}: nothing to train (no parameters require gradients)")
    optimizer = make_optimizer(cfg, params)
    scheduler = make_scheduler(cfg, optimizer)

    def sample() -> RegressionBatch:
        return task.sample(cfg.batch_size, generator, dtype=dtype, device=device)

    start, batch = 0, None
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        batch = RegressionBatch.from_state_dict(state["batch"]).to(device=device, dtype=dtype)
        start = int(state["step"])
    resumed_from = start
    if batch is None:
        batch = sample()

    def save(step: int) -> None:
        if ckpt_path is None:
            return
        save_checkpoint(
            ckpt_path,
            {
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "batch": {k: v.detach().cpu() for k, v in batch.state_dict().items()},
            },
        )

    label = f" ({where})" if where else ""
    loss_value = float("nan")
    model.train()
    for step in range(start + 1, cfg.steps + 1):
        if cfg.protocol == "online" and step > 1 and (step - 1) % cfg.resample_every == 0:
            batch = sample()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(batch), batch.y_query)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(
                f"training loss is {loss_value} at step {step}{label}; stopped, the last good checkpoint "
                f"(step {_last_saved(step, cfg, start)}) is kept. Try a smaller train.lr or set train.clip."
            )
        loss.backward()
        bad = [
            name for name, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()
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
        if on_log is not None and (step % cfg.log_every == 0 or step == cfg.steps or step == 1):
            on_log({"step": step, "loss": loss_value, "lr": lr})
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save(step)
        if on_step is not None:
            on_step(step)
    if start >= cfg.steps:  # already finished: report the loss of the restored model
        with torch.no_grad():
            loss_value = float(loss_fn(model(batch), batch.y_query))
    model.eval()
    return TrainResult(cfg.steps, loss_value, batch, resumed_from, time.perf_counter() - t0)


def _last_saved(step: int, cfg: TrainConfig, start: int) -> int:
    last = ((step - 1) // cfg.checkpoint_every) * cfg.checkpoint_every
    return max(last, start)
