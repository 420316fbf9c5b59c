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


def run_winrate_unit(unit: Unit, data: SFTSeedData, ctx: UnitContext) -> dict[str, Any]:
    """Judge every method against the baseline on the win-rate prompts; one comparison per (method, γ, judge)."""
    cfg: SFTExperiment = ctx.cfg  # type: ignore[assignment]
    assert cfg.winrate is not None
    t0 = time.perf_counter()
    baseline = cfg.baseline()
    prompts = data.split.winrate
    instructions = [ex.instruction for ex in prompts]
    references = [ex.completion for ex in prompts]
    responses = {m.name: _generations(ctx.out, m.name, unit.seed) for m in cfg.methods}
    folder = ctx.out / "winrate" / f"seed{unit.seed}"
    if ctx.rank == 0:
        for name, per_gamma in responses.items():
            for gamma, texts in per_gamma.items():
                write_alpaca_eval(
                    ctx.out / "alpaca_eval" / f"seed{unit.seed}" / f"{name}_gamma{gamma}.json",
                    instructions, texts, generator=f"{name} (γ={gamma})", dataset=cfg.task.source,
                )  # fmt: skip
    comparisons = []
    for jc in cfg.winrate.judges:
        judge = make_judge(jc)
        for m in cfg.methods:
            if m.name == baseline:
                continue
            for gamma in cfg.winrate.gammas:
                key = str(gamma)
                result = win_rate(
                    judge, instructions, responses[m.name][key], responses[baseline][key], references,
                    confidence=cfg.winrate.confidence, seed=unit.seed,
                )  # fmt: skip
                full = result.to_dict()
                items = full.pop("items")
                comparisons.append({"method": m.name, "baseline": baseline, "gamma": gamma, **full})
                if ctx.rank == 0:
                    safe = judge.name.replace("/", "_").replace(":", "_").replace("@", "_")
                    path = folder / f"{m.name}_vs_{baseline}_gamma{key}_{safe}.json"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(
                        path, json.dumps({**full, "items": items}, indent=1, ensure_ascii=False) + "\n"
                    )
                ctx.advance(1)
    return {
        "method": WINRATE_UNIT,
        "seed": unit.seed,
        "depth": None,
        "comparisons": comparisons,
        "seconds": time.perf_counter() - t0,
    }
