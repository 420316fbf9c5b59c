"""Batched conjugate gradient vs a per-prompt NumPy loop.

What is measured: the time to run ``--steps`` (4) steps of conjugate gradient on every prompt of a batch of
``--batch`` (1000) in-context regression prompts (d = 5, n = 20, the rotated covariance of the published
figures), two ways, in the same process:

* ``unrolled.solvers.ConjugateGradient()(batch, steps)``: all prompts at once in torch tensors, timed on a
  float64 batch and on a float32 batch (the batch is built and cast before timing);
* an independent per-prompt NumPy implementation written here: for each prompt, Fletcher–Reeves nonlinear
  CG with exact line search on f(w) = ½‖Xw − y‖² from w = 0 (g = Xᵀ(Xw − y), p = −g,
  α = −(g·p) / (pᵀHp) with H = XᵀX, β = ‖g_new‖² / ‖g‖²), a Python loop over the prompts in float64
  (the inputs are converted to NumPy arrays before timing; forming H is part of the timed loop, as it is
  for the torch solver).

Before timing, the iterates w_0..w_K of the float64 torch solver and the NumPy loop are compared: the
largest max |difference| / max |w_NumPy| over prompts and steps must be <= 1e-8. The float32 iterates'
difference is recorded too (no target: float32 rounding).

Each figure is the median over ``--repeats`` repeats after warm-up, the three timed in alternation (see
``_harness.py``); the ratios are NumPy-loop time / torch time.

Target: the batched solver, in float32 (the dtype every experiment config runs in), is at least 100x faster
than the loop, and the float64 iterates agree with it. ``passed`` in the JSON is both. The float64 ratio is
reported beside it, with its own ``passed_float64``, but is not part of ``passed``.

Run from the repository root: ``python benchmarks/bench_cg.py`` (``--quick`` for fewer repeats).
Writes ``benchmarks/results/bench_cg.json``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _harness import (
    RESULTS_DIR,
    environment,
    fmt_seconds,
    load_average,
    measure,
    provenance,
    resolve_device,
    synchronizer,
    table,
    write_json,
)
from unrolled.solvers import ConjugateGradient
from unrolled.tasks import RegressionTask
from unrolled.tasks.regression import RegressionConfig

MIN_RATIO = 100.0
CHECK_RTOL = 1e-8


def numpy_cg(X: np.ndarray, y: np.ndarray, steps: int) -> np.ndarray:
    """Per-prompt Fletcher–Reeves CG with exact line search on ½‖Xw − y‖²: iterates ``[B, steps+1, d]``."""
    B, _, d = X.shape
    out = np.zeros((B, steps + 1, d), dtype=X.dtype)
    for i in range(B):
        Xi, yi = X[i], y[i]
        H = Xi.T @ Xi
        w = np.zeros(d, dtype=X.dtype)
        g = Xi.T @ (Xi @ w - yi)
        p = -g
        for k in range(steps):
            curvature = p @ (H @ p)
            alpha = -(g @ p) / curvature if curvature > 0 else 0.0
            w = w + alpha * p
            g_new = Xi.T @ (Xi @ w - yi)
            gg = g @ g
            beta = (g_new @ g_new) / gg if gg > 0 else 0.0
            p = -g_new + beta * p
            g = g_new
            out[i, k + 1] = w
    return out


def iterate_difference(torch_iterates: torch.Tensor, reference: np.ndarray) -> dict[str, float]:
    """max |Δ| / max |w_ref| per (prompt, step), maximised; plus the largest absolute difference."""
    ours = torch_iterates.detach().cpu().double().numpy().transpose(1, 0, 2)  # [B, K+1, d]
    diff = np.abs(ours - reference).max(axis=-1)  # [B, K+1]
    scale = np.abs(reference).max(axis=-1)
    rel = np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), diff)
    return {"max_abs_diff": float(diff.max()), "max_rel_diff": float(rel.max())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 15, quick 5)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls (default 3, quick 1)")
    p.add_argument("--min-time", type=float, default=None, help="min seconds per repeat (default 0.2)")
    p.add_argument("--batch", type=int, default=1000, help="prompts B (default 1000)")
    p.add_argument("--steps", type=int, default=4, help="CG steps (default 4)")
    p.add_argument("--device", default="cpu", help="device of the torch solver: cpu (default) or cuda[:i]")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as the CLI runs)")
    p.add_argument("--out", default=RESULTS_DIR / "bench_cg.json", help="JSON output path")
    p.add_argument("--quick", action="store_true", help="fewer repeats and warm-up, shorter repeats")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (5 if args.quick else 15)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.min_time = args.min_time if args.min_time is not None else (0.05 if args.quick else 0.2)
    if args.repeats < 1 or args.batch < 1 or args.steps < 1:
        p.error("--repeats, --batch and --steps must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = resolve_device(args.device)
    sync = synchronizer(args.device)
    t_start = time.perf_counter()

    d, n = 5, 20
    task = RegressionTask(RegressionConfig(d=d, n=n, covariance="rotated"), seed=0)
    batch64 = task.sample(args.batch, torch.Generator().manual_seed(0), dtype=torch.float64)
    X_np, y_np = batch64.X.numpy().copy(), batch64.y.numpy().copy()
    batches = {
        "float64": batch64.to(device=args.device),
        "float32": batch64.to(device=args.device, dtype=torch.float32),
    }
    solver = ConjugateGradient()

    # correctness first: the same iterates as the independent NumPy loop
    reference = numpy_cg(X_np, y_np, args.steps)
    agreement = {}
    for dtype, batch in batches.items():
        traj = solver(batch, args.steps)
        assert traj.final.shape == (args.batch, d)
        agreement[dtype] = iterate_difference(torch.stack(traj.states), reference)
    agreement["float64"]["rtol"] = CHECK_RTOL
    agreement["float64"]["ok"] = agreement["float64"]["max_rel_diff"] <= CHECK_RTOL
    agree = agreement["float64"]["ok"]

    fns = {
        "torch_float64": lambda: solver(batches["float64"], args.steps).final,
        "torch_float32": lambda: solver(batches["float32"], args.steps).final,
        "numpy_loop": lambda: numpy_cg(X_np, y_np, args.steps),
    }
    load_before = load_average()
    with torch.no_grad():
        timings = measure(fns, repeats=args.repeats, warmup=args.warmup, min_time=args.min_time, sync=sync)
    load_after = load_average()
    loop = timings["numpy_loop"]["median_s"]
    ratios = {dtype: loop / timings[f"torch_{dtype}"]["median_s"] for dtype in ("float64", "float32")}
    passed_dtype = {dtype: r >= MIN_RATIO for dtype, r in ratios.items()}
    passed = passed_dtype["float32"] and agree

    env = environment(args.device)
    rows = [
        [
            f"torch batched {dtype}",
            fmt_seconds(timings[f"torch_{dtype}"]["median_s"]),
            fmt_seconds(timings[f"torch_{dtype}"]["median_s"] / args.batch),
            f"{ratios[dtype]:.1f}x",
            f"{agreement[dtype]['max_rel_diff']:.1e}",
        ]
        for dtype in ("float64", "float32")
    ]
    rows.append(
        ["numpy per-prompt loop float64", fmt_seconds(loop), fmt_seconds(loop / args.batch), "1.0x", "-"]
    )
    print(
        f"Conjugate gradient, B={args.batch}, d={d}, n={n}, {args.steps} steps; torch {env['torch']} on "
        f"{args.device}, {env['torch_threads']} threads; median of {args.repeats}"
    )
    print(table(["solver", "time (batch)", "per prompt", "loop/this", "rel diff vs loop"], rows))
    print()
    for dtype in ("float32", "float64"):
        verdict = "met" if passed_dtype[dtype] else "NOT met"
        role = "target" if dtype == "float32" else "reported (not the target)"
        print(f"{role} {dtype}: >= {MIN_RATIO:g}x faster than the loop -> {verdict} ({ratios[dtype]:.1f}x)")
    print(
        f"float64 iterates agree with the NumPy loop (rel <= {CHECK_RTOL:g}): {agree} "
        f"(max rel diff {agreement['float64']['max_rel_diff']:.2e}, "
        f"max abs diff {agreement['float64']['max_abs_diff']:.2e})"
    )
    print(f"load average before/after timing: {load_before} / {load_after}")
    print(f"passed: {passed}")

    result = {
        "benchmark": "bench_cg",
        "provenance": provenance(__file__, ("unrolled.solvers.classical", "unrolled.trajectory")),
        "description": "batched torch conjugate gradient vs a per-prompt NumPy Fletcher-Reeves CG loop",
        "environment": env,
        "settings": {
            "repeats": args.repeats,
            "warmup": args.warmup,
            "min_time_s": args.min_time,
            "batch_size": args.batch,
            "d": d,
            "n": n,
            "steps": args.steps,
            "device": args.device,
            "quick": args.quick,
            "task": "RegressionTask(RegressionConfig(d=5, n=20, covariance='rotated'), seed=0), "
            "sampled in float64 with torch.Generator().manual_seed(0)",
            "objective": "f(w) = 0.5 * ||Xw - y||^2 (ConjugateGradient's default objective='sum')",
            "check_rtol": CHECK_RTOL,
        },
        "targets": {"min_ratio_numpy_over_torch": MIN_RATIO, "iterates_rtol_float64": CHECK_RTOL},
        "timings": timings,
        "ratios_numpy_over_torch": ratios,
        "agreement": agreement,
        "load_average": {"before": load_before, "after": load_after},
        "passed_float64": passed_dtype["float64"],
        "passed_float32": passed_dtype["float32"],
        "iterates_agree": agree,
        "passed": passed,
        "total_seconds": time.perf_counter() - t_start,
    }
    path = write_json(result, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
