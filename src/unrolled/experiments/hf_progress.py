"""What the Hugging Face families share: the Trainer's steps, logs and checkpoints reported to the runner, and
``transformers`` kept quiet inside a unit (the runner draws its own progress bar)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from unrolled.experiments.family import UnitContext
from unrolled.train.checkpoint import save_checkpoint

__all__ = ["UnitProgress", "quiet_transformers"]


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """``transformers`` logs errors only, and neither it nor ``datasets`` draws progress bars inside the block
    (the runner has its own)."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets comes with the hf extra
        datasets = None
    data_bars = datasets is not None and datasets.is_progress_bar_enabled()
    if data_bars:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
        if data_bars:
            datasets.enable_progress_bars()


class UnitProgress(TrainerCallback):
    """The Trainer's steps, logs and checkpoints, reported to the runner."""

    def __init__(self, ctx: UnitContext) -> None:
        self.ctx = ctx

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ctx.on_step(state.global_step)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not logs or "loss" not in logs or not state.is_world_process_zero:
            return
        layers = [
            logs[k]
            for k in sorted(
                (k for k in logs if k.startswith("layer_loss/")), key=lambda k: int(k.split("/")[1])
            )
        ]
        record: dict[str, Any] = {
            "step": state.global_step,
            "loss": logs["loss"],
            "lr": logs.get("learning_rate"),
        }
        if layers:
            record["layer_losses"] = layers
        lam = [logs[f"multiplier/{l}"] for l in range(1, len(layers)) if f"multiplier/{l}" in logs]
        if lam:
            record["multipliers"] = lam
        for key in ("task_weight", "infeasible_constraints"):
            if key in logs:
                record[key] = logs[key]
        flagged = sorted(int(k.split("/")[1]) for k in logs if k.startswith("infeasible/"))
        if flagged:
            record["infeasible"] = flagged
        self.ctx.log_metrics(record)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if (
            state.is_world_process_zero
        ):  # the unit's checkpoint record: which Trainer checkpoint, at which step
            folder = str(Path(args.output_dir) / f"checkpoint-{state.global_step}")
            save_checkpoint(self.ctx.checkpoint, {"step": state.global_step, "trainer_checkpoint": folder})
