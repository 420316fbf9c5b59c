"""The win-rate unit of a seed: every method against the baseline, at each γ, by each configured judge.

It runs after the training units (phase 2) and reads their responses from ``generations/``. It writes the
per-item verdicts to ``winrate/seed<s>/`` and every method's responses in AlpacaEval's format to
``alpaca_eval/seed<s>/<method>_gamma<γ>.json`` (``alpaca_eval --model_outputs`` reads them).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from unrolled.eval import Judge, LocalLMJudge, OpenAIJudge, ReferenceJudge
from unrolled.eval.winrate import win_rate, write_alpaca_eval
from unrolled.experiments.family import Unit, UnitContext
from unrolled.experiments.sft.config import WINRATE_UNIT, JudgeConfig, SFTExperiment
from unrolled.experiments.sft.data import SFTSeedData
from unrolled.experiments.sft.unit import generations_path
from unrolled.train.checkpoint import atomic_write_text

__all__ = ["WINRATE_UNIT", "make_judge", "run_winrate_unit"]


def make_judge(jc: JudgeConfig) -> Judge:
    """The judge a :class:`JudgeConfig` describes (a local judge model is loaded here)."""
    if jc.kind == "reference":
        return ReferenceJudge()
    if jc.kind == "openai":
        assert jc.model is not None and jc.base_url is not None
        return OpenAIJudge(jc.base_url, jc.model, timeout=jc.timeout, max_retries=jc.max_retries)
    from unrolled.models.hf import load_model, load_tokenizer

    assert jc.model is not None
    tok = load_tokenizer(jc.model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return LocalLMJudge(load_model(jc.model, "causal_lm").eval(), tok, name=f"local:{jc.model}")


def _generations(out: Path, method: str, seed: int) -> dict[str, list[str]]:
    path = generations_path(out, method, seed)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the responses of {method!r} (seed {seed}) are missing; rerun its unit"
        )
    return json.loads(path.read_text(encoding="utf-8"))["gammas"]


def compare(
    cfg: SFTExperiment,
    data: SFTSeedData,
    out: Path,
    seed: int,
    judges: tuple[JudgeConfig, ...],
    write: bool = True,
    advance: Any = lambda _k: None,
) -> list[dict[str, Any]]:
    """Every method against the baseline at each win-rate γ, by each judge: one row per comparison (the
    :class:`~unrolled.eval.WinRate` fields without items). With ``write``, the per-item verdicts go to
    ``winrate/seed<s>/`` and the responses in AlpacaEval's format to ``alpaca_eval/seed<s>/``."""
    assert cfg.winrate is not None
    baseline = cfg.baseline()
    prompts = data.split.winrate
    instructions = [ex.instruction for ex in prompts]
    references = [ex.completion for ex in prompts]
    methods = [m for m in cfg.methods if m.runs_on(seed)]
    responses = {m.name: _generations(out, m.name, seed) for m in methods}
    folder = out / "winrate" / f"seed{seed}"
    if write:
        for name, per_gamma in responses.items():
            for gamma, texts in per_gamma.items():
                write_alpaca_eval(
                    out / "alpaca_eval" / f"seed{seed}" / f"{name}_gamma{gamma}.json",
                    instructions, texts, generator=f"{name} (γ={gamma})", dataset=cfg.task.source,
                )  # fmt: skip
    rows = []
    for jc in judges:
        judge = make_judge(jc)
        for m in methods:
            if m.name == baseline:
                continue
            for gamma in cfg.winrate.gammas:
                key = str(gamma)
                result = win_rate(
                    judge, instructions, responses[m.name][key], responses[baseline][key], references,
                    confidence=cfg.winrate.confidence, seed=seed,
                )  # fmt: skip
                full = result.to_dict()
                items = full.pop("items")
                rows.append({"method": m.name, "baseline": baseline, "gamma": gamma, **full,
                             "errors": common_errors(items)})  # fmt: skip
                if write:
                    safe = judge.name.replace("/", "_").replace(":", "_").replace("@", "_")
                    path = folder / f"{m.name}_vs_{baseline}_gamma{key}_{safe}.json"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    text = json.dumps({**full, "items": items}, indent=1, ensure_ascii=False) + "\n"
                    atomic_write_text(path, text)
                advance(1)
    return rows


class JudgeFailedError(RuntimeError):
    """Every judgment of a judge failed (an endpoint unreachable, say); the message names it and why."""


def common_errors(items: list[dict[str, Any]], most: int = 3) -> list[list[Any]]:
    """The ``most`` most frequent failure messages of a comparison's items, as [message, count] pairs (the
    order prefix, "A first: ", dropped)."""
    counts: dict[str, int] = {}
    for item in items:
        for error in item.get("errors", []):
            message = error.split(": ", 1)[1] if error.startswith(("A first: ", "B first: ")) else error
            counts[message] = counts.get(message, 0) + 1
    return [[m, c] for m, c in sorted(counts.items(), key=lambda kv: -kv[1])[:most]]


def run_winrate_unit(unit: Unit, data: SFTSeedData, ctx: UnitContext) -> dict[str, Any]:
    """Judge every method against the baseline on the win-rate prompts; one comparison per (method, γ, judge)."""
    cfg: SFTExperiment = ctx.cfg  # type: ignore[assignment]
    assert cfg.winrate is not None
    t0 = time.perf_counter()
    rows = compare(cfg, data, ctx.out, unit.seed, cfg.winrate.judges, ctx.rank == 0, ctx.advance)
    return {
        "method": WINRATE_UNIT,
        "seed": unit.seed,
        "depth": None,
        "comparisons": rows,
        "seconds": time.perf_counter() - t0,
    }


def judge_run(run_dir: str | Path, judge: JudgeConfig) -> list[dict[str, Any]]:
    """Judge a finished SFT run's saved responses with another judge (``unrolled judge``): its rows replace
    that judge's rows in ``results.json`` (or are added), and the report is rebuilt."""
    from unrolled.experiments.config import load_config
    from unrolled.experiments.reporting import write_report
    from unrolled.experiments.sft.aggregate import merge_errors, winrate_rows
    from unrolled.train.checkpoint import atomic_write_json, read_json

    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    if not isinstance(cfg, SFTExperiment) or cfg.winrate is None:
        raise ValueError(f"{run_dir}: not an SFT run with a win rate (task.kind sft, winrate set)")
    results = read_json(run_dir / "results.json")
    records = []
    for seed in cfg.seeds:
        data = SFTSeedData(cfg.task, seed)
        records.append({"comparisons": compare(cfg, data, run_dir, seed, (judge,))})
    new = winrate_rows(records)
    failed, total = sum(r["failures"] for r in new), sum(r["n"] for r in new)
    if total and failed == total:  # nothing was judged: say why, and leave results.json as it was
        why = "; ".join(f"{m} ({c}×)" for m, c in merge_errors(new))
        raise JudgeFailedError(
            f"every judgment failed ({failed} of {total} items): judge {new[0]['judge']}: {why}"
        )
    names = {row["judge"] for row in new}
    results["winrates"] = [r for r in results.get("winrates", []) if r["judge"] not in names] + new
    atomic_write_json(run_dir / "results.json", results)
    write_report(run_dir)
    return new
