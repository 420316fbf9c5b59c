"""The Memformer reproduction suite: every reproduction config, 5 seeds, L = 1..4, timed.

Runs each config of ``CONFIGS`` with ``unrolled``'s experiment runner under each requested training protocol
(``fixed_batch``, what produced the published figures, and ``online``, our default), writes the run folders
under ``--out``, a side-by-side Markdown summary (paper vs ours, both protocols, held-out and in-sample), and
``benchmarks/results/reproduction_suite.json`` with the wall-clock time of every run. The target (issue 2):
the whole suite under one protocol finishes within 15 minutes on 2 CPU cores.

    python benchmarks/reproduction_suite.py                      # both protocols
    python benchmarks/reproduction_suite.py --protocols fixed_batch --workers 2
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
from unrolled.train.checkpoint import atomic_write_json, atomic_write_text

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
    "memformer_cgd_noniso_scalar",
    "memformer_cgd_noniso_precond",
    "memformer_lfom_noniso",
    "memformer_lfom_iso",
]
TARGET_SECONDS = 15 * 60


def _fmt(values: list[float] | None) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "—"


def summary_markdown(runs: dict[str, dict[str, dict]]) -> str:
    """One table per config: paper, ours held-out per protocol, ours in-sample (fixed batch)."""
    lines = []
    for name in CONFIGS:
        if name not in runs:
            continue
        by_protocol = runs[name]
        first = next(iter(by_protocol.values()))
        lines += [
            f"### {name}",
            "",
            "| method | paper | "
            + " | ".join(
                [f"ours, {p}, held-out" for p in by_protocol]
                + (["ours, fixed_batch, in-sample"] if "fixed_batch" in by_protocol else [])
            )
            + " |",
        ]
        lines.append("|---|---|" + "---|" * (len(by_protocol) + ("fixed_batch" in by_protocol)))
        for method, entry in first["methods"].items():
            cells = [_fmt(first["published"].get(method))]
            for res in by_protocol.values():
                cells.append(_fmt(res["methods"][method]["test"]["log_loss_mean"]))
            if "fixed_batch" in by_protocol:
                cells.append(_fmt(by_protocol["fixed_batch"]["methods"][method]["train"]["log_loss_mean"]))
            lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--protocols", nargs="+", default=["fixed_batch", "online"])
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument("--out", default=str(ROOT / "runs" / "repro"))
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "reproduction_suite.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    timings: dict[str, dict[str, float]] = {}
    runs: dict[str, dict[str, dict]] = {}
    resumed: list[str] = []  # runs that already had finished units: their time is not a measurement
    for protocol in args.protocols:
        t_protocol = time.perf_counter()
        for name in args.configs:
            cfg = load_config(ROOT / "configs" / f"{name}.yaml", [f"train.protocol={protocol}"])
            out = Path(args.out) / protocol / name
            if (out / "units").is_dir():
                resumed.append(f"{protocol}/{name}")
            t0 = time.perf_counter()
            results = run_experiment(cfg, out, resume=True, workers=args.workers, log=print)
            seconds = time.perf_counter() - t0
            timings.setdefault(protocol, {})[name] = seconds
            runs.setdefault(name, {})[protocol] = results
            print(f"{protocol:12s} {name:32s} {seconds:7.1f} s  -> {out}")
        timings[protocol]["total"] = time.perf_counter() - t_protocol
        print(f"{protocol}: whole suite {timings[protocol]['total']:.1f} s (target {TARGET_SECONDS} s)")

    summary = summary_markdown(runs)
    atomic_write_text(Path(args.out) / "summary.md", summary + "\n")
    print()
    print(summary)
    record = {
        "provenance": provenance(__file__, MEASURED),
        "target_seconds_per_protocol": TARGET_SECONDS,
        "seconds": timings,
        "passed": {p: t["total"] <= TARGET_SECONDS for p, t in timings.items()},
        "note": "wall-clock seconds; a config already finished in --out counts only the time to re-report it",
        "resumed": resumed,
        "workers": args.workers,
        "configs": args.configs,
        "seeds": 5,
        "depths": [1, 2, 3, 4],
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, record)
    print(json.dumps(record["seconds"], indent=2))


if __name__ == "__main__":
    main()
