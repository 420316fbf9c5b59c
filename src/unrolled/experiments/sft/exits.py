"""Self-speculative decoding and outright exits for the language models of a finished SFT run (issue 31).

For the base model and every model the run saved (``models/<method>/seed<s>/``; a LoRA adapter is merged into
the base model), on the first ``samples`` of the run's win-rate prompts (chat template, greedy, the run's
``winrate.max_new_tokens``): plain greedy decoding against self-speculative decoding that drafts with the first
k layers (transformers' ``assistant_early_exit``, through :func:`unrolled.eval.speculative.self_speculative`):
the share of drafted tokens the full model accepts, tokens per second against greedy decoding of the same
model on the same prompts, and whether the outputs are identical (they must be: it is lossless). Beside them,
what exiting outright after layer k scores: the eval token accuracy of the logit lens after layer k at γ = 0,
which the run recorded (``layer_token_accuracy``; runs made before it was recorded show ``–``), and the win
rate of the responses of the model cut after layer k against the same model's full responses at γ = 0 (the run's
``generations/``), by the run's first judge: 0.5 means exiting outright there answers as well as the whole model.

Each model's record is written to ``exits/<method>/seed<s>.json`` in the run folder as soon as it is measured
(decoding takes minutes a model on a CPU): a later call on the same prompts and token budget reuses every draft
depth measured before and decodes only the new ones (each depth's speed-up is against the greedy decoding timed
in its own call), so an interrupted analysis resumes by model, and models a run trains later are added to it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from unrolled.eval.speculative import self_speculative
from unrolled.experiments.icl.aggregate import fmt_interval, seed_interval
from unrolled.experiments.sft.config import SFTExperiment, SFTMethod
from unrolled.report import integer_axis, save
from unrolled.train.checkpoint import atomic_write_json, read_json

__all__ = ["analyse", "default_exit_layers", "figure", "markdown"]


def default_exit_layers(depth: int) -> list[int]:
    """An eighth, a quarter and half of the layers (LayerSkip drafts with about a quarter to a half)."""
    return sorted({max(1, min(depth - 1, round(depth * f))) for f in (1 / 8, 1 / 4, 1 / 2)})


def load_language_model(run_dir: Path, cfg: SFTExperiment, method: SFTMethod, seed: int) -> Any | None:
    """The model a run trained for ``method`` and ``seed`` (the base model for ``finetune: false``), in float32
    and eval mode; None when the run saved none."""
    from unrolled.experiments.sft.unit import model_folder
    from unrolled.models.hf import load_model

    folder = model_folder(run_dir, method.name, seed)
    if method.finetune and not folder.is_dir():
        return None
    if method.finetune and not (folder / "adapter_config.json").is_file():
        return load_model(str(folder), "causal_lm", dtype=torch.float32).eval()  # all weights were trained
    base = load_model(cfg.task.model, "causal_lm", dtype=torch.float32)
    if not method.finetune:
        return base.eval()
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(folder)).merge_and_unload().eval()


def _prompt_ids(tokenizer: Any, prompts: list[list[dict[str, str]]]) -> list[torch.Tensor]:
    """Token ids ``[1, T]`` of each prompt, as the run's generations saw them (the chat template)."""
    from unrolled.eval.generation import _prompt_texts

    return [
        tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        for text in _prompt_texts(tokenizer, prompts)
    ]


@contextlib.contextmanager
def cut_after(model: Any, layers: int) -> Iterator[Any]:
    """The model run through its first ``layers`` layers only (then its final norm and LM head), as
    transformers' early-exit drafts run it: the base model's ``config.num_hidden_layers`` lowered while the
    block runs."""
    base = getattr(model, model.base_model_prefix)
    depth = base.config.num_hidden_layers
    if not 1 <= layers <= depth:
        raise ValueError(f"cannot cut a {depth}-layer model after layer {layers}")
    base.config.num_hidden_layers = layers
    try:
        yield model
    finally:
        base.config.num_hidden_layers = depth


def outright_win_rates(model: Any, data: Any, cfg: SFTExperiment, full: list[str], layers: list[int],
                       seed: int) -> dict[int, dict[str, Any]]:  # fmt: skip
    """Per exit layer k: the win rate of the model cut after layer k over its full responses ``full`` (the
    run's, γ = 0) on the run's win-rate prompts, by the run's first judge (without the per-item records)."""
    from unrolled.eval.generation import generate_responses
    from unrolled.eval.winrate import win_rate
    from unrolled.experiments.sft.judging import make_judge

    assert cfg.winrate is not None
    examples = data.split.winrate
    judge = make_judge(cfg.winrate.judges[0])
    out = {}
    for k in layers:
        with cut_after(model, k):
            cut = generate_responses(model, data.tokenizer, [list(ex.prompt) for ex in examples],
                                     max_new_tokens=cfg.winrate.max_new_tokens, batch_size=cfg.winrate.batch_size)  # fmt: skip
        result = win_rate(judge, [ex.instruction for ex in examples], cut.texts, full,
                          [ex.completion for ex in examples], confidence=cfg.winrate.confidence, seed=seed)  # fmt: skip
        record = result.to_dict()
        record.pop("items")
        out[k] = record
    return out


def _unit_record(run_dir: Path, method: str, seed: int) -> dict[str, Any] | None:
    path = run_dir / "units" / method / f"seed{seed}.json"
    return read_json(path) if path.is_file() else None


def _full_responses(run_dir: Path, method: str, seed: int) -> list[str] | None:
    """The run's responses of a model to its win-rate prompts at γ = 0 (None if it saved none)."""
    from unrolled.experiments.sft.unit import generations_path

    path = generations_path(run_dir, method, seed)
    if not path.is_file():
        return None
    return read_json(path)["gammas"].get("0.0")


def analyse(run_dir: Path, cfg: SFTExperiment, *, samples: int = 16, exit_layers: list[int] | None = None,
            repeats: int = 1, progress: Any = None) -> dict[str, Any]:  # fmt: skip
    """Self-speculative decoding at every exit layer for every model of ``run_dir`` (module docstring)."""
    from unrolled.experiments.sft.data import SFTSeedData

    if cfg.winrate is None:
        raise ValueError(f"{run_dir}: the run has no win-rate prompts (winrate: null) to decode")
    per_method: dict[str, list[dict[str, Any]]] = {}
    for seed in cfg.seeds:
        data: SFTSeedData | None = None
        for method in (m for m in cfg.methods if m.runs_on(seed)):
            settings = {"samples": samples, "max_new_tokens": cfg.winrate.max_new_tokens}
            saved = _saved_record(run_dir, method.name, seed, settings)
            done = {row["exit_layer"]: row for row in saved["exits"]} if saved else {}
            if saved is not None:
                layers = exit_layers or default_exit_layers(saved["depth"])
                if all(k in done for k in layers):
                    per_method.setdefault(method.name, []).append(
                        {**saved, "exits": [done[k] for k in layers]}
                    )
                    if progress is not None:
                        progress(f"{method.name} seed {seed}: measured before "
                                 f"({_record_path(run_dir, method.name, seed)})")  # fmt: skip
                    continue
            model = load_language_model(run_dir, cfg, method, seed)
            if model is None:
                continue
            data = data or SFTSeedData(cfg.task, seed)
            depth = int(model.config.num_hidden_layers)
            layers = exit_layers or default_exit_layers(depth)
            missing = [k for k in layers if k not in done]
            prompts = [list(ex.prompt) for ex in data.split.winrate[:samples]]
            if progress is not None:  # drafts the model rejects make this slow on a CPU: say what runs
                progress(f"{method.name} seed {seed}: greedy and self-speculative decoding of {len(prompts)} "
                         f"prompts, drafts of {', '.join(map(str, missing))} layers")  # fmt: skip
            results = self_speculative(
                model, _prompt_ids(data.tokenizer, prompts), missing, cfg.winrate.max_new_tokens, repeats
            )
            record = _unit_record(run_dir, method.name, seed) or {}
            clean = record.get("eval", {}).get("0.0", {})
            outright = clean.get("layer_token_accuracy")
            full = _full_responses(run_dir, method.name, seed)
            if full and progress is not None:
                progress(
                    f"{method.name} seed {seed}: the model cut after each draft depth answers the win-rate prompts"
                )
            judged = outright_win_rates(model, data, cfg, full, missing, seed) if full else {}
            for r in results:
                row = r.as_dict()  # its speed-up against the greedy decoding timed in the same call
                row["exit_token_accuracy"] = outright[r.exit_layer] if outright else None
                row["exit_win_rate"] = judged.get(r.exit_layer)
                done[r.exit_layer] = row
            measured = {"seed": seed, "depth": depth, "token_accuracy": clean.get("token_accuracy"),
                        "layer_token_accuracy": outright, "prompts": len(prompts)}  # fmt: skip
            atomic_write_json(
                _record_path(run_dir, method.name, seed),
                {"settings": settings, "record": {**measured, "exits": [done[k] for k in sorted(done)]}},
            )
            per_method.setdefault(method.name, []).append({**measured, "exits": [done[k] for k in layers]})
            if progress is not None:
                progress(f"{method.name} seed {seed}")
            del model
    return _aggregate(cfg, per_method)


def _record_path(run_dir: Path, method: str, seed: int) -> Path:
    return run_dir / "exits" / method / f"seed{seed}.json"


def _saved_record(run_dir: Path, method: str, seed: int, settings: dict[str, Any]) -> dict[str, Any] | None:
    """A model's record from earlier calls on the same prompts and token budget (None: none, or others)."""
    path = _record_path(run_dir, method, seed)
    if not path.is_file():
        return None
    saved = read_json(path)
    same = all(saved.get("settings", {}).get(key) == value for key, value in settings.items())
    return saved["record"] if same else None


def _interval(values: list[Any]) -> dict[str, Any]:
    return seed_interval([float(v) for v in values if v is not None and math.isfinite(float(v))])


def _aggregate(cfg: SFTExperiment, per_method: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    labels = {m.name: m.label or m.name for m in cfg.methods}
    methods: dict[str, Any] = {}
    for name, rows in per_method.items():
        layers = [e["exit_layer"] for e in rows[0]["exits"]]
        exits = {}
        for i, k in enumerate(layers):
            cells = [r["exits"][i] for r in rows]
            exits[str(k)] = {
                "acceptance": _interval([c["acceptance"] for c in cells]),
                "speedup": _interval([c["speedup"] for c in cells]),
                "identical": all(c["identical"] for c in cells),
                "exit_token_accuracy": _interval([c["exit_token_accuracy"] for c in cells]),
                "exit_win_rate": _interval([c["exit_win_rate"]["rate"] for c in cells if c["exit_win_rate"]]),
            }
        layer_acc = [r["layer_token_accuracy"] for r in rows if r["layer_token_accuracy"]]
        methods[name] = {
            "label": labels[name],
            "index": list(labels).index(name),
            "depth": rows[0]["depth"],
            "seeds": [r["seed"] for r in rows],
            "token_accuracy": _interval([r["token_accuracy"] for r in rows]),
            "layer_token_accuracy": [sum(v) / len(v) for v in zip(*layer_acc, strict=True)]
            if layer_acc
            else None,
            "exits": exits,
            "per_seed": rows,
        }
    return {"kind": "sft", "methods": methods}


def markdown(results: dict[str, Any]) -> list[str]:
    lines = [
        "# Self-speculative decoding and outright exits",
        "",
        "Greedy decoding of the run's win-rate prompts, drafting with the first k layers (transformers' "
        "`assistant_early_exit`): the share of drafted tokens the full model accepts, tokens per second over plain "
        "greedy decoding of the same model on the same prompts, and whether every output is identical. Exit "
        "accuracy: the eval token accuracy of stopping outright after layer k (the logit lens, γ = 0); exit win "
        "rate: the responses of the model cut after layer k against its full responses (0.5: as good). "
        "± the 95% interval over seeds.",
        "",
        "| model | final token accuracy | draft layers k | acceptance | speed-up | identical | exit accuracy at k "
        "| exit win rate at k |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in sorted(results["methods"].values(), key=lambda m: m["index"]):
        for k, e in m["exits"].items():
            lines.append(
                f"| {m['label']} | {fmt_interval(m['token_accuracy'])} | {k} of {m['depth']} | "
                f"{fmt_interval(e['acceptance'], 2)} | {fmt_interval(e['speedup'], 2)}× | "
                f"{'yes' if e['identical'] else '**no**'} | {fmt_interval(e['exit_token_accuracy'])} | "
                f"{fmt_interval(e['exit_win_rate'], 2)} |"
            )
    return lines


def figure(results: dict[str, Any], path: Path, plt: Any) -> None:
    """Acceptance and speed-up against draft layers (self-speculative decoding), and the token accuracy of
    exiting outright after layer l."""
    fig, (accept, speed, right) = plt.subplots(1, 3, figsize=(13, 4.4))
    counts = {len(m["seeds"]) for m in results["methods"].values()}
    for m in sorted(results["methods"].values(), key=lambda m: m["index"]):
        color = f"C{m['index'] % 10}"
        ks = [int(k) for k in m["exits"]]
        n = len(m["seeds"])
        label = m["label"] if len(counts) == 1 else f"{m['label']} · {n} seed{'s' if n > 1 else ''}"
        for ax, key in ((accept, "acceptance"), (speed, "speedup")):
            ys = [m["exits"][str(k)][key]["mean"] for k in ks]
            ax.plot(ks, [math.nan if y is None else y for y in ys], "o-", color=color, label=label)
        if m["layer_token_accuracy"]:
            right.plot(range(len(m["layer_token_accuracy"])), m["layer_token_accuracy"], "-", color=color)
    accept.set_ylabel("drafted tokens accepted")
    accept.set_ylim(0, 1)
    speed.axhline(1.0, color="k", lw=0.8, ls="--")
    speed.annotate(
        "greedy decoding", (0.02, 1.0), xycoords=("axes fraction", "data"), va="bottom", fontsize=8
    )
    speed.set_ylabel("tokens per second / greedy's")
    speed.set_ylim(0, max(1.1, speed.get_ylim()[1]))
    for ax in (accept, speed):
        ax.set_xlabel("draft layers k")
    right.set_xlabel("exit outright after layer l")
    right.set_ylabel("eval token accuracy (γ = 0)")
    for ax in (accept, speed, right):
        integer_axis(ax.xaxis)
        ax.grid(alpha=0.3)
    handles, labels = accept.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    same = all(e["identical"] for m in results["methods"].values() for e in m["exits"].values())
    lossless = "outputs identical to greedy" if same else "some outputs NOT identical to greedy"
    seeds = (
        "one seed"
        if counts == {1}
        else f"mean of {max(counts)} seeds"
        if len(counts) == 1
        else "mean of each model's seeds"
    )
    fig.suptitle(
        f"self-speculative decoding (left, middle; {lossless}) and exiting outright (right); {seeds}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06 + 0.035 * ((len(labels) - 1) // 3), 1, 1))
    save(fig, path, plt)
