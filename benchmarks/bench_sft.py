"""Constrained SFT against TRL's ``SFTTrainer``: the training step, and generation for the win rate.

**Step** (SmolLM2-135M-Instruct, the converted offline checkpoint; batch 8 × 256 tokens): one
``training_step`` (forward, loss, backward) and an AdamW step, for LoRA (r = 16 on every projection) and full
fine-tuning, of

* ``sft``: ``trl.SFTTrainer`` itself (its loss on the last layer, completion-only);
* ``λ = 0``: ``ConstrainedSFTTrainer`` with every constraint on and every multiplier at zero, on a step that
  is neither a dual step nor a log step: the objective needs no intermediate layer, and none is read;
* ``λ = 0, dual step``: the same on a dual (monitoring) step, where every constrained layer is read without
  a graph on the readout fraction of the tokens (the first ``--fractions`` value) to measure its slack;
* ``exact``: every multiplier positive, the 29 intermediate layers read out by the logit lens on every
  trained token (chunked, recomputed in backward);
* ``subsampled f``: the same on a random fraction f of the trained tokens (the last layer on all of them),
  for each f of ``--fractions``;
* ``late f``: the late-layer recipe, constraints on layers 21–30 only (multipliers positive), at the first
  fraction: its price beside the all-layer ``subsampled f``.

The examples are real text: each a chatterbot-corpus question and, as the answer, chatterbot answers joined
until the chat template gives at least 256 tokens (then truncated to 256 by TRL), so about 200 tokens per
example are trained, as in Alpaca-style data. Time: the median over repeats, the variants alternating.
Memory: on CUDA ``max_memory_allocated``; on the CPU the bytes autograd saves for backward plus parameters,
gradients and AdamW state of the trainable weights (transient buffers, e.g. one readout chunk of
``chunk × vocab`` logits while it is recomputed, are not counted).

**Generation**: greedy responses to ``--prompts`` win-rate prompts, ``--max-new`` tokens at most, batched
(``--gen-batch``) against one prompt at a time; tokens per second of each and their ratio.

Targets: subsampled ≤ 1.5× the ``sft`` step time and ≤ 1.25× its memory (issue 10); ``λ = 0`` ≤ 1.05× the
``sft`` step time (issue 17). Writes ``benchmarks/results/bench_sft.json`` (``--device cuda --bf16`` on a GPU:
``bench_sft_cuda.json``), with the hashes of the code it measures.

    python benchmarks/bench_sft.py [--repeats 3] [--fractions 0.25 0.1] [--modes lora full]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from _harness import compare_steps, environment, provenance, resolve_device, write_json

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"subsampled_time_ratio_max": 1.5, "subsampled_memory_ratio_max": 1.25, "zero_time_ratio_max": 1.05}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LATE_LAYERS = list(range(21, 31))
MEASURED = ("unrolled.train.sft", "unrolled.train.sft_config", "unrolled.train.hf", "unrolled.constrained",
            "unrolled.models.readouts", "unrolled.models.hf")  # fmt: skip


def long_examples(tokenizer: Any, count: int, length: int) -> list[dict[str, Any]]:
    """``count`` conversational prompt-completion records of at least ``length`` tokens each."""
    from unrolled.tasks.text.carriers import chatterbot_pairs

    pairs = chatterbot_pairs(include_multi_turn=True)
    records, cursor = [], 0
    for _ in range(count):
        question = pairs[cursor % len(pairs)].user
        answer: list[str] = []
        while True:
            cursor += 1
            answer.append(pairs[cursor % len(pairs)].assistant)
            record = {
                "prompt": [{"role": "user", "content": question}],
                "completion": [{"role": "assistant", "content": " ".join(answer)}],
            }
            ids = tokenizer.apply_chat_template(record["prompt"] + record["completion"], tokenize=True)
            if len(ids["input_ids"] if hasattr(ids, "keys") else ids) >= length:
                break
        records.append(record)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.1])
    parser.add_argument("--modes", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new", type=int, default=32)
    parser.add_argument("--gen-batch", type=int, default=16)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    import datasets
    from datasets import Dataset
    from peft import LoraConfig
    from transformers.utils import logging as hf_logging
    from trl import SFTConfig, SFTTrainer

    from unrolled.eval import generate_responses
    from unrolled.models.hf import load_model, load_tokenizer
    from unrolled.train.sft import ConstrainedSFTConfig, ConstrainedSFTTrainer

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    tokenizer = load_tokenizer(args.model)
    dataset = Dataset.from_list(long_examples(tokenizer, args.batch, args.length))
    workdir = tempfile.mkdtemp(prefix="bench_sft_")
    common = dict(
        output_dir=workdir, report_to="none", use_cpu=device == "cpu", disable_tqdm=True, learning_rate=1e-4,
        max_length=args.length, per_device_train_batch_size=args.batch, gradient_checkpointing=None,
        bf16=args.bf16, dataset_num_proc=None,
    )  # fmt: skip

    def variant(kind: str, mode: str) -> tuple[Any, int, int]:
        torch.manual_seed(0)
        model = load_model(args.model, "causal_lm", dtype=dtype).to(device)
        lora = LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
        peft = lora if mode == "lora" else None
        if kind == "sft":
            trainer = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=dataset,
                                 processing_class=tokenizer, peft_config=peft)  # fmt: skip
        else:
            zero = kind.startswith("λ = 0")
            fraction = 1.0 if kind == "exact" else args.fractions[0] if zero else float(kind.split()[-1])
            layers = LATE_LAYERS if kind.startswith("late") else None
            every = 1 if kind == "λ = 0, dual step" else 10_000  # a dual (monitoring) step, or not
            cfg = ConstrainedSFTConfig(
                **common, constraint_alpha=0.05, readout_token_fraction=fraction, constrained_layers=layers,
                dual_every=every, logging_steps=10_000,
            )  # fmt: skip
            trainer = ConstrainedSFTTrainer(model=model, args=cfg, train_dataset=dataset,
                                            processing_class=tokenizer, peft_config=peft)  # fmt: skip
            lam = 0.0 if zero else 0.5
            value = torch.zeros(trainer.depth, dtype=torch.float64)
            value[[l - 1 for l in (layers or range(1, trainer.depth + 1))]] = lam
            trainer.objective.multipliers.value = value
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(args.batch)])
        trained = int((batch["labels"][:, 1:] != -100).sum())
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # what train() sets before its first step
        net, optimizer = trainer.model, trainer.optimizer
        net.train()

        def step() -> None:
            trainer.training_step(net, dict(batch))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        params = sum(p.numel() * p.element_size() for p in net.parameters())
        trainable = sum(p.numel() * p.element_size() for p in net.parameters() if p.requires_grad)
        return step, params + 3 * trainable, trained

    record: dict[str, Any] = {
        "benchmark": "bench_sft",
        "model": f"{args.model} (30 layers, hidden 576, vocab 49,152)",
        "batch_size": args.batch,
        "tokens": args.length,
        "fractions": args.fractions,
        "dtype": str(dtype).removeprefix("torch."),
        "path": "training_step + AdamW step",
        "memory_measure": "cuda max_memory_allocated"
        if device.startswith("cuda")
        else "autograd saved tensors + params, grads, AdamW state of trainable weights",
        "modes": {},
        "targets": TARGETS,
    }
    subsampled = [f"subsampled {f:g}" for f in args.fractions]
    kinds = ["sft", "λ = 0", "λ = 0, dual step", "exact", *subsampled, f"late {args.fractions[0]:g}"]
    for mode in args.modes:
        steps, static, trained = {}, {}, 0
        for k in kinds:
            steps[k], static[k], trained = variant(k, mode)
        median, times, memory = compare_steps(steps, static, args.repeats, device, warmup=args.warmup)
        ratios = {k: {"time": median[k] / median["sft"], "memory": memory[k] / memory["sft"]} for k in kinds}
        passed = {
            k: ratios[k]["time"] <= TARGETS["subsampled_time_ratio_max"]
            and ratios[k]["memory"] <= TARGETS["subsampled_memory_ratio_max"]
            for k in subsampled
        }
        passed["λ = 0"] = ratios["λ = 0"]["time"] <= TARGETS["zero_time_ratio_max"]
        print(f"\n{mode}: batch {args.batch} × {args.length} tokens ({trained} trained), {device}, "
              f"{torch.get_num_threads()} thread(s), median of {args.repeats}")  # fmt: skip
        print(f"{'variant':18s} {'step':>10s} {'×SFT':>6s} {'memory MB':>10s} {'×SFT':>6s}")
        for k in kinds:
            print(
                f"{k:18s} {median[k]:8.2f} s {ratios[k]['time']:6.2f} {memory[k] / 2**20:10.1f} {ratios[k]['memory']:6.2f}"
            )
        record["modes"][mode] = {
            "trained_tokens": trained, "median_step_seconds": median, "step_seconds": times,
            "memory_bytes": memory, "ratios_to_sft": ratios, "passed": passed,
        }  # fmt: skip
        del steps
    record["generation"] = bench_generation(args, tokenizer, dtype, device, generate_responses, load_model)
    record["passed"] = {mode: m["passed"] for mode, m in record["modes"].items()}
    record["environment"] = environment(device)
    record["provenance"] = provenance(__file__, MEASURED)
    default = "bench_sft_cuda.json" if device.startswith("cuda") else "bench_sft.json"
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / default
    write_json(record, out)
    print(f"passed: {record['passed']}\nwrote {out}")


def bench_generation(
    args: Any, tokenizer: Any, dtype: Any, device: str, generate: Any, load: Any
) -> dict[str, Any]:
    """Tokens per second, batched against one prompt at a time, on the same prompts (greedy)."""
    from unrolled.tasks.text.carriers import chatterbot_pairs

    model = load(args.model, "causal_lm", dtype=dtype).to(device)
    prompts = [[{"role": "user", "content": p.user}] for p in chatterbot_pairs()[::37][: args.prompts]]
    generate(model, tokenizer, prompts[:2], max_new_tokens=4, batch_size=2)  # warm-up
    batched = generate(model, tokenizer, prompts, max_new_tokens=args.max_new, batch_size=args.gen_batch)
    single = generate(model, tokenizer, prompts, max_new_tokens=args.max_new, batch_size=1)
    same = sum(a == b for a, b in zip(batched.texts, single.texts, strict=True))
    out = {
        "prompts": len(prompts), "max_new_tokens": args.max_new, "batch_size": args.gen_batch,
        "batched": batched.summary(), "one_at_a_time": single.summary(),
        "speedup": batched.tokens_per_second / single.tokens_per_second,
        "identical_responses": same,
    }  # fmt: skip
    print(
        f"\ngeneration: {len(prompts)} prompts, ≤ {args.max_new} new tokens: batched ({args.gen_batch}) "
        f"{batched.tokens_per_second:.1f} tok/s, one at a time {single.tokens_per_second:.1f} tok/s, "
        f"{out['speedup']:.2f}×; {same}/{len(prompts)} responses identical"
    )
    return out


if __name__ == "__main__":
    main()
