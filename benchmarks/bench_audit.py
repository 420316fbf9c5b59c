"""Peak memory of the descent audit of SmolLM2-135M against one plain forward with ``output_hidden_states``.

Both variants read 16 × 256 tokens (20 Newsgroups posts, SmolLM2's tokenizer, padded to 256) with no
gradients:

* ``forward``: ``model(input_ids, attention_mask, output_hidden_states=True)``, Hugging Face's own forward:
  the 31 hidden states and the last layer's logits ``[16, 256, 49152]``;
* ``audit``: what ``unrolled audit`` does, :class:`~unrolled.models.hf.LanguageModelSolver` (the base model,
  no LM head) and the logit lens of all 31 states, its cross-entropy and accuracy computed 1,024 tokens at a
  time (``LogitLens.evaluate``): no ``[B, T, V]`` tensor of a whole batch, no ``[L, B, T, V]``.

Memory on CPU: each variant runs in a fresh process; a thread samples the resident set size (``/proc/self/
statm``) every 2 ms while it runs, and the peak minus the size just before is the variant's memory (the model's
weights are loaded before, and excluded). On CUDA: ``max_memory_allocated`` above the weights. Also the wall
time of each. Target (issue 9): audit peak ≤ 1.5× forward peak. Needs the converted checkpoint
(``unrolled convert smollm2``). Writes ``benchmarks/results/bench_audit.json``.

    python benchmarks/bench_audit.py [--batch 16] [--length 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import threading
import time
from pathlib import Path
from typing import Any

import torch

from _harness import environment, provenance, write_json

ROOT = Path(__file__).resolve().parents[1]
#: The code whose speed and memory this benchmark measures (recorded as hashes; see _harness.provenance).
MEASURED = ("unrolled.models.hf", "unrolled.models.readouts", "unrolled.trajectory")
TARGET = 1.5
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """Resident set size of this process in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _measure(variant: str, batch: int, length: int, threads: int, device: str, queue: Any) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    from unrolled.models.hf import LanguageModelSolver, load_model, load_tokenizer
    from unrolled.models.readouts import IGNORE_INDEX
    from unrolled.tasks.text import newsgroups

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    model = load_model("smollm2-135m-instruct", "causal_lm").to(device).eval()
    enc = tokenizer(
        list(newsgroups().texts[:batch]),
        padding="max_length",
        truncation=True,
        max_length=length,
        return_tensors="pt",
    )
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    labels = ids.clone()
    labels[mask == 0] = IGNORE_INDEX

    def run() -> Any:
        with torch.no_grad():
            if variant == "forward":
                out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                return float(out.logits[0, 0, 0])
            solver = LanguageModelSolver(model, chunk_tokens=1024)
            traj = solver(input_ids=ids, attention_mask=mask)
            return [solver.lens.evaluate(s, labels) for s in traj.states]

    before, peak, stop = rss(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - t0
    stop.set()
    sampler.join()
    record = {"seconds": seconds, "rss_before": before, "rss_peak": max(peak[0], rss())}
    record["bytes"] = record["rss_peak"] - before
    if device.startswith("cuda"):
        record["bytes"] = torch.cuda.max_memory_allocated() - base
    if variant == "audit":
        loss = [r[0] / max(r[2], 1) for r in result]
        record["layer_loss"] = loss
        record["tokens"] = result[0][2]
    queue.put(record)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_audit.json"))
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    results = {}
    for variant in ("forward", "audit"):
        queue = ctx.Queue()
        proc = ctx.Process(
            target=_measure, args=(variant, args.batch, args.length, args.threads, args.device, queue)
        )
        proc.start()
        results[variant] = queue.get()
        proc.join()
        r = results[variant]
        print(f"{variant:8s} {r['bytes'] / 2**20:8.0f} MB above the loaded model, {r['seconds']:6.1f} s")
    ratio = results["audit"]["bytes"] / results["forward"]["bytes"]
    print(f"audit / forward peak memory: {ratio:.2f} (target <= {TARGET})")
    record = {
        "benchmark": "bench_audit",
        "model": "SmolLM2-135M-Instruct (30 layers, hidden 576, vocabulary 49,152), fp32",
        "batch": args.batch,
        "length": args.length,
        "variants": results,
        "memory_ratio_audit_over_forward": ratio,
        "time_ratio_audit_over_forward": results["audit"]["seconds"] / results["forward"]["seconds"],
        "memory_measure": "peak RSS above the loaded model (sampled every 2 ms, fresh process per variant)"
        if args.device == "cpu"
        else "cuda max_memory_allocated above the loaded model",
        "target_memory_ratio_max": TARGET,
        "passed": ratio <= TARGET,
        "environment": environment(args.device),
        "provenance": provenance(__file__, MEASURED),
    }
    write_json(record, Path(args.out))
    print(f"passed: {record['passed']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
