"""The issue-4 Memformer suite: GD++, many heads, mixtures of experts, learnable LFOMs, depth, constrained.

Runs every config of ``CONFIGS`` as written (5 seeds each) with ``unrolled``'s experiment runner, writes the
run folders under ``--out`` and ``benchmarks/results/memformer_suite.json`` with the wall-clock time of
every run and of the whole suite. The target: the whole suite within 20 minutes on 2 CPU cores.

    python benchmarks/memformer_suite.py --workers 2
    python benchmarks/memformer_suite.py --only moe_variance_shift lfom_vs_cg
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from _harness import provenance
from unrolled.experiments import load_config, run_experiment
from unrolled.train.checkpoint import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
#: The code the suite's time depends on (recorded as hashes; see _harness.provenance).
#: The modules the regression family runs (``unrolled.models.__init__``: that package's own file only), not every
#: model of the library: a change to the video, text or in-context learners does not stale these suites.
MEASURED = ("unrolled.models.__init__", "unrolled.models.linear_attention", "unrolled.models.memformer",
            "unrolled.models.mixture", "unrolled.train.loop", "unrolled.train.compiled", "unrolled.train.config",
            "unrolled.train.checkpoint", "unrolled.constrained", "unrolled.solvers.__init__",
            "unrolled.solvers.classical", "unrolled.solvers.tuning", "unrolled.trajectory",
            "unrolled.experiments.regression", "unrolled.tasks.regression")  # fmt: skip
CONFIGS = [
    "memformer_gdpp_noniso",
    "memformer_gdpp_iso",
    "memformer_multihead_b10",
    "moe_variance_shift",
    "moe_gmm_shift",
    "lfom_vs_cg",
    "memformer_depth",
    "memformer_constrained_shift",
    "memformer_scale_free_shift",
]
TARGET_SECONDS = 20 * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "memformer_suite"))
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--only", nargs="*", help="run only these configs")
    parser.add_argument("--resume", action="store_true", help="continue interrupted runs in --out")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "memformer_suite.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.only or CONFIGS
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {CONFIGS}")
    seconds: dict[str, float] = {}
    compute: dict[str, float] = {}  # sum of the units' own times: does not shrink when a run is resumed
    t_all = time.perf_counter()
    for name in names:
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        t0 = time.perf_counter()
        run_experiment(cfg, Path(args.out) / name, resume=args.resume, workers=args.workers, log=print)
        seconds[name] = time.perf_counter() - t0
        results = json.loads((Path(args.out) / name / "results.json").read_text())
        compute[name] = results["timing"]["compute_seconds"]
        print(f"{name}: {seconds[name]:.0f} s wall, {compute[name]:.0f} s of unit compute", flush=True)
    total = time.perf_counter() - t_all
    record = {
        "benchmark": "memformer_suite",
        "provenance": provenance(__file__, MEASURED),
        "configs": names,
        "seconds_per_config": seconds,
        "unit_compute_seconds_per_config": compute,
        "unit_compute_seconds_total": sum(compute.values()),
        "total_seconds": total,
        "target_seconds": TARGET_SECONDS,
        "within_target": total <= TARGET_SECONDS if names == CONFIGS else None,
        "workers": args.workers,
        "resumed": args.resume,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
    }
    atomic_write_json(Path(args.json), record)
    print(f"total {total:.0f} s (target {TARGET_SECONDS} s) -> {args.json}")


if __name__ == "__main__":
    main()
