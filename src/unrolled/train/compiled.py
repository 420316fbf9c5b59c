"""``train.compile``: the own-model loop's forward pass and loss as one ``torch.compile`` graph.

What is compiled is the function ``(inputs, target, tensors) -> (loss, layer losses)``: the solver's forward
pass, every readout the objective may weigh, and the loss (:meth:`~unrolled.constrained.Objective.traced_loss`).
What changes from step to step enters as tensors (:meth:`~unrolled.constrained.Objective.step_tensors`: the
multipliers after each dual step, the early-exit weights of the curriculum, the subsampled readout's
indices), so the compiler sees data, not constants, and does not recompile when they change. The bookkeeping
that needs host values (slack sums for the dual steps, logs, the infeasibility monitor) stays eager
(:meth:`~unrolled.constrained.Objective.record`), as do the backward pass's driver, the optimizer step and the
dual step. The model's parameters and state dict are untouched, so checkpoints move freely between compiled
and eager runs.

The graph is compiled with ``fullgraph=True``: a graph break on the hot path is an error (naming where), not
a silent fall-back to Python. A machine without a working compiler (Inductor needs a C++ compiler on the
CPU, Triton on a GPU) gets a :class:`CompileError` that says so, never an eager run.

Modes are ``torch.compile``'s: ``default``, ``reduce-overhead`` (CUDA graphs on a GPU; the same as
``default`` on a CPU), ``max-autotune`` and ``max-autotune-no-cudagraphs``.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from unrolled.constrained.objective import Objective

_instances = 0
BACKEND = "inductor"
"""The backend ``train.compile`` uses (tests switch it to ``aot_eager``, which traces without code generation)."""

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class CompileError(RuntimeError):
    """``train.compile`` cannot build the step here (no working compiler, or a graph break on the hot path)."""


def compile_mode(value: bool | str) -> str | None:
    """The mode a ``train.compile`` setting asks for: None (off), or one of :data:`MODES` (True: default)."""
    if value is False or value is None:
        return None
    if value is True:
        return "default"
    if value not in MODES:
        raise ValueError(f"train.compile must be false, true or one of {', '.join(MODES)}; got {value!r}")
    return value


def trainer_compile_args(value: bool | str) -> dict[str, Any]:
    """``TrainingArguments`` keywords for a ``train.compile`` setting (the Hugging Face families): the Trainer
    compiles the model itself (``torch_compile``, ``torch_compile_mode``); {} when off."""
    mode = compile_mode(value)
    if mode is None:
        return {}
    return {"torch_compile": True, "torch_compile_mode": None if mode == "default" else mode}


def compile_function(
    fn: Callable[..., Any], mode: str = "default", backend: str | None = None
) -> Callable[..., Any]:
    """``torch.compile(fn, fullgraph=True)`` under a code object of its own (Dynamo's recompile limit is per
    code object, so the graphs of the many models one process trains do not count against one another's);
    compiler failures become a :class:`CompileError` that says what is missing."""
    backend = backend or BACKEND
    if mode not in MODES:
        raise ValueError(f"unknown compile mode {mode!r}; one of {', '.join(MODES)}")
    global _instances
    _instances += 1

    def call(*args: Any) -> Any:
        return fn(*args)

    code = call.__code__.replace(co_name=f"unrolled_fn_{_instances}")
    named = types.FunctionType(code, call.__globals__, code.co_name, None, call.__closure__)
    options: dict[str, Any] = {"fullgraph": True, "dynamic": False, "backend": backend}
    if backend == "inductor":
        options["mode"] = None if mode == "default" else mode
    compiled = torch.compile(named, **options)

    def run(*args: Any) -> Any:
        try:
            return compiled(*args)
        except Exception as err:
            raise _explain(err, backend, mode) from err

    return run


class CompiledLoss:
    """``objective.loss(model(inputs), target)`` with the forward pass and the loss compiled as one graph.

    Args:
        model: the solver (or its DDP wrapper), ``inputs -> Trajectory``.
        objective: ERM, constrained or early-exit; its traced half is compiled, its bookkeeping stays eager.
        mode: a ``torch.compile`` mode (:data:`MODES`).
        backend: ``torch.compile``'s backend; default :data:`BACKEND` (``inductor``: fused kernels). Tests use
            ``aot_eager`` to check tracing (one graph, no recompiles) without code generation.

    Calling it with ``(inputs, target)`` returns ``(loss, info)`` as :meth:`Objective.loss` does.
    """

    def __init__(
        self, model: nn.Module, objective: Objective, mode: str = "default", backend: str | None = None
    ) -> None:
        backend = backend or BACKEND
        if mode not in MODES:
            raise ValueError(f"unknown compile mode {mode!r}; one of {', '.join(MODES)}")
        self.model, self.objective, self.mode, self.backend = model, objective, mode, backend
        self.calls = 0

        def step(inputs: Any, target: Tensor, tensors: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            return objective.traced_loss(model(inputs), target, tensors)

        # Dynamo keeps its compiled graphs (and its limit of 8 recompiles) per code object. A code object of
        # its own per instance keeps the graphs of the many models one process trains (an experiment's
        # methods, depths and seeds) from counting against one another's limit.
        global _instances
        _instances += 1
        code = step.__code__.replace(co_name=f"unrolled_step_{_instances}")
        step = types.FunctionType(code, step.__globals__, code.co_name, None, step.__closure__)
        options: dict[str, Any] = {"fullgraph": True, "dynamic": False, "backend": backend}
        if backend == "inductor":
            options["mode"] = None if mode == "default" else mode
        self._step: Callable[..., tuple[Tensor, Tensor]] = torch.compile(step, **options)

    def __call__(self, inputs: Any, target: Tensor) -> tuple[Tensor, dict[str, Any]]:
        tensors = self.objective.step_tensors(target)
        try:
            loss, losses = self._step(inputs, target, tensors)
        except Exception as err:
            raise _explain(err, self.backend, self.mode) from err
        self.calls += 1
        return loss, self.objective.record(losses)


def _explain(err: Exception, backend: str, mode: str) -> Exception:
    """A :class:`CompileError` naming what failed for the compiler's own errors; any other error unchanged."""
    import torch._dynamo.exc as dynamo_exc

    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, dynamo_exc.BackendCompilerFailed):
        where = "a C++ compiler (g++ or clang++) on the CPU, Triton on a GPU"
        return CompileError(
            f"train.compile ({mode}): the {backend} backend could not build the step on this machine: {first}. "
            f"It needs {where}; install one, or set train.compile: false to train eagerly."
        )
    if isinstance(err, dynamo_exc.Unsupported):
        return CompileError(
            f"train.compile ({mode}): the step does not trace as one graph (a graph break on the hot path): "
            f"{first}. Set train.compile: false, or report this model as not yet compilable."
        )
    if isinstance(err, RuntimeError) and "not supported" in first and "compile" in first.lower():
        return CompileError(f"train.compile ({mode}): torch.compile is not available here: {first}")
    return err
