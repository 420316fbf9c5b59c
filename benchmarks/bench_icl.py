"""Softmax in-context learners: training steps eager and compiled, ERM against layerwise objectives, and the
baselines at every prompt length batched against per-prompt loops (issue 28).

1. One training step (forward, objective, backward, Adam) of the GPT-2 and UT learners of
   ``configs/icl_gpt2_study.yaml`` / ``icl_ut_study.yaml`` (64 wide, 6 layers, d = 5, 11 pairs, 64 prompts):
   ERM, constrained with every multiplier positive (every layer read out and back-propagated) and the
   early-exit loss, eager and compiled (``train.compile``), side by side (``_compiled.compiled_comparison``).
2. The step at 1 and 2 torch threads: whether two single-threaded workers beat one two-threaded process.
3. Least squares, Newton (16 iterations) and CG (6) on every prefix of 1,000 prompts, batched
   (``unrolled.solvers.prefix``), against the same computed per prompt and prefix in NumPy (Garg et al.'s
   ``LeastSquaresModel`` loops over prefixes and solves each batch with ``lstsq``; Fu et al. loop over
   prompts too), with their agreement.

    python benchmarks/bench_icl.py            # writes benchmarks/results/bench_icl.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from _compiled import compiled_comparison, matmul_peak_gflops, print_comparison
from _harness import (
    compare_steps,
    environment,
    load_average,
    measure,
    provenance,
    synchronizer,
    table,
    write_json,
)  # fmt: skip
from unrolled.constrained import ConstrainedObjective, DescentConstraints, Multipliers, Objective
from unrolled.constrained.config import EarlyExitConfig
from unrolled.constrained.early_exit import EarlyExitObjective
from unrolled.experiments import load_config
from unrolled.experiments.icl import build_learner
from unrolled.models.icl import Prompts, prompt_mse
from unrolled.solvers.prefix import IterativeNewton, PrefixCG, least_squares
from unrolled.tasks.regression import RegressionTask

ROOT = Path(__file__).resolve().parents[1]
#: The code whose speed this benchmark measures (recorded as hashes; see _harness.provenance).
MEASURED = (
    "unrolled.models.icl", "unrolled.models.unrolled_transformer", "unrolled.solvers.prefix",
    "unrolled.constrained", "unrolled.trajectory", "unrolled.train.compiled",
)  # fmt: skip


def objectives(depth: int) -> dict[str, object]:
    def constrained() -> Objective:
        mult = Multipliers(depth, 0.1)
        mult.value.fill_(0.5)  # every layer weighs: the most expensive case
        return ConstrainedObjective(DescentConstraints(0.1), mult, prompt_mse)

    return {
        "erm": lambda: Objective(prompt_mse),
        "constrained": constrained,
        "early exit": lambda: EarlyExitObjective(EarlyExitConfig(), depth, 1000, prompt_mse),
    }


def numpy_loops(prompts: Prompts, newton_steps: int, cg_steps: int) -> dict[str, np.ndarray]:
    """The baselines per prompt and prefix, as the reference code computes them (plain loops)."""
    xs, ys = prompts.xs.double().numpy(), prompts.ys.double().numpy()
    B, N, d = xs.shape
    out = {k: np.zeros((B, N)) for k in ("least_squares", "newton", "cg")}
    for b in range(B):
        for i in range(1, N):
            X, y, x = xs[b, :i], ys[b, :i], xs[b, i]
            out["least_squares"][b, i] = x @ np.linalg.lstsq(X, y, rcond=None)[0]
            S, r = X.T @ X, X.T @ y
            M = S.T / np.linalg.norm(S @ S.T)
            for _ in range(newton_steps):
                M = M @ (2 * np.eye(d) - S @ M)
            out["newton"][b, i] = x @ (M @ r)
            w, res = np.zeros(d), r.copy()
            p, rr = res.copy(), res @ res
            for _ in range(cg_steps):
                if np.sqrt(rr) <= 1e-10 * np.linalg.norm(r):  # converged: PrefixCG's stop
                    break
                Hp = S @ p
                pHp = p @ Hp
                if pHp <= 10 * np.finfo(float).eps * np.trace(S) * (p @ p):
                    break
                step = rr / pHp
                w, res = w + step * p, res - step * Hp
                rr_next = res @ res
                p, rr = res + (rr_next / rr) * p, rr_next
            out["cg"][b, i] = x @ w
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--prompts", type=int, default=1000, help="prompts for the baselines' timing")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_icl.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    peak = matmul_peak_gflops("cpu")
    record: dict[str, object] = {"environment": environment("cpu"), "load_before": load_average()}
    steps: dict[str, object] = {}
    threads: dict[str, object] = {}
    for config in ("icl_gpt2_study", "icl_ut_study"):
        cfg = load_config(config)
        method = cfg.methods[0]
        task = RegressionTask(cfg.task.regression(), 0)
        prompts = Prompts.from_batch(task.sample(cfg.train.batch_size, torch.Generator().manual_seed(0)))
        result = compiled_comparison(
            lambda method=method, cfg=cfg: build_learner(method, cfg, 0),
            objectives(method.depth),
            prompts, prompts.ys, lr=cfg.train.lr, repeats=args.repeats, device="cpu", peak_gflops=peak,
        )  # fmt: skip
        steps[method.kind] = result
        print_comparison(
            f"{method.kind} learner {method.width}×{method.depth}, batch {cfg.train.batch_size}", result
        )
        per_thread = {}
        for n in (1, 2):
            torch.set_num_threads(n)
            model = build_learner(method, cfg, 0)
            opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)

            def step(model=model, opt=opt, prompts=prompts) -> None:
                opt.zero_grad(set_to_none=True)
                prompt_mse(model(prompts).prediction(), prompts.ys).mean().backward()
                opt.step()

            median, _, _ = compare_steps({f"{n} thread(s)": step}, {f"{n} thread(s)": 0}, args.repeats, "cpu")
            per_thread[n] = median[f"{n} thread(s)"]
        torch.set_num_threads(1)
        threads[method.kind] = {
            "step_seconds": per_thread,
            "two_workers_over_one_process": 2 * per_thread[2] / per_thread[1],  # > 1: two workers do more
        }
        print(f"{method.kind}: 1 thread {per_thread[1] * 1e3:.1f} ms, 2 threads {per_thread[2] * 1e3:.1f} ms a step: "
              f"two 1-thread workers do {2 * per_thread[2] / per_thread[1]:.2f}× the steps of one 2-thread process")  # fmt: skip
    record["training_steps"] = steps
    record["threads"] = threads

    cfg = load_config("icl_gpt2_study")
    task = RegressionTask(cfg.task.regression(), 0)
    prompts = Prompts.from_batch(task.sample(args.prompts, torch.Generator().manual_seed(1), torch.float64))
    newton_k, cg_k = 16, 6
    batched = {
        "least_squares": lambda: least_squares(prompts),
        "newton": lambda: IterativeNewton()(prompts, newton_k, keep=[newton_k]),
        "cg": lambda: PrefixCG()(prompts, cg_k, keep=[cg_k]),
    }
    loops = numpy_loops(prompts, newton_k, cg_k)
    timed = measure(
        {**batched, "numpy loops": lambda: numpy_loops(prompts, newton_k, cg_k)},
        repeats=args.repeats, warmup=1, min_time=0.2, sync=synchronizer("cpu"), budget_s=30.0,
    )  # fmt: skip
    rows, solvers = [], {}
    for name, fn in batched.items():
        t = timed[name]["median_s"]
        diff = float(np.abs(fn().prediction().numpy() - loops[name]).max())
        solvers[name] = {"batched_seconds": t, "max_abs_diff_vs_loop": diff}
        rows.append([name, f"{t * 1e3:.1f} ms", f"{diff:.1e}"])
    t_loop = timed["numpy loops"]["median_s"]
    total = sum(v["batched_seconds"] for v in solvers.values())
    solvers["numpy_loops_seconds_all_three"] = t_loop
    solvers["loops_over_batched"] = t_loop / total
    print(
        f"\nbaselines on every prefix of {args.prompts} prompts of {prompts.points} pairs, d = {prompts.d}:"
    )
    print(table(["solver", "batched", "max |batched − loop|"], rows))
    print(
        f"NumPy loops (all three): {t_loop:.2f} s; batched: {total * 1e3:.1f} ms; {t_loop / total:.0f}× faster"
    )
    record["baselines"] = solvers
    record["load_after"] = load_average()
    record["provenance"] = provenance(__file__, MEASURED)
    print(f"wrote {write_json(record, Path(args.out))}")


if __name__ == "__main__":
    main()
