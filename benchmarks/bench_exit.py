"""Early exit (issue 31): does skipping layers save the time it should?

For models of the sizes the studies use (untrained weights: time does not depend on them), on one batch each:
the model's own forward (all layers, the final readout) against :func:`unrolled.exits.run_with_exit` with

* every layer (``FixedDepth(L)``): the cost of stepping layer by layer instead of the forward;
* half the layers (``FixedDepth(L/2)``): the ideal ratio is 1/2;
* a rule that reads every layer and stops about half the samples at each layer (``SmallStep`` or ``Patience``
  at a threshold set from the batch itself): per-layer readouts and shrinking batches.

Reported: median seconds, the ratio to the forward, the mean layers run, and the overhead (ratio over the ideal
``mean layers / L``). Times alternate between the variants (``_harness.measure``).

    python benchmarks/bench_exit.py            # writes benchmarks/results/bench_exit.json
    python benchmarks/bench_exit.py --quick
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from _harness import environment, load_average, measure, provenance, synchronizer, write_json
from unrolled.exits import FixedDepth, Patience, SmallStep, layer_predictions, run_with_exit, stepper_for
from unrolled.models.denoisers import VideoDenoiser
from unrolled.models.icl import GPT2Learner, Prompts
from unrolled.models.memformer import LFOMMemformer
from unrolled.models.text_classifier import UTTextClassifier
from unrolled.tasks.regression import RegressionConfig, RegressionTask

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ("unrolled.exits", "unrolled.models.icl", "unrolled.models.denoisers", "unrolled.models.memformer",
            "unrolled.models.linear_attention", "unrolled.models.unrolled_transformer",
            "unrolled.models.text_classifier", "unrolled.models.hf")  # fmt: skip


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def cases(quick: bool) -> dict[str, tuple[torch.nn.Module, Any, str]]:
    """name -> (model, one batch, kind of prediction: 'reg' or 'cls')."""
    g = _gen()
    xs = torch.randn(1000, 11, 5, generator=g)
    w = torch.randn(1000, 5, generator=g)
    prompts = Prompts(xs, (xs @ w.unsqueeze(-1)).squeeze(-1), w)
    # fmt: off
    out: dict[str, tuple[torch.nn.Module, Any, str]] = {
        "gpt2 learner 64x6, 1000 prompts of 11 pairs": (GPT2Learner(5, 11, 64, 6, 2, seed=0), prompts, "reg"),
        "LFOM Memformer L=4, (5, 20, 1000)": (
            LFOMMemformer(5, 20, 4, gamma_init=0.5, generator=_gen()),
            RegressionTask(RegressionConfig(d=5, n=20, covariance="isotropic"), 0).sample(1000, _gen()),
            "reg",
        ),
        "UT video denoiser 64x6, 32 clips 8x32x32": (
            VideoDenoiser("ut", 8, 1, 32, 32, (2, 8, 8), 64, 6, 4, init_std=0.2, generator=_gen()),
            torch.rand(32, 8, 1, 32, 32, generator=_gen()),
            "reg",
        ),
        "UT text classifier 128x6, 16 x 128 tokens": (
            UTTextClassifier(30522, 2, 128, 6, 4, 128, embeddings="scratch", init_std=0.3, generator=_gen()),
            {"input_ids": torch.randint(1, 30522, (16, 128), generator=_gen()),
             "attention_mask": torch.ones(16, 128, dtype=torch.long)},
            "cls",
        ),
    }
    # fmt: on
    if not quick:
        try:
            import transformers

            from unrolled.models.hf import EncoderSolver

            torch.manual_seed(0)
            config = transformers.BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                             intermediate_size=1536)  # all-MiniLM-L6-v2's shape  # fmt: skip
            out["MiniLM-shaped BERT 384x6, 16 x 128 tokens"] = (
                EncoderSolver(transformers.BertModel(config), num_labels=2, generator=_gen()),
                {"input_ids": torch.randint(1, 30522, (16, 128), generator=_gen()),
                 "attention_mask": torch.ones(16, 128, dtype=torch.long)},
                "cls",
            )  # fmt: skip
        except ImportError:
            print("transformers is missing: the BERT case is skipped")
    return out


def half_rule(model: torch.nn.Module, inputs: Any, kind: str) -> Any:
    """A rule that reads every layer and stops roughly half of the remaining samples at each layer."""
    predictions = layer_predictions(model, inputs)
    if kind == "cls":
        return Patience(patience=1)
    flat = predictions.reshape(predictions.shape[0], predictions.shape[1], -1)
    steps = (flat[2:] - flat[1:-1]).norm(dim=-1) / flat[2:].norm(dim=-1).clamp_min(1e-12)
    return SmallStep(tol=float(steps.median()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_exit.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    record: dict[str, Any] = {"environment": environment("cpu"), "load_before": load_average(), "cases": []}
    repeats = 3 if args.quick else args.repeats
    print(f"{'case':46s} {'variant':28s} {'median':>10s} {'× forward':>9s} {'layers':>7s} {'overhead':>8s}")
    for name, (model, inputs, kind) in cases(args.quick).items():
        model.eval()
        L = stepper_for(model).depth
        rules = {"every layer": FixedDepth(layers=L), "half the layers": FixedDepth(layers=L // 2),
                 "data-dependent": half_rule(model, inputs, kind)}  # fmt: skip
        call: Callable[[], Any] = (lambda m=model, x=inputs: m(**x).prediction()) if isinstance(inputs, dict) else (
            lambda m=model, x=inputs: m(x).prediction())  # fmt: skip
        fns: dict[str, Callable[[], Any]] = {"forward": call}
        for label, rule in rules.items():
            fns[label] = lambda r=rule, m=model, x=inputs: run_with_exit(m, x, r)
        with torch.no_grad():
            timing = measure(fns, repeats=repeats, warmup=2, min_time=0.05, sync=synchronizer("cpu"))
            layers = {label: run_with_exit(model, inputs, rule).mean_layers for label, rule in rules.items()}
        base = timing["forward"]["median_s"]
        case: dict[str, Any] = {"case": name, "depth": L, "forward_seconds": base, "variants": {}}
        print(f"{name:46s} {'forward':28s} {base * 1e3:8.2f}ms {1.0:9.2f} {L:7.2f} {'':>8s}")
        for label, rule in rules.items():
            t = timing[label]["median_s"]
            ideal = layers[label] / L
            case["variants"][label] = {"rule": rule.describe(), "seconds": t, "ratio": t / base,
                                       "mean_layers": layers[label], "ideal_ratio": ideal,
                                       "overhead": t / base / ideal}  # fmt: skip
            print(
                f"{'':46s} {label:28s} {t * 1e3:8.2f}ms {t / base:9.2f} {layers[label]:7.2f} {t / base / ideal:8.2f}"
            )
        record["cases"].append(case)
    record["load_after"] = load_average()
    record["provenance"] = provenance(__file__, MEASURED)
    print(f"wrote {write_json(record, Path(args.out))}")


if __name__ == "__main__":
    main()
