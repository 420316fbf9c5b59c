"""Run a model with an exit rule, skipping the layers finished samples do not need (issue 31).

:func:`run_with_exit` runs a model layer by layer (its :class:`~unrolled.exits.steppers.Stepper`) and drops
each sample from the batch after the layer its rule stops it at: later layers run on the samples still going
only, so the time saved is real (:func:`timed` measures it against the model's own forward on the same
batch). :func:`simulate_exits` gives the same exits from the predictions of every layer (one full pass): it
is how thresholds are swept and calibrated (:mod:`unrolled.exits.calibrate`), and the independent reference
the runner is tested against.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from unrolled.exits.rules import ExitRule
from unrolled.exits.steppers import State, Stepper, stepper_for


@dataclass(frozen=True)
class ExitResult:
    """What a run with an exit rule gives.

    Attributes:
        prediction: each sample's prediction at the layer it stopped at, ``[B, ...]``.
        layers: the layer each sample stopped at, ``[B]`` (1..L).
        executed: the samples each layer ran on, ``executed[l − 1]`` for layer l (layers not reached: 0).
        depth: L.
        seconds: wall time of the run (None for simulated exits).
    """

    prediction: Tensor
    layers: Tensor
    executed: tuple[int, ...]
    depth: int
    seconds: float | None = None

    @property
    def mean_layers(self) -> float:
        return float(self.layers.float().mean())

    @property
    def compute_fraction(self) -> float:
        """Layers run over layers of the full model (``mean_layers / L``)."""
        return self.mean_layers / self.depth


def _stepper(model: nn.Module | Stepper) -> Stepper:
    return model if isinstance(model, Stepper) else stepper_for(model)


@torch.no_grad()
def run_with_exit(model: nn.Module | Stepper, inputs: Any, rule: ExitRule) -> ExitResult:
    """Run ``model`` on ``inputs`` with ``rule``: layer l runs only on the samples still going after l − 1.

    A rule that reads predictions has the shared readout applied after every layer to the samples still
    running (its cost is part of the measured time); the others read out only the layer a sample stops at.
    """
    t0 = time.perf_counter()
    stepper = _stepper(model)
    state: State = stepper.start(inputs)
    B, L = state.size, stepper.depth
    stop = rule.stop_layer(L)
    device = next(iter(state.batch.values())).device
    index = torch.arange(B, device=device)
    rule_state = rule.start(B, device)
    previous = stepper.readout(state) if rule.needs_readout else None
    out: Tensor | None = None
    layers = torch.full((B,), stop, dtype=torch.long, device=device)
    executed = [0] * L
    for l in range(1, stop + 1):
        state = stepper.step(l, state)
        executed[l - 1] = state.size
        last = l == stop
        prediction = stepper.readout(state) if rule.needs_readout or last else None
        done, rule_state = rule.done(l, prediction, previous, rule_state)
        if last:
            done = torch.ones(state.size, dtype=torch.bool, device=device)
        elif done is not None and l < rule.min_layer:
            done = torch.zeros_like(done)
        if done is not None and bool(done.any()):
            assert prediction is not None
            if out is None:
                out = prediction.new_empty((B, *prediction.shape[1:]))
            out[index[done]] = prediction[done]
            layers[index[done]] = l
            keep = ~done
            index, state = index[keep], state.select(keep)
            rule_state = {k: v[keep] for k, v in rule_state.items()}
            prediction = prediction[keep]
            if index.numel() == 0:
                break
        previous = prediction
    assert out is not None
    return ExitResult(out, layers, tuple(executed), L, time.perf_counter() - t0)


@torch.no_grad()
def layer_predictions(model: nn.Module | Stepper, inputs: Any) -> Tensor:
    """The shared readout after every layer, ``[L + 1, B, ...]`` (0: the input state), in one full pass."""
    stepper = _stepper(model)
    state = stepper.start(inputs)
    predictions = [stepper.readout(state)]
    for l in range(1, stepper.depth + 1):
        state = stepper.step(l, state)
        predictions.append(stepper.readout(state))
    return torch.stack(predictions)


def simulate_exits(predictions: Tensor, rule: ExitRule) -> ExitResult:
    """The exits ``rule`` takes, from the predictions of every layer ``[L + 1, B, ...]`` (no model run).

    Every sample is followed through all layers at once (the rule's state kept for all of them), so this is
    an independent computation of what :func:`run_with_exit` must give."""
    L, B = predictions.shape[0] - 1, predictions.shape[1]
    stop = rule.stop_layer(L)
    device = predictions.device
    layers = torch.full((B,), stop, dtype=torch.long, device=device)
    running = torch.ones(B, dtype=torch.bool, device=device)
    rule_state = rule.start(B, device)
    for l in range(1, stop):
        done, rule_state = rule.done(
            l,
            predictions[l] if rule.needs_readout else None,
            predictions[l - 1] if rule.needs_readout else None,
            rule_state,
        )
        if done is None or l < rule.min_layer:
            continue
        first = done & running
        layers[first] = l
        running &= ~done
    picked = predictions[layers, torch.arange(B, device=device)]
    executed = tuple(int((layers >= l).sum()) if l <= stop else 0 for l in range(1, L + 1))
    return ExitResult(picked, layers, executed, L)


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def timed(
    model: nn.Module, inputs: Any, rule: ExitRule, repeats: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Wall time of ``run_with_exit`` against the model's own forward (all layers, the final readout) on the
    same batch, alternated, medians of ``repeats``: ``{"exit_seconds", "full_seconds", "ratio",
    "mean_layers", "depth"}`` (``ratio``: exit over full; < 1 is faster)."""
    stepper = stepper_for(model)

    def full() -> Tensor:  # text batches are keyword arguments, as for the model's forward
        return (model(**inputs) if isinstance(inputs, dict) else model(inputs)).prediction()

    def exit_() -> ExitResult:
        return run_with_exit(stepper, inputs, rule)

    for _ in range(warmup):
        full(), exit_()
    exit_times, full_times = [], []
    for _ in range(repeats):  # alternated, so drifts in the machine's load hit both alike
        exit_times.append(_median_seconds(exit_, 1))
        full_times.append(_median_seconds(full, 1))
    result = exit_()
    e, f = statistics.median(exit_times), statistics.median(full_times)
    return {"exit_seconds": e, "full_seconds": f, "ratio": e / f, "mean_layers": result.mean_layers,
            "depth": float(stepper.depth)}  # fmt: skip
