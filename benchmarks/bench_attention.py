"""Re-associated vs direct linear attention: the time of one training step.

What is measured: one training step -- ``zero_grad``, forward, ``loss = final_layer_mse(traj, y_query)``,
backward, Adam step -- of three models built by :func:`unrolled.experiments.regression.build_model`, each in both evaluation
orders of the attention (:mod:`unrolled.models.linear_attention`):

* ``reassociated`` (the default): S M V = Z W (Zᵀ M Z) P̃, O(n d²) time and memory per prompt;
* ``direct`` (the reference): build the ``[B, H, n+1, n]`` scores S, then S V, O(n² d).

Models (A = full, 1 head, ``--depth`` layers, 4 by default): the linear transformer with B = 0 (the
published configs), the linear transformer with B free (GD++), and the LFOM Memformer with B = 0.
Sizes (d, n) = (5, 20), (20, 200), (50, 2000), on isotropic regression prompts; the batch size of each size
is chosen so that the direct form's scores fit comfortably in 24 GiB (recorded in the JSON) and is the same
for both forms. Before timing, each case checks that both forms give the same forward trajectory (float32,
max |difference| / max |value| <= 1e-4 over all layers), on copies of the models with identical
parameters (the Memformer's memory weights Γ set near 1, since Γ = 0 at initialisation would make the
check vacuous).

Both forms of a case are timed in the same process, alternating repeats; each figure is the median over
``--repeats`` repeats after warm-up (see ``_harness.py``); a form whose repeats would take more than
``--budget`` seconds gets fewer, never fewer than 3. The ratio is direct time / re-associated time.

Targets: the re-associated form is no slower at the smallest size (ratio >= 1) and at least 10x faster at
the largest size, for every model; GD++ (B free) at least 10x faster at every size (issue 12); and both
forms agree. ``passed`` in the JSON is all of these.

The physical limit: each case also records the floating-point operations of a training step of each form
(counted from the contractions, forward × 3 for forward + backward), their ratio (the speed-up an equally
efficient implementation of both forms would show), and the achieved GFLOP/s against the machine's
measured float32 matmul GFLOP/s (a 1024² × 1024² product on the same threads).

Compiled steps (``train.compile``, ``benchmarks/_compiled.py``): for the linear transformer (B = 0) and the
LFOM Memformer at (d, n, B) = (5, 20, 1000) and (20, 200, 1000), re-associated form, eager ERM, compiled
ERM, eager constrained (every λ > 0, α = 0.1) and compiled constrained, with the compile cost and each
step's share of the matmul peak (matrix-product FLOPs counted by FlopCounterMode). ``--compile off`` skips.

Run from the repository root: ``python benchmarks/bench_attention.py`` (``--quick`` for fewer repeats).
Writes ``benchmarks/results/bench_attention.json``.
"""

from __future__ import annotations

import argparse
import copy
import math
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from _compiled import compiled_comparison, matmul_peak_gflops, print_comparison
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
from unrolled.constrained import ConstrainedObjective, DescentConstraints, Multipliers, Objective
from unrolled.experiments.regression import LearnedMethod, build_model
from unrolled.tasks import RegressionTask
from unrolled.tasks.regression import RegressionConfig
from unrolled.train.loop import final_layer_mse
from unrolled.trajectory import squared_error

#: The code whose speed this benchmark measures (recorded as hashes; see _harness.provenance).
MEASURED = ("unrolled.models.linear_attention", "unrolled.models.memformer", "unrolled.trajectory",
            "unrolled.train.loop", "unrolled.train.compiled", "unrolled.constrained")  # fmt: skip
FORMS = ("reassociated", "direct")
CHECK_RTOL = 1e-4
SMALLEST_MIN_RATIO = 1.0
LARGEST_MIN_RATIO = 10.0
LR = 1e-3


@dataclass(frozen=True)
class Size:
    d: int
    n: int
    batch: int  # prompts per step, the same for both forms


@dataclass(frozen=True)
class ModelSpec:
    label: str
    kind: str
    B: str


# Batch sizes: the direct form keeps one [B, H, n+1, n] float32 score tensor per layer for the backward
# pass (plus its gradient while that runs): at (50, 2000) and B = 8 that is 122 MiB per layer, ~1 GiB
# peak for 4 layers, far below 24 GiB. B = 8 rather than 16 at the largest size only to keep the run short
# on 2 cores: a direct step there takes seconds, and the ratio hardly depends on B.
SIZES = (Size(5, 20, 1000), Size(20, 200, 1000), Size(50, 2000, 8))
GDPP_MIN_RATIO = 10.0
GDPP = "linear_transformer B=free (GD++)"
MODELS = (
    ModelSpec("linear_transformer B=0", "linear_transformer", "zero"),
    ModelSpec("linear_transformer B=free (GD++)", "linear_transformer", "free"),
    ModelSpec("memformer_lfom B=0", "memformer_lfom", "zero"),
)


def method(spec: ModelSpec, attention: str) -> LearnedMethod:
    return LearnedMethod(name="bench", kind=spec.kind, A="full", B=spec.B, attention=attention)  # type: ignore[arg-type]


def build(spec: ModelSpec, attention: str, size: Size, depth: int, device: str) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(0)
    return build_model(method(spec, attention), size.d, size.n, depth, gen).to(device)


def check_agreement(models: dict[str, torch.nn.Module], batch: Any) -> dict[str, Any]:
    """Forward both forms on copies with identical parameters; max |diff| / max |value| over layers 1..L."""
    ref = copy.deepcopy(models["reassociated"])
    other = copy.deepcopy(models["direct"])
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for name, p in ref.named_parameters():
            if name == "gamma":  # Memformer memory weights: Γ = 0 at init would make both outputs = input
                noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
                p.copy_((1.0 + 0.1 * noise).to(p.dtype))
        other.load_state_dict(ref.state_dict())
        a = ref(batch).states[1:]
        b = other(batch).states[1:]
    diff = max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))
    scale = max(float(y.abs().max()) for y in b)
    rel = diff / scale if scale > 0 else diff
    return {
        "max_abs_diff": diff,
        "max_abs_value": scale,
        "rel_diff": rel,
        "rtol": CHECK_RTOL,
        "ok": rel <= CHECK_RTOL,
    }


def train_step_fn(model: torch.nn.Module, batch: Any) -> tuple[Any, dict[str, Any]]:
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    last: dict[str, Any] = {"steps": 0}

    def step() -> None:
        last["steps"] += 1
        opt.zero_grad(set_to_none=True)
        traj = model(batch)
        loss = final_layer_mse(traj, batch.y_query)
        loss.backward()
        opt.step()
        last["loss"] = loss.detach()  # read (and synchronised) only after timing; finiteness is recorded

    return step, last


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def step_flops(spec: ModelSpec, size: Size, depth: int, form: str, heads: int = 1) -> float:
    """Floating-point operations of one training step (forward × 3), counted from the contractions."""
    d, n, D, N = size.d, size.n, size.d + 1, size.n + 1
    if form == "direct":  # Z W, scores against the n sources, values, scores @ values
        per_prompt = 2 * heads * (N * D * D + N * n * D + n * D * D + N * n * D)
    elif spec.B == "free":  # Zᵀ Z, the [d, d] products forming G, applying G to every token
        per_prompt = 2 * (2 * N * D * D + 2 * heads * d**3 + d * d)
    else:  # label-only: Σ_j x_j y_j, the preconditioner, Δy
        per_prompt = 2 * (n * d + d * d + N * d)
    return 3.0 * depth * size.batch * per_prompt


COMPILED_SIZES = (Size(5, 20, 1000), Size(20, 200, 1000))
COMPILED_MODELS = (MODELS[0], MODELS[2])


def compiled_cases(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Eager vs compiled ERM and constrained steps (module docstring), re-associated form."""

    def constrained() -> Objective:
        objective = ConstrainedObjective(DescentConstraints(0.1), Multipliers(args.depth, 1.0), squared_error)
        objective.multipliers.value.fill_(0.5)  # every readout back-propagated
        return objective

    out = []
    for size in COMPILED_SIZES:
        task = RegressionTask(RegressionConfig(d=size.d, n=size.n, covariance="isotropic"), seed=0)
        batch = task.sample(size.batch, torch.Generator().manual_seed(0)).to(device=args.device)
        for spec in COMPILED_MODELS:
            print(f"  compiled: (d={size.d}, n={size.n}, B={size.batch}) {spec.label} ...", flush=True)
            result = compiled_comparison(
                lambda spec=spec, size=size: build(spec, "reassociated", size, args.depth, args.device),
                {"erm": lambda: Objective(squared_error), "constrained": constrained},
                batch, batch.y_query, lr=LR, repeats=max(args.repeats, 5), device=args.device,
                mode=args.compile, peak_gflops=args.peak_gflops,
            )  # fmt: skip
            print_comparison(f"{spec.label}, (d, n, B) = ({size.d}, {size.n}, {size.batch})", result)
            out.append({"model": spec.label, **asdict(size), **result})
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_case(spec: ModelSpec, size: Size, args: argparse.Namespace, sync: Any) -> dict[str, Any]:
    t_case = time.perf_counter()
    task = RegressionTask(RegressionConfig(d=size.d, n=size.n, covariance="isotropic"), seed=0)
    batch = task.sample(size.batch, torch.Generator().manual_seed(0)).to(device=args.device)
    models = {form: build(spec, form, size, args.depth, args.device) for form in FORMS}
    agreement = check_agreement(models, batch)
    check_s = time.perf_counter() - t_case
    steps, losses = {}, {}
    for form in FORMS:
        steps[form], losses[form] = train_step_fn(models[form], batch)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    load_before = load_average()
    timings = measure(
        steps,
        repeats=args.repeats,
        warmup=args.warmup,
        min_time=args.min_time,
        sync=sync,
        budget_s=args.budget,
        min_repeats=min(3, args.repeats),
    )
    ratio = timings["direct"]["median_s"] / timings["reassociated"]["median_s"]
    flops = {form: step_flops(spec, size, args.depth, form) for form in FORMS}
    gflops = {form: flops[form] / timings[form]["median_s"] / 1e9 for form in FORMS}
    scores_bytes = size.batch * 1 * (size.n + 1) * size.n * 4  # one head, float32
    out = {
        "model": spec.label,
        "kind": spec.kind,
        "B": spec.B,
        "d": size.d,
        "n": size.n,
        "batch_size": size.batch,
        "depth": args.depth,
        "timings": timings,
        "ratio_direct_over_reassociated": ratio,
        "step_flops": flops,
        "flop_ratio_direct_over_reassociated": flops["direct"] / flops["reassociated"],
        "achieved_gflops": gflops,
        "fraction_of_matmul_peak": {form: gflops[form] / args.peak_gflops for form in FORMS},
        "agreement": agreement,
        "steps_taken": {form: losses[form]["steps"] for form in FORMS},
        "final_loss": {form: _finite_or_none(float(losses[form]["loss"])) for form in FORMS},
        "loss_finite": all(math.isfinite(float(losses[form]["loss"])) for form in FORMS),
        "direct_scores_mib_per_layer": scores_bytes / 2**20,
        "process_peak_rss_mib_after_case": peak_rss_mib(),
        "load_average": {"before": load_before, "after": load_average()},
        "check_seconds": check_s,
        "case_seconds": time.perf_counter() - t_case,
    }
    if args.device.startswith("cuda"):
        out["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per form (default 7, quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps per form (default 2, quick 1)")
    p.add_argument("--min-time", type=float, default=None, help="min seconds per repeat (default 0.2)")
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of timed repeats per form and case; slower forms get fewer repeats, at least 3 "
        "(default 12, quick 4)",
    )
    p.add_argument("--depth", type=int, default=4, help="layers per model (default 4)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as the CLI runs)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "bench_attention.json", help="JSON output path")
    p.add_argument("--quick", action="store_true", help="fewer repeats and warm-up, shorter repeats")
    p.add_argument(
        "--compile", default="default",
        help="torch.compile mode of the compiled rows (default, reduce-overhead, max-autotune), or off",
    )  # fmt: skip
    args = p.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 7)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.min_time = args.min_time if args.min_time is not None else (0.05 if args.quick else 0.2)
    args.budget = args.budget if args.budget is not None else (4.0 if args.quick else 12.0)
    if args.repeats < 1 or args.depth < 1:
        p.error("--repeats and --depth must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = resolve_device(args.device)
    sync = synchronizer(args.device)

    args.peak_gflops = matmul_peak_gflops(args.device)
    print(f"  float32 matmul peak on {torch.get_num_threads()} thread(s): {args.peak_gflops:.1f} GFLOP/s")
    t_start = time.perf_counter()
    cases: list[dict[str, Any]] = []
    for size in SIZES:
        for spec in MODELS:
            print(f"  (d={size.d}, n={size.n}, B={size.batch}) {spec.label} ...", flush=True)
            cases.append(run_case(spec, size, args, sync))
            print(f"    done in {cases[-1]['case_seconds']:.1f} s", flush=True)

    compiled = compiled_cases(args) if args.compile != "off" else []

    smallest, largest = SIZES[0], SIZES[-1]
    small = [c for c in cases if (c["d"], c["n"]) == (smallest.d, smallest.n)]
    large = [c for c in cases if (c["d"], c["n"]) == (largest.d, largest.n)]
    passed_small = all(c["ratio_direct_over_reassociated"] >= SMALLEST_MIN_RATIO for c in small)
    passed_large = all(c["ratio_direct_over_reassociated"] >= LARGEST_MIN_RATIO for c in large)
    agree = all(c["agreement"]["ok"] for c in cases)
    gdpp = [c for c in cases if c["model"] == GDPP]
    passed_gdpp = all(c["ratio_direct_over_reassociated"] >= GDPP_MIN_RATIO for c in gdpp)
    passed = passed_small and passed_large and passed_gdpp and agree

    def ratio(group: list[dict[str, Any]], label: str) -> float:
        return next(c["ratio_direct_over_reassociated"] for c in group if c["model"] == label)

    by_model: dict[str, dict[str, Any]] = {
        spec.label: {"ratio_smallest": ratio(small, spec.label), "ratio_largest": ratio(large, spec.label)}
        for spec in MODELS
    }
    for v in by_model.values():
        v["passed"] = v["ratio_smallest"] >= SMALLEST_MIN_RATIO and v["ratio_largest"] >= LARGEST_MIN_RATIO

    rows = []
    for c in cases:
        t = c["timings"]
        rows.append(
            [
                c["model"],
                f"({c['d']}, {c['n']})",
                c["batch_size"],
                fmt_seconds(t["reassociated"]["median_s"]),
                fmt_seconds(t["direct"]["median_s"]),
                f"{c['ratio_direct_over_reassociated']:.2f}x",
                f"{c['flop_ratio_direct_over_reassociated']:.1f}x",
                f"{c['achieved_gflops']['reassociated']:.1f} / {c['achieved_gflops']['direct']:.1f}",
                f"{t['reassociated']['repeats']}/{t['direct']['repeats']}",
                f"{c['agreement']['rel_diff']:.1e}" + ("" if c["agreement"]["ok"] else " FAIL"),
            ]
        )
    env = environment(args.device)
    print()
    print(
        f"Training step (zero_grad, forward, final-layer MSE, backward, Adam), depth {args.depth}, "
        f"{args.device}, torch {env['torch']}, {env['torch_threads']} threads; median of up to {args.repeats} "
        f"repeats (at least 3; see 'repeats' in the JSON)"
    )
    print(
        table(
            [
                "model",
                "(d, n)",
                "B",
                "reassociated",
                "direct",
                "direct/reassoc",
                "FLOP ratio",
                "GFLOP/s reassoc / direct",
                "repeats",
                "fwd rel diff",
            ],
            rows,
        )
    )
    print()
    print(
        f"target smallest (d, n)=({smallest.d}, {smallest.n}): ratio >= {SMALLEST_MIN_RATIO:g} -> "
        f"{'met' if passed_small else 'NOT met'} "
        f"(ratios {', '.join(format(c['ratio_direct_over_reassociated'], '.2f') for c in small)})"
    )
    print(
        f"target largest (d, n)=({largest.d}, {largest.n}): ratio >= {LARGEST_MIN_RATIO:g} -> "
        f"{'met' if passed_large else 'NOT met'} "
        f"(ratios {', '.join(format(c['ratio_direct_over_reassociated'], '.1f') for c in large)})"
    )
    for label, v in by_model.items():
        print(f"  {label}: {'met' if v['passed'] else 'NOT met'}")
    print(
        f"target GD++ at every size: ratio >= {GDPP_MIN_RATIO:g} -> {'met' if passed_gdpp else 'NOT met'} "
        + ", ".join(
            f"({c['d']}, {c['n']}): {c['ratio_direct_over_reassociated']:.1f}x "
            f"(FLOP ratio {c['flop_ratio_direct_over_reassociated']:.1f}x)"
            for c in gdpp
        )
    )
    print(f"matmul peak {args.peak_gflops:.1f} GFLOP/s; GD++ re-associated reaches "
          + ", ".join(f"{100 * c['fraction_of_matmul_peak']['reassociated']:.0f}%" for c in gdpp)
          + " of it")  # fmt: skip
    print(f"forms agree (rel <= {CHECK_RTOL:g}): {agree}")
    print(f"passed: {passed}")

    result = {
        "benchmark": "bench_attention",
        "description": "training step time, re-associated O(n d^2) vs direct O(n^2 d) linear attention",
        "environment": env,
        "settings": {
            "repeats": args.repeats,
            "warmup": args.warmup,
            "min_time_s": args.min_time,
            "budget_s_per_form_and_case": args.budget,
            "depth": args.depth,
            "device": args.device,
            "quick": args.quick,
            "optimizer": f"Adam(lr={LR})",
            "loss": "unrolled.train.loop.final_layer_mse",
            "task": "RegressionTask(RegressionConfig(d, n, covariance='isotropic'), seed=0), float32",
            "sizes": [asdict(s) for s in SIZES],
            "models": [asdict(m) for m in MODELS],
            "check_rtol": CHECK_RTOL,
        },
        "targets": {
            "smallest_size": [smallest.d, smallest.n],
            "smallest_min_ratio": SMALLEST_MIN_RATIO,
            "largest_size": [largest.d, largest.n],
            "largest_min_ratio": LARGEST_MIN_RATIO,
            "gdpp_every_size_min_ratio": GDPP_MIN_RATIO,
        },
        "provenance": provenance(__file__, MEASURED),
        "matmul_peak_gflops": args.peak_gflops,
        "cases": cases,
        "compiled": compiled,
        "compiled_no_slower": all(r <= 1.0 for c in compiled for r in c["compiled_over_eager"].values()),
        "by_model": by_model,
        "passed_smallest": passed_small,
        "passed_largest": passed_large,
        "passed_gdpp_every_size": passed_gdpp,
        "forms_agree": agree,
        "passed": passed,
        "total_seconds": time.perf_counter() - t_start,
    }
    path = write_json(result, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
