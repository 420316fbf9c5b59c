"""Many same-shaped models trained in lockstep as one batched computation (issue 30).

The seeds of one method (and any models of one architecture) are S separate training runs whose steps differ
only in their numbers. :func:`train_ensemble` runs them as one: the members' parameters are stacked along a
leading dimension (``torch.func.stack_module_state``), one forward pass maps every member over its own batch
(``torch.func.vmap`` of ``functional_call``), and one backward pass and one optimizer step update them all.
Each member keeps everything it has when trained alone (:func:`unrolled.train.loop.train`):

* its own stream (the same batches, from its own generator) and its own objective (ERM, or its own
  multipliers and dual steps; :meth:`~unrolled.constrained.Objective.combine` of its layerwise losses);
* its own optimizer state: Adam, AdamW and SGD are elementwise, so one optimizer over the stacked parameters
  takes the members' own steps; the schedule is shared, as every member has the same;
* its own gradient clipping (each member's slice of each parameter tensor, as ``clip_grad_norm_`` per matrix);
* its own logs, and its own checkpoint, in exactly the format :func:`~unrolled.train.loop.train` writes, so a
  member resumes alone or in an ensemble, and an ensemble resumes from members trained alone.

Members' losses are summed before the backward pass; their parameters are disjoint, so each member's gradient
is its own loss's. What the ensemble changes is only the order of floating-point operations (tested equal to
one-by-one training in float64). What it needs of a model: a ``forward(inputs) -> Trajectory`` that
``vmap`` can batch (no Python branch on a tensor's value) and a readout without parameters (the
trajectory's states are mapped, its readout is applied per member). Not under ``torchrun`` (DDP).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from unrolled.constrained.objective import Objective
from unrolled.train.checkpoint import load_checkpoint, save_checkpoint
from unrolled.train.compiled import compile_function, compile_mode
from unrolled.train.config import TrainConfig
from unrolled.train.loop import (
    NonFiniteLossError,
    Stream,
    TrainResult,
    calibrate_on_stream,
    make_optimizer,
    make_scheduler,
    rank_and_world,
)
from unrolled.train.tracking import Tracker


class EnsembleMismatchError(ValueError):
    """The members cannot train as one: different shapes, or checkpoints at different steps."""


def stack_inputs(items: Sequence[Any]) -> tuple[tuple[Tensor, ...], Callable[[tuple[Tensor, ...]], Any]]:
    """The members' inputs stacked along a new leading dimension, and how to rebuild one member's inputs
    from its slice. Inputs are a tensor, a mapping of tensors or a dataclass of tensors (a prompt batch)."""
    first = items[0]
    if isinstance(first, Tensor):
        return (torch.stack(list(items)),), lambda t: t[0]
    if isinstance(first, Mapping):
        keys = list(first)
        stacked = tuple(torch.stack([item[k] for item in items]) for k in keys)
        return stacked, lambda t: dict(zip(keys, t, strict=True))
    if dataclasses.is_dataclass(first):
        names = [f.name for f in dataclasses.fields(first)]
        stacked = tuple(torch.stack([getattr(item, n) for item in items]) for n in names)
        kind = type(first)
        return stacked, lambda t: kind(**dict(zip(names, t, strict=True)))
    raise TypeError(
        f"an ensemble stacks tensors, mappings or dataclasses of tensors, got {type(first).__name__}"
    )


class _Step(nn.Module):
    """A model and its objective's traced loss as one module, so that ``functional_call`` covers both."""

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, inputs: Any, target: Tensor, tensors: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return self.objective.traced_loss(self.model(inputs), target, tensors)


class Ensemble:
    """S models of one architecture as stacked parameters ``{name: [S, ...]}`` and one batched forward.

    Args:
        models: the members (same class, same parameter names and shapes, same ``requires_grad``).
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        if len(models) < 1:
            raise EnsembleMismatchError("an ensemble needs at least one member")
        shapes = [[(n, tuple(p.shape), p.requires_grad) for n, p in m.named_parameters()] for m in models]
        if any(type(m) is not type(models[0]) or s != shapes[0] for m, s in zip(models, shapes, strict=True)):
            raise EnsembleMismatchError("the members differ in class, parameters, shapes or what they train")
        self.models = list(models)
        self.size = len(models)
        self.trainable = [n for n, _, grad in shapes[0] if grad]
        params, buffers = stack_module_state(list(models))
        self.params = {n: p.detach().requires_grad_(n in self.trainable) for n, p in params.items()}
        self.buffers = buffers
        self.base = copy.deepcopy(models[0]).to("meta")

    def step_function(
        self, objective: Objective, rebuild: Callable[[tuple[Tensor, ...]], Any]
    ) -> Callable[..., Any]:
        """``(params, buffers, inputs, targets, tensors) -> (losses [S], layer losses [S, K])``: every member's
        :meth:`~unrolled.constrained.Objective.traced_loss` on its own batch, as one ``vmap``. The objective's
        configuration is the members' shared one; what differs per member (multipliers, early-exit weights)
        comes in ``tensors`` stacked along the leading dimension."""
        step = _Step(
            self.base, objective
        )  # the readouts run inside functional_call: they may have parameters

        def member(params: dict[str, Tensor], buffers: dict[str, Tensor], args: tuple[Tensor, ...], y: Tensor,
                   tensors: dict[str, Tensor]) -> tuple[Tensor, Tensor]:  # fmt: skip
            named = {f"model.{k}": v for k, v in params.items()}
            named.update({f"model.{k}": v for k, v in buffers.items()})
            return functional_call(step, named, (rebuild(args), y, tensors))

        return vmap(member)

    def write_back(self, members: Sequence[int] | None = None) -> None:
        """Copy the stacks into the member modules (all, or ``members``): for checkpoints and evaluation."""
        with torch.no_grad():
            for i in range(self.size) if members is None else members:
                for name, t in [*self.models[i].named_parameters(), *self.models[i].named_buffers()]:
                    source = self.params.get(name, self.buffers.get(name))
                    t.copy_(source[i])

    def load_members(self) -> None:
        """Refill the stacks from the member modules (after they loaded checkpoints)."""
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(torch.stack([dict(m.named_parameters())[name] for m in self.models]))
            for name, b in self.buffers.items():
                b.copy_(torch.stack([dict(m.named_buffers())[name] for m in self.models]))

    def member_module(self, i: int) -> nn.Module:
        """Member ``i``'s module at the stacks' current values (for held-out dual steps)."""
        self.write_back([i])
        return self.models[i]


def split_optimizer_state(state: dict[str, Any], i: int, size: int) -> dict[str, Any]:
    """Member ``i``'s share of an optimizer state dict over stacked parameters (the single model's format)."""

    def pick(v: Any) -> Any:  # every non-scalar tensor is stacked (Adam's step count is a shared scalar)
        return v[i].clone() if isinstance(v, Tensor) and v.dim() > 0 else v

    return {
        "state": {k: {name: pick(v) for name, v in s.items()} for k, s in state["state"].items()},
        "param_groups": copy.deepcopy(state["param_groups"]),
    }


def stack_optimizer_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The members' optimizer state dicts (single-model format) as one over stacked parameters."""
    first = states[0]
    out: dict[str, Any] = {"state": {}, "param_groups": copy.deepcopy(first["param_groups"])}
    for k, s in first["state"].items():
        out["state"][k] = {
            name: torch.stack([st["state"][k][name] for st in states])
            if isinstance(v, Tensor) and v.dim() > 0
            else v
            for name, v in s.items()
        }
    return out


def clip_members(params: Sequence[Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` on each member's slice of each parameter tensor, separately."""
    for p in params:
        if p.grad is None:
            continue
        norms = torch.linalg.vector_norm(p.grad.flatten(1), dim=1)
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        p.grad.mul_(coef.view(-1, *([1] * (p.grad.dim() - 1))))


def train_ensemble(
    models: Sequence[nn.Module],
    streams: Sequence[Stream],
    cfg: TrainConfig,
    *,
    objectives: Sequence[Objective],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    checkpoints: Sequence[str | Path | None] | None = None,
    heldout_slacks: Sequence[Callable[[Any], Tensor] | None] | None = None,
    on_logs: Sequence[Callable[[dict[str, Any]], None] | None] | None = None,
    on_steps: Sequence[Callable[[int], None] | None] | None = None,
    wheres: Sequence[str] | None = None,
    log_dirs: Sequence[str | Path | None] | None = None,
) -> list[TrainResult]:
    """Train ``models`` in lockstep; each member as :func:`~unrolled.train.loop.train` would train it alone.

    Every per-member argument is a sequence with one entry per model (see ``train`` for their meaning). The
    members' trained parameters are written back into ``models``.

    Raises:
        EnsembleMismatchError: the models differ in shape, or only some members have checkpoints, or they
            are at different steps (train those members alone).
        NonFiniteLossError: a member's loss or gradient is NaN/inf (the message names the member and step).
    """
    t0 = time.perf_counter()
    S = len(models)
    none: list[Any] = [None] * S
    checkpoints, heldout_slacks = list(checkpoints or none), list(heldout_slacks or none)
    on_logs, on_steps = list(on_logs or none), list(on_steps or none)
    wheres, log_dirs = list(wheres or [""] * S), list(log_dirs or none)
    if not (len(streams) == len(objectives) == len(checkpoints) == S):
        raise EnsembleMismatchError("one stream, objective and checkpoint per member")
    if rank_and_world()[1] > 1:
        raise EnsembleMismatchError("ensembles do not run under torchrun (DDP); train the members alone")
    for model in models:
        model.to(device=device, dtype=dtype)
    paths = [Path(c) if c is not None else None for c in checkpoints]
    saved = [load_checkpoint(p) if p is not None and p.is_file() else None for p in paths]
    start = 0
    if any(s is not None for s in saved):
        steps = {int(s["step"]) if s is not None else None for s in saved}
        if None in steps or len(steps) > 1:
            raise EnsembleMismatchError(
                f"members' checkpoints are at different steps ({sorted(map(str, steps))})"
            )
        start = steps.pop()  # type: ignore[assignment]
        for model, state, stream, objective in zip(models, saved, streams, objectives, strict=True):
            model.load_state_dict(state["model"])
            stream.load_state_dict(state["stream"])
            objective.load_state_dict(state["objective"])
    ensemble = Ensemble(models)
    params = [ensemble.params[n] for n in ensemble.trainable]
    if not params:
        raise ValueError("nothing to train (no parameters require gradients)")
    optimizer = make_optimizer(cfg, params)  # type: ignore[arg-type]
    scheduler = make_scheduler(cfg, optimizer)
    if start:
        optimizer.load_state_dict(stack_optimizer_states([s["optimizer"] for s in saved]))  # type: ignore[index]
        scheduler.load_state_dict(saved[0]["scheduler"])  # type: ignore[index]
    for model, stream, objective in zip(models, streams, objectives, strict=True):
        objective.sync_step(start, cfg.steps)
        if objective.needs_calibration:  # a fresh run: each member's own targets, as alone
            calibrate_on_stream(model, stream, objective, objective.calibration_config.batches)  # type: ignore[attr-defined]
    step_fn: Callable[..., Any] | None = None
    mode = compile_mode(cfg.compile)
    cached: list[tuple[Any, Tensor]] = []  # the batches stacked last (kept alive, so `is` is meaningful)

    def save(step: int) -> None:
        ensemble.write_back()
        opt_state = optimizer.state_dict()
        for i, path in enumerate(paths):
            if path is None:
                continue
            save_checkpoint(path, {
                "step": step,
                "model": models[i].state_dict(),
                "optimizer": split_optimizer_state(opt_state, i, S),
                "scheduler": scheduler.state_dict(),
                "stream": streams[i].state_dict(),
                "objective": objectives[i].state_dict(),
            })  # fmt: skip

    trackers = [
        Tracker(cfg.report_to, log_dirs[i] or Path("runs") / time.strftime("%Y%m%d-%H%M%S"), run_name=wheres[i],
                config=cfg.model_dump())
        for i in range(S)
    ]  # fmt: skip
    logs = [tr.wrap(on_log) for tr, on_log in zip(trackers, on_logs, strict=True)]
    values = [math.nan] * S
    infos: list[dict[str, Any]] = [{} for _ in range(S)]
    labels = [f" ({w})" if w else "" for w in wheres]
    try:
        for step in range(start + 1, cfg.steps + 1):
            batches = [stream.next() for stream in streams]
            optimizer.zero_grad(set_to_none=True)
            same = len(cached) == S and all(
                a[0] is b[0] and a[1] is b[1] for a, b in zip(cached, batches, strict=True)
            )
            if not same:  # a fixed batch comes back as the same objects every step: stack it once
                stacked, rebuild = stack_inputs([b[0] for b in batches])
                target = torch.stack([b[1] for b in batches])
                cached = batches
            per_member = [o.step_tensors(b[1]) for o, b in zip(objectives, batches, strict=True)]
            tensors = {k: torch.stack([t[k] for t in per_member]) for k in per_member[0]}
            if step_fn is None:  # built once: the inputs' structure is the same every step
                step_fn = ensemble.step_function(objectives[0], rebuild)
                if mode is not None:
                    step_fn = compile_function(step_fn, mode)
            losses, layer_losses = step_fn(ensemble.params, ensemble.buffers, stacked, target, tensors)
            for i, objective in enumerate(objectives):
                infos[i] = objective.record(layer_losses[i])
                values[i] = float(losses[i].detach())
                if not math.isfinite(values[i]):
                    raise NonFiniteLossError(
                        f"training loss is {values[i]} at step {step}{labels[i]}; stopped, the last good checkpoint "
                        f"is kept. Try a smaller train.lr or set train.clip."
                    )
            total = losses.sum()
            total.backward()
            for name in ensemble.trainable:
                grad = ensemble.params[name].grad
                if grad is not None and not grad.isfinite().all():
                    bad = [i for i in range(S) if not grad[i].isfinite().all()]
                    raise NonFiniteLossError(
                        f"non-finite gradient of {name} at step {step}{labels[bad[0]]}; stopped, the last good "
                        "checkpoint is kept."
                    )
            if cfg.clip is not None:
                clip_members(params, cfg.clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            for i, objective in enumerate(objectives):
                held = heldout_slacks[i]
                dual = objective.after_step(
                    step, (lambda h=held, i=i: h(ensemble.member_module(i))) if held is not None else None
                )
                if logs[i] is not None and (step % cfg.log_every == 0 or step == cfg.steps or step == 1):
                    logs[i]({"step": step, "loss": values[i], "lr": lr, **infos[i], **dual})  # type: ignore[misc]
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save(step)
            for on_step in on_steps:
                if on_step is not None:
                    on_step(step)
    finally:
        for tracker in trackers:
            tracker.close()
    ensemble.write_back()
    for model in models:
        model.eval()
    seconds = time.perf_counter() - t0
    return [TrainResult(cfg.steps, values[i], start, seconds, infos[i]) for i in range(S)]
