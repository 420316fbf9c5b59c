"""Constrained vs unconstrained training step of the MiniLM classifier through ``ConstrainedTrainer``.

What is measured, in one process, on real texts (20 Newsgroups posts from gensim's test data, truncated and
padded to 128 tokens, batch 16): one ``Trainer.training_step`` (forward, the objective, backward) and an AdamW
step of all-MiniLM-L6-v2 with its own classification head read out at every layer, for

* ``erm``: cross-entropy of the last layer;
* ``constrained, λ = 0``: the Lagrangian at the start of training (the intermediate readouts are computed
  without a graph);
* ``constrained, λ > 0``: every multiplier positive, every layer's readout back-propagated.

Time: median over repeats, the variants alternating. Memory: the bytes autograd saves for the backward pass
(``torch.autograd.graph.saved_tensors_hooks``, each storage once) plus parameters, gradients and AdamW state
(the CPU analogue of peak training memory; on CUDA ``max_memory_allocated``).

Targets (issue 9): constrained ≤ 1.15× the ERM step time and ≤ 1.10× its memory.
Writes ``benchmarks/results/bench_text.json``.

    python benchmarks/bench_text.py [--repeats 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from _harness import compare_steps, environment, print_ratios, provenance, write_json
from unrolled.constrained.config import ConstraintConfig
from unrolled.models.hf import EncoderSolver, load_model, load_tokenizer
from unrolled.tasks.text import newsgroups
from unrolled.train.hf import ConstrainedTrainer

ROOT = Path(__file__).resolve().parents[1]
#: The code whose speed and memory this benchmark measures (recorded as hashes; see _harness.provenance).
MEASURED = ("unrolled.models.hf", "unrolled.models.readouts", "unrolled.train.hf", "unrolled.constrained",
            "unrolled.trajectory")  # fmt: skip
TARGETS = {"constrained_time_ratio_max": 1.15, "constrained_memory_ratio_max": 1.10}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_text.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from transformers import TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tokenizer = load_tokenizer("minilm")
    data = newsgroups()
    enc = tokenizer(
        list(data.texts[: args.batch]),
        padding="max_length",
        truncation=True,
        max_length=args.length,
        return_tensors="pt",
    )
    batch = {
        "input_ids": enc["input_ids"].to(args.device),
        "attention_mask": enc["attention_mask"].to(args.device),
        "token_type_ids": enc["token_type_ids"].to(args.device),
        "labels": torch.tensor(data.labels[: args.batch], device=args.device),
    }
    workdir = tempfile.mkdtemp(prefix="bench_text_")

    def variant(kind: str):
        torch.manual_seed(0)
        model = EncoderSolver(load_model("minilm", "classifier", num_labels=2), readout="model").to(
            args.device
        )
        targs = TrainingArguments(
            output_dir=workdir,
            report_to="none",
            use_cpu=args.device == "cpu",
            disable_tqdm=True,
            learning_rate=5e-5,
        )
        constraints = None if kind == "erm" else ConstraintConfig(alpha=0.1, dual_lr=1.0)
        trainer = ConstrainedTrainer(model=model, args=targs, constraints=constraints)
        if kind == "constrained, λ > 0":
            trainer.objective.multipliers.value = torch.full((trainer.depth,), 0.5, dtype=torch.float64)
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # what train() sets before its first step
        optimizer = trainer.optimizer

        def step() -> None:
            trainer.training_step(model, dict(batch))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        static = (
            sum(p.numel() * p.element_size() for p in model.parameters()) * 4
        )  # params, grads, AdamW m, v
        return step, static

    kinds = ["erm", "constrained, λ = 0", "constrained, λ > 0"]
    steps, static = {}, {}
    for k in kinds:
        steps[k], static[k] = variant(k)
    median, times, memory = compare_steps(steps, static, args.repeats, args.device)
    ratios = {k: {"time": median[k] / median["erm"], "memory": memory[k] / memory["erm"]} for k in kinds}
    passed = {
        k: ratios[k]["time"] <= TARGETS["constrained_time_ratio_max"]
        and ratios[k]["memory"] <= TARGETS["constrained_memory_ratio_max"]
        for k in kinds[1:]
    }
    print(
        f"MiniLM classifier (6 layers, hidden 384), batch {args.batch} × {args.length} tokens; torch "
        f"{torch.__version__}, {torch.get_num_threads()} thread(s), median of {args.repeats}"
    )
    print_ratios(median, memory)
    record = {
        "benchmark": "bench_text",
        "model": "all-MiniLM-L6-v2 (minilm carrier), its own classification head on every layer",
        "batch_size": args.batch,
        "tokens": args.length,
        "path": "ConstrainedTrainer.training_step + AdamW step",
        "median_step_seconds": median,
        "step_seconds": times,
        "memory_bytes": memory,
        "memory_measure": "cuda max_memory_allocated"
        if args.device.startswith("cuda")
        else "autograd saved tensors + params, grads, AdamW state",
        "ratios_to_erm": ratios,
        "targets": TARGETS,
        "passed": passed,
        "environment": environment(args.device),
        "provenance": provenance(__file__, MEASURED),
    }
    write_json(record, Path(args.out))
    print(f"passed: {passed}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
