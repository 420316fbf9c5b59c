"""The ``unrolled`` commands about the machine, the models and the judges, rather than runs:
``models`` (what works offline), ``convert`` (SmolLM2's GGUF file into a checkpoint), ``judge`` (an SFT run's
saved responses judged again) and ``env`` (versions, for bug reports). ``unrolled.cli`` builds the parser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unrolled.config import ConfigError


def cmd_models(args: argparse.Namespace) -> int:
    from unrolled.carriers import DataNotFoundError
    from unrolled.extras import Requirement, missing
    from unrolled.models.hub import ALIASES, ModelNotFoundError

    absent = missing([Requirement("transformers", "loading any of these models")])
    if absent:
        print(f"none is usable here: {absent[0].message()}")
    for name, where in ALIASES.items():
        try:
            state = str(where())
        except (ModelNotFoundError, DataNotFoundError) as exc:
            state = f"not available: {exc}"
        else:
            if absent:
                state = f"files at {state}, but not usable: {absent[0].message()}"
        print(f"{name:24s} {state}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from unrolled.extras import Requirement, require

    require([Requirement(m, "unrolled convert smollm2") for m in ("transformers", "gguf", "accelerate")])
    from unrolled.models.hub import convert_smollm2

    print("converting SmolLM2-135M-Instruct (GGUF, Q4_1) into a plain checkpoint; about 30 s ...")
    print(f"wrote {convert_smollm2(Path(args.out) if args.out else None)}")
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    from unrolled.config import from_dict
    from unrolled.experiments.sft.aggregate import merge_errors
    from unrolled.experiments.sft.config import JudgeConfig
    from unrolled.experiments.sft.judging import JudgeFailedError, judge_run
    from unrolled.experiments.sft.report import winrate_table

    kind, _, model = args.judge.partition(":")
    spec = {"kind": kind, "model": model or None, "base_url": args.base_url, "timeout": args.timeout,
            "max_retries": args.max_retries}  # fmt: skip
    try:
        judge = from_dict(JudgeConfig, {k: v for k, v in spec.items() if v is not None})
    except ConfigError as exc:
        raise ConfigError(f"unrolled judge --judge {args.judge}: {exc}") from None
    try:
        rows = judge_run(args.run_dir, judge)
    except JudgeFailedError as exc:
        print(f"error: {exc}; nothing was added to {Path(args.run_dir) / 'results.json'}", file=sys.stderr)
        return 1
    print(winrate_table({"methods": {}, "winrates": rows}))
    print(f"added to {Path(args.run_dir) / 'results.json'} and report.md")
    failed = sum(r["failures"] for r in rows)
    if failed:
        why = "; ".join(f"{m} ({c}×)" for m, c in merge_errors(rows))
        print(f"warning: {failed} judgments failed (counted, not scored): judge {rows[0]['judge']}: {why}",
              file=sys.stderr)  # fmt: skip
    return 0


def package_version(name: str) -> str | None:
    """The installed version of a distribution, without importing it (None if it is not installed)."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment_line() -> str:
    """One line for bug reports: unrolled, Python, torch (and its CUDA), the Hugging Face stack's versions."""
    import platform

    import torch

    cuda = (
        f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)"
        if torch.cuda.is_available()
        else f"no CUDA device, a {'CUDA ' + torch.version.cuda if torch.version.cuda else 'CPU'} build"
    )
    parts = [f"unrolled {package_version('unrolled') or '?'}", f"Python {platform.python_version()}",
             f"torch {torch.__version__} ({cuda})"]  # fmt: skip
    for name in ("transformers", "trl", "peft", "accelerate", "datasets"):
        parts.append(f"{name} {package_version(name) or 'not installed'}")
    return ", ".join(parts) + f"; {platform.platform()}"


def cmd_env(args: argparse.Namespace) -> int:
    print(environment_line())
    return 0


def cmd_exits(args: argparse.Namespace) -> int:
    """``unrolled exits RUN_DIR``: early-exit curves and calibrated exits of a finished run's trained models."""
    from unrolled.experiments import load_config
    from unrolled.report import pyplot
    from unrolled.train.checkpoint import atomic_write_json, atomic_write_text

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(
            f"{run_dir}: no run folder here (no config.yaml); run an experiment into it first"
        )
    cfg = load_config(run_dir / "config.yaml")
    progress = lambda what: print(f"  {what}", file=sys.stderr, flush=True)  # noqa: E731
    if getattr(args, "layers", None) is not None and cfg.kind != "sft":
        raise ConfigError(
            f"--layers: the draft layers of self-speculative decoding apply to sft runs, not {cfg.kind}"
        )
    if cfg.kind == "icl":
        from unrolled.experiments.icl.exits import analyse, figure, markdown

        budget = 0.01 if args.budget is None else args.budget
        results = analyse(run_dir, cfg, prompts=args.samples or 2000, budget=budget, progress=progress)  # type: ignore[arg-type]
    elif cfg.kind == "text":
        from unrolled.experiments.text.exits import analyse, figure, markdown  # type: ignore[assignment]

        budget = 0.01 if args.budget is None else args.budget
        results = analyse(run_dir, cfg, samples=args.samples or 10_000, budget=budget, progress=progress)  # type: ignore[arg-type, call-arg]
    elif cfg.kind == "video":
        from unrolled.experiments.denoising.exits import analyse, figure, markdown  # type: ignore[assignment]

        budget = 0.02 if args.budget is None else args.budget
        results = analyse(run_dir, cfg, samples=args.samples or 512, budget=budget, progress=progress)  # type: ignore[arg-type, call-arg]
    elif cfg.kind == "sft":
        from unrolled.experiments.sft.exits import analyse, figure, markdown  # type: ignore[assignment]

        results = analyse(
            run_dir,
            cfg,
            samples=args.samples or 16,
            exit_layers=getattr(args, "layers", None),
            progress=progress,
        )  # type: ignore[arg-type, call-arg]
    else:
        raise ConfigError(
            f"{run_dir}: early-exit analysis of task.kind {cfg.kind!r} runs is not built; built: icl, text, video, sft"
        )
    if not results["methods"]:
        raise FileNotFoundError(
            f"{run_dir}: no trained models in it (icl, video: checkpoints/; text, sft: models/)"
        )
    atomic_write_json(run_dir / "exits.json", results)
    atomic_write_text(run_dir / "exits.md", "\n".join(markdown(results)) + "\n")
    plt = pyplot()
    if plt is not None:
        figure(results, run_dir / "exit_curves.png", plt)
    print("\n".join(markdown(results)))
    print(f"wrote {run_dir / 'exits.json'}, exits.md" + (", exit_curves.png" if plt is not None else ""))
    return 0
