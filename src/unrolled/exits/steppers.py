"""Models run one layer at a time, on a batch that shrinks as samples exit (issue 31).

A :class:`Stepper` is what the exit runner needs of a model: its state 0 from the inputs, layer l applied to
the samples still running, and the shared readout. Every solver of the library whose forward is a loop over
layers has one (:func:`stepper_for`); each computes exactly what the model's own forward computes, layer by
layer (tested against ``model(inputs).prediction(l)``), and nothing for the samples that left.

The state is a :class:`State`: tensors with a leading batch dimension (subset as samples exit) and values
shared by the whole batch (positions, a causal mask). Models added later register with
``@stepper_for.register``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from unrolled.models.denoisers import VideoDenoiser
from unrolled.models.dust import DUSTDenoiser
from unrolled.models.icl import GPT2Learner, InContextLearner, Prompts, UTLearner, interleave
from unrolled.models.memformer import LinearTransformer, as_tokens, normalize_prompt, query_readout
from unrolled.models.text_classifier import UTTextClassifier
from unrolled.models.unrolled_transformer import UnrolledTransformer
from unrolled.tasks.regression import RegressionBatch


@dataclass
class State:
    """A model's state between layers: ``batch`` tensors, whose batch dimension is ``batch_dims[name]`` (0 when
    not named: ``[b, ...]``), and ``shared`` values."""

    batch: dict[str, Tensor]
    shared: dict[str, Any] = field(default_factory=dict)
    batch_dims: dict[str, int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        name, t = next(iter(self.batch.items()))
        return t.shape[self.batch_dims.get(name, 0)]

    def select(self, keep: Tensor) -> State:
        """The samples ``keep`` (bool ``[b]`` or indices) of this state."""
        index = keep.nonzero().squeeze(-1) if keep.dtype == torch.bool else keep
        batch = {k: v.index_select(self.batch_dims.get(k, 0), index) for k, v in self.batch.items()}
        return State(batch, self.shared, self.batch_dims)


@dataclass(frozen=True)
class Stepper:
    """A model as ``start``, ``step`` and ``readout``.

    Attributes:
        depth: L.
        start: inputs -> state 0.
        step: ``(l, state) -> state``: layer l (1..L) on the samples of ``state``.
        readout: state -> prediction ``[b, ...]`` (the trajectory's shared readout).
        layers: the L layer modules, in order (a test counts the rows each one runs).
    """

    depth: int
    start: Callable[[Any], State]
    step: Callable[[int, State], State]
    readout: Callable[[State], Tensor]
    layers: tuple[nn.Module, ...]


@functools.singledispatch
def stepper_for(model: nn.Module) -> Stepper:
    """The :class:`Stepper` of ``model`` (raises TypeError naming the model when it has none)."""
    if type(model).__module__ == "unrolled.models.hf":  # registered by a module that needs the hf extra
        import unrolled.exits.hf  # noqa: F401

        if stepper_for.dispatch(type(model)) is not stepper_for.dispatch(object):
            return stepper_for(model)
    raise TypeError(
        f"{type(model).__name__} has no layer-by-layer stepper for early exit; models with one: "
        f"{', '.join(sorted(c.__name__ for c in stepper_for.registry if c is not object))}"
    )


def _ut_step(layers: nn.ModuleList) -> Callable[[int, State], State]:
    def step(l: int, state: State) -> State:
        return State(
            {**state.batch, "h": layers[l - 1](state.batch["h"], state.batch.get("mask"))}, state.shared
        )

    return step


@stepper_for.register
def _video(model: VideoDenoiser) -> Stepper:
    layers = model.layers
    ut = isinstance(model.backbone, UnrolledTransformer)

    def step(l: int, state: State) -> State:
        h = state.batch["h"]
        return State({"h": layers[l - 1](h, None) if ut else layers[l - 1](h)})

    return Stepper(
        model.depth,
        lambda noisy: State({"h": model.embed_clip(noisy)}),
        step,
        lambda s: model.readout(s.batch["h"]),
        tuple(layers),
    )


@stepper_for.register
def _dust(model: DUSTDenoiser) -> Stepper:
    from unrolled.models.denoisers import patchify

    def start(noisy: Tensor) -> State:
        if noisy.dim() != 5 or tuple(noisy.shape[1:]) != model.clip_shape:
            raise ValueError(f"model built for clips [B, {', '.join(map(str, model.clip_shape))}], got "
                             f"{tuple(noisy.shape)}")  # fmt: skip
        y = model._grid(patchify(noisy, model.patch))
        return State({"s": y.new_zeros(*y.shape[:3], model.codes), "y": y})

    def step(l: int, state: State) -> State:
        s, y = state.batch["s"], state.batch["y"]
        return State({"s": model.layers[l - 1](s, y, model.dictionary), "y": y})

    return Stepper(model.depth, start, step, lambda s: model.readout(s.batch["s"]), tuple(model.layers))


@stepper_for.register
def _text(model: UTTextClassifier) -> Stepper:
    def start(inputs: dict[str, Tensor]) -> State:
        ids, mask = inputs["input_ids"], inputs.get("attention_mask")
        positions = torch.arange(ids.shape[1], device=ids.device)
        h = model.project(model.embed(ids)) + model.position(positions)[None]
        return State({"h": h} if mask is None else {"h": h, "mask": mask})

    return Stepper(
        model.backbone.depth,
        start,
        _ut_step(model.backbone.layers),
        lambda s: model.head(s.batch["h"], s.batch.get("mask")),
        tuple(model.backbone.layers),
    )


def _prompts(inputs: Prompts | RegressionBatch) -> Prompts:
    return Prompts.from_batch(inputs) if isinstance(inputs, RegressionBatch) else inputs


@stepper_for.register
def _ut_learner(model: UTLearner) -> Stepper:
    def start(inputs: Prompts | RegressionBatch) -> State:
        prompts = _prompts(inputs)
        model.check(prompts)
        h = model.read_in(interleave(prompts.xs, prompts.ys))
        return State({"h": h + model.position[: h.shape[1]]})

    return _learner(model, start, _ut_step(model.backbone.layers), tuple(model.backbone.layers))


@stepper_for.register
def _gpt2_learner(model: GPT2Learner) -> Stepper:
    from transformers.masking_utils import create_causal_mask

    gpt = model.backbone

    def start(inputs: Prompts | RegressionBatch) -> State:
        prompts = _prompts(inputs)
        model.check(prompts)
        embedded = model.read_in(interleave(prompts.xs, prompts.ys))
        positions = torch.arange(embedded.shape[1], device=embedded.device).unsqueeze(0)
        return State({"h": gpt.drop(embedded + gpt.wpe(positions))}, {"positions": positions})

    def step(l: int, state: State) -> State:
        h, positions = state.batch["h"], state.shared["positions"]
        mask = create_causal_mask(  # built for the samples still running (a padding-free causal mask)
            config=gpt.config, inputs_embeds=h, attention_mask=None, cache=None, position_ids=positions
        )
        out = gpt.h[l - 1](h, None, mask, position_ids=positions)
        return State({"h": out[0] if isinstance(out, tuple) else out}, state.shared)

    return _learner(model, start, step, tuple(gpt.h[: model.depth]))


def _learner(model: InContextLearner, start: Callable[[Any], State], step: Callable[[int, State], State],
             layers: tuple[nn.Module, ...]) -> Stepper:  # fmt: skip
    return Stepper(model.depth, start, step, lambda s: model.readout(s.batch["h"]), layers)


@stepper_for.register
def _linear_transformer(model: LinearTransformer) -> Stepper:
    """The linear transformer and the Memformers (not the mixtures of experts), in the model's own layout: the
    label column alone, batch-last, when every layer has B = 0; full tokens batch-first or batch-last otherwise
    (:attr:`LinearTransformer.batch_first`)."""
    label_only, first = model.label_only, model.batch_first
    last = {} if first and not label_only else {"X": 2, "y": 1, "Z": 2, "memory": 1 if label_only else 2}

    def start(inputs: RegressionBatch | Tensor) -> State:
        Z = as_tokens(inputs, model.d, model.n)
        if model.normalize:
            Z = normalize_prompt(Z)
        if label_only:  # only the label column evolves: [n+1, B] against the fixed inputs [n+1, d, B]
            Zt = Z.permute(1, 2, 0).contiguous()
            batch = {"X": Zt[:, : model.d], "y": Zt[:, model.d]}
            memory = model.init_memory(batch["y"])
        else:
            batch = {"Z": Z if first else Z.permute(1, 2, 0).contiguous()}
            memory = model.init_memory(batch["Z"])
        if memory is not None:
            batch["memory"] = memory
        return State(batch, batch_dims=last)

    def step(l: int, state: State) -> State:
        b = state.batch
        if label_only:
            T, memory = model.update(l - 1, b["y"], b.get("memory"), b["X"])
            out = {"X": b["X"], "y": b["y"] + T}
        else:
            Z, memory = model.step(l - 1, b["Z"], b.get("memory"))
            out = {"Z": Z}
        if memory is not None:
            out["memory"] = memory
        return State(out, batch_dims=last)

    def readout(state: State) -> Tensor:
        if label_only:
            return -state.batch["y"][-1]
        Z = state.batch["Z"]
        return query_readout(Z) if first else -Z[-1, -1]

    return Stepper(model.depth, start, step, readout, tuple(model.layers))
