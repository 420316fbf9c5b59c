"""Ensembles (issue 30): one training step of S members in lockstep against one member's step, side by side.

For the LFOM Memformer and the linear transformer (4 layers, ERM and constrained, Adam) at (d, n, B) =
(5, 20, 1000) and (20, 200, 1000): the step of one model alone (eager and compiled, ``train.compile``), and of
an ensemble of S = 1, 5, 20 members (``unrolled.train.ensemble``; eager and compiled), each member on its own
batch. Reported: median step times, the ensemble's step over one member's (the issue's bar: S = 5 at
(5, 20, 1000) within 1.5× the faster single step), and the time per member against training the S units one
after another.

    python benchmarks/bench_ensemble.py                  # writes benchmarks/results/bench_ensemble.json
    python benchmarks/bench_ensemble.py --quick
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from _harness import compare_steps, environment, load_average, provenance, write_json
from unrolled.constrained import ConstrainedObjective, DescentConstraints, Multipliers, Objective
from unrolled.models.memformer import LFOMMemformer, LinearTransformer
from unrolled.tasks.regression import RegressionConfig, RegressionTask
from unrolled.train.compiled import CompiledLoss, compile_function
from unrolled.train.ensemble import Ensemble, stack_inputs
from unrolled.trajectory import squared_error

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ("unrolled.train.ensemble", "unrolled.train.compiled", "unrolled.models.linear_attention",
            "unrolled.models.memformer", "unrolled.constrained", "unrolled.trajectory")  # fmt: skip
MODELS = {"lfom": LFOMMemformer, "linear_transformer": LinearTransformer}


def objective(kind: str, depth: int) -> Objective:
    if kind == "erm":
        return Objective(squared_error)
    mult = Multipliers(depth, 0.1)
    mult.value.fill_(0.5)  # every layer weighs: the most expensive case
    return ConstrainedObjective(DescentConstraints(0.1), mult, squared_error)


def single_step(model_cls: type, d: int, n: int, B: int, kind: str, compiled: bool):
    task = RegressionTask(RegressionConfig(d=d, n=n, covariance="isotropic"), 0)
    model = model_cls(d=d, n=n, layers=4, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    batch = task.sample(B, torch.Generator().manual_seed(0))
    obj = objective(kind, 4)
    forward = CompiledLoss(model, obj) if compiled else (lambda x, y: obj.loss(model(x), y))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss, _ = forward(batch, batch.y_query)
        loss.backward()
        opt.step()

    return step, sum(p.numel() * 16 for p in model.parameters())


def ensemble_step(model_cls: type, d: int, n: int, B: int, kind: str, S: int, compiled: bool):
    task = RegressionTask(RegressionConfig(d=d, n=n, covariance="isotropic"), 0)
    models = [model_cls(d=d, n=n, layers=4, generator=torch.Generator().manual_seed(i)) for i in range(S)]
    ens = Ensemble(models)
    params = [ens.params[k] for k in ens.trainable]
    opt = torch.optim.Adam(params, lr=0.01)
    batches = [task.sample(B, torch.Generator().manual_seed(i)) for i in range(S)]
    objectives = [objective(kind, 4) for _ in range(S)]
    stacked, rebuild = stack_inputs(batches)
    target = torch.stack([b.y_query for b in batches])
    fn = ens.step_function(objectives[0], rebuild)
    if compiled:
        fn = compile_function(fn)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        per = [o.step_tensors(target[i]) for i, o in enumerate(objectives)]
        tensors = {k: torch.stack([t[k] for t in per]) for k in per[0]}
        losses, layer_losses = fn(ens.params, ens.buffers, stacked, target, tensors)
        for i, o in enumerate(objectives):
            o.record(layer_losses[i])
        losses.sum().backward()
        opt.step()

    return step, sum(p.numel() * 16 for p in params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="one size, S = 1 and 5, few repeats")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_ensemble.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = [(5, 20, 1000)] if args.quick else [(5, 20, 1000), (20, 200, 1000)]
    members = (1, 5) if args.quick else (1, 5, 20)
    repeats = 3 if args.quick else args.repeats
    record: dict[str, object] = {
        "environment": environment("cpu"),
        "load_before": load_average(),
        "cases": [],
    }
    print(f"{'case':44s} {'single eager':>12s} {'single comp.':>12s} {'S':>3s} {'ens. eager':>11s} "
          f"{'ens. comp.':>11s} {'best ens / best single':>22s} {'per member vs alone':>20s}")  # fmt: skip
    for d, n, B in sizes:
        for name, cls in MODELS.items():
            for kind in ("erm", "constrained"):
                steps, static = {}, {}
                for compiled in (False, True):
                    key = f"single {'compiled' if compiled else 'eager'}"
                    steps[key], static[key] = single_step(cls, d, n, B, kind, compiled)
                for S in members:
                    if S == 20 and (d, n) != (5, 20):
                        continue  # 20 members of 200-token prompts at B = 1000: beyond this machine's memory budget
                    for compiled in (False, True):
                        key = f"ensemble {S} {'compiled' if compiled else 'eager'}"
                        steps[key], static[key] = ensemble_step(cls, d, n, B, kind, S, compiled)
                median, _, memory = compare_steps(steps, static, repeats, "cpu", warmup=3)
                single = min(median["single eager"], median["single compiled"])
                case = {"model": name, "objective": kind, "d": d, "n": n, "B": B, "median_step_seconds": median,
                        "memory_bytes": memory, "ratios": {}}  # fmt: skip
                for S in members:
                    keys = [k for k in median if k.startswith(f"ensemble {S} ")]
                    if not keys:
                        continue
                    best = min(median[k] for k in keys)
                    case["ratios"][str(S)] = {  # type: ignore[index]
                        "ensemble_over_single": best / single,
                        "per_member_over_alone": best / S / single,
                    }
                    print(f"{name + ' ' + kind + f' ({d}, {n}, {B})':44s} {median['single eager'] * 1e3:10.2f}ms "
                          f"{median['single compiled'] * 1e3:10.2f}ms {S:3d} {median[f'ensemble {S} eager'] * 1e3:9.2f}ms "
                          f"{median[f'ensemble {S} compiled'] * 1e3:9.2f}ms {best / single:22.2f} {best / S / single:20.2f}")  # fmt: skip
                record["cases"].append(case)  # type: ignore[union-attr]
    target = next(c for c in record["cases"] if c["model"] == "lfom" and c["objective"] == "erm")  # type: ignore[union-attr]
    record["bar"] = {"lfom_erm_5_20_1000_five_members_over_one": target["ratios"]["5"]["ensemble_over_single"],
                     "target": 1.5}  # fmt: skip
    record["load_after"] = load_average()
    record["provenance"] = provenance(__file__, MEASURED)
    print(
        f"bar: 5 members at (5, 20, 1000), LFOM ERM: {record['bar']['lfom_erm_5_20_1000_five_members_over_one']:.2f}× "  # type: ignore[index]
        "one member's step (target ≤ 1.5)"
    )
    print(f"wrote {write_json(record, Path(args.out))}")


if __name__ == "__main__":
    main()
