"""Training logs people can watch: TensorBoard scalars and W&B runs for the library's own training loop.

The own-model loop (:func:`unrolled.train.loop.train`) logs a record every ``log_every`` steps: the loss, the
learning rate, and for constrained objectives the layerwise losses, slacks and multipliers as lists.
:func:`scalars` flattens a record into the names the Hugging Face trainers log (:mod:`unrolled.train.hf`):
``loss``, ``learning_rate``, ``layer_loss/l`` (l = 0..L), ``slack/l`` and ``multiplier/l`` (l = 1..L),
``task_weight``, ``infeasible_constraints`` and ``infeasible/l``. :class:`Tracker` writes them under
``train/``, as the Trainer's TensorBoard and W&B callbacks do, so one TensorBoard shows runs of either path
side by side with the same tags. It writes where ``train.report_to`` asks:

- ``tensorboard``: ``torch.utils.tensorboard.SummaryWriter`` (the ``tensorboard`` extra:
  ``pip install 'unrolled[tensorboard]'``); event files under the run's ``runs/<unit>/``;
- ``wandb``: ``wandb.init`` / ``wandb.log`` when W&B is installed (and logged in, or in offline mode).

Asking for a writer whose package is missing is an error naming the package, never a silent no-op.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

#: The writers ``train.report_to`` may name.
REPORTERS = ("tensorboard", "wandb")

_LISTS = {  # record list -> (scalar name, index of its first entry)
    "layer_losses": ("layer_loss", 0),
    "slacks": ("slack", 1),
    "multipliers": ("multiplier", 1),
    "slack_estimate": ("slack_estimate", 1),
}
_RENAMED = {"lr": "learning_rate"}


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The scalars of one log record, under the Hugging Face trainers' names (``step`` is left out).

    Lists become one scalar per layer (``multipliers`` -> ``multiplier/1..L``); entries that are None (a
    layer not read at that step) and values that are not numbers are skipped; ``infeasible`` (the flagged
    layers) becomes ``infeasible/l = 1``.
    """
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in ("step", "method", "seed", "depth"):
            continue
        if key in _LISTS and isinstance(value, Sequence):
            name, first = _LISTS[key]
            for l, v in enumerate(value, start=first):
                if _is_number(v):
                    out[f"{name}/{l}"] = float(v)
        elif key == "infeasible" and isinstance(value, Iterable):
            for l in value:
                out[f"infeasible/{int(l)}"] = 1.0
        elif _is_number(value):
            out[_RENAMED.get(key, key)] = float(value)
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


def normalize_report_to(report_to: str | Sequence[str] | None) -> list[str]:
    """``"none"``, None or [] -> []; a name or a list of names -> the list (each must be in :data:`REPORTERS`)."""
    if report_to is None or report_to == "none":
        return []
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    unknown = [n for n in names if n not in REPORTERS]
    if unknown:
        raise ValueError(f"report_to: unknown writer(s) {unknown}; choose from {list(REPORTERS)} or 'none'")
    return names


class Tracker:
    """The writers one training run logs to; a no-op when ``report_to`` is empty.

    Args:
        report_to: writer names (:data:`REPORTERS`), ``"none"`` or None.
        log_dir: where TensorBoard event files (and W&B's local files) go.
        run_name: the run's name in W&B (and in TensorBoard's run list, as the folder name).
        config: hyperparameters recorded with the W&B run.
    """

    def __init__(
        self,
        report_to: str | Sequence[str] | None,
        log_dir: str | Path,
        run_name: str = "",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.names = normalize_report_to(report_to)
        self.log_dir = Path(log_dir)
        self._tb: Any = None
        self._wandb: Any = None
        if "tensorboard" in self.names:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:  # torch raises ImportError when the tensorboard package is missing
                raise ImportError(
                    "train.report_to includes 'tensorboard' but the tensorboard package is not installed: "
                    "pip install 'unrolled[tensorboard]' (or pip install tensorboard)"
                ) from err
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._tb = SummaryWriter(log_dir=str(self.log_dir))
        if "wandb" in self.names:
            try:
                import wandb
            except ImportError as err:
                raise ImportError(
                    "train.report_to includes 'wandb' but W&B is not installed: pip install wandb "
                    "(and wandb login, or WANDB_MODE=offline)"
                ) from err
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._wandb = wandb.init(name=run_name or None, dir=str(self.log_dir), config=config or {})

    def log(self, record: dict[str, Any]) -> None:
        """Write one log record (with its ``step``) to every writer."""
        if not self.names:
            return
        values = {f"train/{k}": v for k, v in scalars(record).items()}
        step = int(record["step"])
        if self._tb is not None:
            for name, v in values.items():
                self._tb.add_scalar(name, v, global_step=step)
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def wrap(
        self, on_log: Callable[[dict[str, Any]], None] | None
    ) -> Callable[[dict[str, Any]], None] | None:
        """``on_log`` that also writes to these writers (``on_log`` itself when there are none)."""
        if not self.names:
            return on_log

        def both(record: dict[str, Any]) -> None:
            self.log(record)
            if on_log is not None:
                on_log(record)

        return both

    def close(self) -> None:
        """Flush and close every writer (safe to call twice)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
