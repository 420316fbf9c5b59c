"""Eager against compiled training steps (``train.compile``), side by side in one process.

For one model and batch, four steps (zero_grad, forward, objective, backward, Adam step): eager ERM,
compiled ERM, eager constrained, compiled constrained (every multiplier positive, so every readout is
back-propagated; the most expensive case). The compiled steps use :class:`unrolled.train.compiled.CompiledLoss`,
exactly what the training loop uses. Reported: each step's median time (``_harness.compare_steps``: the
variants alternate), its memory, the one-time compile cost (the first compiled step's time less a steady
step's: tracing, AOT autograd and code generation of the forward and backward graphs, with Inductor's
caches off, as on a first run; a later run on the same machine finds the generated code in Inductor's cache
and compiles in a few seconds), the ratios
compiled / eager and constrained / ERM, and the share of the machine's float32 matmul peak each reaches
(floating-point operations of the eager step counted by ``torch.utils.flop_counter.FlopCounterMode``: the
matrix products, forward and backward; elementwise work is not counted).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from _harness import compare_steps, synchronizer
from unrolled.constrained import Objective
from unrolled.train.compiled import CompiledLoss


def matmul_peak_gflops(device: str, size: int = 1024, repeats: int = 10) -> float:
    """The machine's float32 matmul throughput on the current threads: best of ``repeats`` products."""
    sync = synchronizer(device)
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = math.inf
    for _ in range(repeats + 2):
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def step_matmul_flops(model: nn.Module, objective: Objective, inputs: Any, target: torch.Tensor) -> float:
    """Matrix-product FLOPs of one eager forward + backward (FlopCounterMode)."""
    counter = FlopCounterMode(display=False)
    with counter:
        loss, _ = objective.loss(model(inputs), target)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def compiled_comparison(
    make_model: Callable[[], nn.Module],
    objectives: Mapping[str, Callable[[], Objective]],
    inputs: Any,
    target: torch.Tensor,
    *,
    lr: float,
    repeats: int,
    device: str,
    mode: str = "default",
    peak_gflops: float | None = None,
) -> dict[str, Any]:
    """Eager and compiled steps of every objective in ``objectives`` (e.g. ``erm``, ``constrained``) on the
    same batch; see the module docstring. Names of the variants: ``"<objective> eager"``,
    ``"<objective> compiled"``."""
    sync = synchronizer(device)
    steps: dict[str, Callable[[], None]] = {}
    static: dict[str, int] = {}
    compile_first: dict[str, float] = {}
    flops: dict[str, float] = {}
    for name, make_objective in objectives.items():
        flops[name] = step_matmul_flops(make_model().to(device), make_objective(), inputs, target)
        for compiled in (False, True):
            model = make_model().to(device)
            objective = make_objective()
            opt = torch.optim.Adam(model.parameters(), lr=lr)
            forward_loss = (
                CompiledLoss(model, objective, mode)
                if compiled
                else (lambda x, y, model=model, objective=objective: objective.loss(model(x), y))
            )

            def step(forward_loss=forward_loss, opt=opt) -> None:
                opt.zero_grad(set_to_none=True)
                loss, _ = forward_loss(inputs, target)
                loss.backward()
                opt.step()

            key = f"{name} {'compiled' if compiled else 'eager'}"
            if compiled:
                sync()
                t0 = time.perf_counter()
                # tracing and code generation happen here (forward and backward); Inductor's caches are off
                # for it, so the figure is a first run's cost, not a cache hit of an earlier process
                with torch._inductor.config.patch(force_disable_caches=True):
                    step()
                sync()
                compile_first[key] = time.perf_counter() - t0
            steps[key] = step
            static[key] = sum(p.numel() * p.element_size() for p in model.parameters()) * 4
    median, times, memory = compare_steps(steps, static, repeats, device, warmup=3)
    names = list(objectives)
    base = names[0]
    out: dict[str, Any] = {
        "mode": mode,
        "median_step_seconds": median,
        "step_seconds": times,
        "memory_bytes": memory,
        "compile_seconds": {k: t - median[k] for k, t in compile_first.items()},
        "compiled_over_eager": {n: median[f"{n} compiled"] / median[f"{n} eager"] for n in names},
        "over_erm": {
            how: {n: median[f"{n} {how}"] / median[f"{base} {how}"] for n in names[1:]}
            for how in ("eager", "compiled")
        },
        "step_matmul_flops": flops,
    }
    if peak_gflops is not None:
        out["matmul_peak_gflops"] = peak_gflops
        out["fraction_of_matmul_peak"] = {
            k: flops[k.rsplit(" ", 1)[0]] / median[k] / 1e9 / peak_gflops for k in median
        }
    # break-even: steps after which compiling has paid for itself
    out["break_even_steps"] = {
        n: (
            out["compile_seconds"][f"{n} compiled"] / (median[f"{n} eager"] - median[f"{n} compiled"])
            if median[f"{n} eager"] > median[f"{n} compiled"]
            else None
        )
        for n in names
    }
    return out


def print_comparison(title: str, result: dict[str, Any]) -> None:
    """One line per variant: step time, × the eager ERM step, memory, peak share, compile seconds."""
    median, memory = result["median_step_seconds"], result["memory_bytes"]
    base = next(iter(median))
    share = result.get("fraction_of_matmul_peak", {})
    print(f"\n{title} (mode {result['mode']}):")
    print(f"{'variant':28s} {'step':>10s} {'×' + base:>18s} {'memory MB':>10s} {'peak':>6s} {'compile':>9s}")
    for k in median:
        compile_s = result["compile_seconds"].get(k)
        print(
            f"{k:28s} {median[k] * 1e3:8.2f} ms {median[k] / median[base]:18.2f} {memory[k] / 2**20:10.1f} "
            f"{100 * share.get(k, math.nan):5.1f}% {'' if compile_s is None else f'{compile_s:8.1f}s'}"
        )
    for n, ratio in result["compiled_over_eager"].items():
        even = result["break_even_steps"][n]
        print(
            f"  {n}: compiled / eager {ratio:.2f}" + (f", pays off after {even:,.0f} steps" if even else "")
        )
    for how, ratios in result["over_erm"].items():
        print(f"  {how}: " + ", ".join(f"{n} / erm {r:.2f}" for n, r in ratios.items()))
