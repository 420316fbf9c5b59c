"""The ``unrolled`` command: run experiments from configs, rebuild and overlay reports, run the demo.

unrolled run CONFIG [--set key=value ...] [--out DIR] [--resume]
unrolled run --resume --out DIR            (continue a run from its saved config)
unrolled report RUN_DIR [RUN_DIR ...] [--out DIR]
unrolled demo [--out DIR]
unrolled configs [--long]                          (one line per config; [needs hf] where an extra is missing)
unrolled env                                         (versions, for bug reports; unrolled --version)
unrolled config show CONFIG [--set key=value ...]   (the resolved config, every default filled in)
unrolled config schema [--out FILE]                (the JSON Schema of configs, for editors)
unrolled audit MODEL --data DATA [--out DIR]       (layerwise loss of a pretrained model, no training)
unrolled models                                    (the models that work offline, and their state)
unrolled convert smollm2 [--out DIR]               (once: SmolLM2's GGUF file into a plain checkpoint)
unrolled judge RUN_DIR --judge reference|local:MODEL|openai:MODEL [--base-url URL]
                                                   (judge an SFT run's saved responses with another judge)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from unrolled.cli_tools import cmd_convert, cmd_env, cmd_exits, cmd_judge, cmd_models, package_version
from unrolled.config import ConfigError, apply_overrides, load_yaml
from unrolled.experiments.config import (
    ExperimentConfig,
    config_dirs,
    dump_config,
    load_config,
    parse_config,
    resolve_config,
    shipped_configs,
)
from unrolled.train.checkpoint import CheckpointError

DEMO_OUT = Path("runs/demo")


def _print_summary(results: dict, cfg: ExperimentConfig, out: Path) -> None:
    from unrolled.experiments.registry import get_family
    from unrolled.train.loop import rank_and_world

    if rank_and_world()[0] != 0:
        return
    print()
    print(get_family(cfg.kind).summary(results))
    print()
    print(f"run folder: {out}  (report: {out / 'report.md'})")


def default_workers() -> int:
    """One worker process per core, at most 4 (each runs one unit with one thread)."""
    return max(1, min(4, os.cpu_count() or 1))


def _run(cfg: ExperimentConfig, out: Path, resume: bool, args: argparse.Namespace, hint: str) -> int:
    import torch

    from unrolled.experiments.runner import run_experiment
    from unrolled.train.loop import NonFiniteLossError

    torch.set_num_threads(args.threads)
    try:
        results = run_experiment(
            cfg,
            out,
            resume=resume,
            progress=not args.no_progress,
            workers=args.workers if args.workers is not None else default_workers(),
        )
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: {hint}", file=sys.stderr)
        return 130
    _print_summary(results, cfg, out)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.config is None:
        if not (args.resume and args.out):
            raise ConfigError("give a CONFIG, or --resume --out RUN_DIR to continue a run")
        saved = Path(args.out) / "config.yaml"
        if not saved.is_file():
            what = "does not exist" if not Path(args.out).exists() else "holds no run (no config.yaml)"
            raise ConfigError(
                f"{args.out} {what}: nothing to resume; start a run there with: unrolled run CONFIG --out {args.out}"
            )
        try:
            cfg = parse_config(apply_overrides(load_yaml(saved), args.set))
        except ConfigError as exc:
            raise ConfigError(
                f"{saved}: {exc}\n(a run folder written by an older version of unrolled may not resume; "
                "run its config again with another --out)"
            ) from None
    else:
        cfg = load_config(resolve_config(args.config), args.set)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    hint = f"unrolled run {args.config or ''} --resume --out {out}".replace("  ", " ")
    return _run(cfg, out, args.resume, args, hint)


def cmd_demo(args: argparse.Namespace) -> int:
    cfg = load_config(resolve_config("demo"), args.set)
    out = Path(args.out) if args.out else DEMO_OUT
    print(f"unrolled demo: {cfg.description.strip()}")
    print(f"writing to {out} (re-running continues or re-reports the same run)")
    return _run(cfg, out, True, args, f"unrolled demo --out {out}")


def cmd_report(args: argparse.Namespace) -> int:
    from unrolled.experiments.reporting import overlay, write_report

    for d in args.run_dirs:
        print(f"wrote {write_report(d)}")
    if len(args.run_dirs) > 1:
        out = Path(args.out) if args.out else Path("runs") / "overlay"
        print(f"wrote {overlay(args.run_dirs, out)}")
    return 0


def _one_line(text: str, width: int) -> str:
    """A description on one line, cut at ``width`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def cmd_configs(args: argparse.Namespace) -> int:
    import shutil
    import textwrap

    from unrolled.experiments.registry import get_family
    from unrolled.extras import missing

    width = max(40, shutil.get_terminal_size((120, 24)).columns - 38 - 14)
    shown: set[str] = set()
    for d in config_dirs():
        files = [p for p in sorted(d.glob("*.yaml")) if p.stem not in shown]
        if not files:
            continue
        where = "shipped with unrolled" if d.resolve() == shipped_configs().resolve() else "yours"
        print(f"# {d} ({where})")
        for p in files:
            shown.add(p.stem)
            try:
                cfg = load_config(p)
            except ConfigError as exc:
                print(f"{p.stem:36s} (invalid: {str(exc).splitlines()[0]})")
                continue
            needs = sorted({r.extra or r.module for r in missing(get_family(cfg.kind).requirements(cfg))})
            mark = f"[needs {', '.join(needs)}] " if needs else ""
            if args.long:
                body = textwrap.fill(" ".join(cfg.description.split()), width + 36, initial_indent="    ",
                                     subsequent_indent="    ")  # fmt: skip
                print(f"{p.stem}  {mark}\n{body}\n")
            else:
                print(f"{p.stem:36s} {mark}{_one_line(cfg.description, width)}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.action == "show":
        if args.config is None:
            raise ConfigError("config show: give a CONFIG (a YAML file or a name from configs/)")
        print(dump_config(load_config(resolve_config(args.config), args.set)), end="")
        return 0
    from unrolled.experiments.config import schema_text

    text = schema_text()
    if args.out is None:
        print(text, end="")
        return 0
    from unrolled.train.checkpoint import atomic_write_text

    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """``unrolled audit MODEL --data DATA``: an audit config run through the runner like any experiment."""
    where = Path(args.model)
    name = "_".join(where.resolve().parts[-2:]) if where.exists() else where.name or args.model
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    data = {
        "name": f"audit_{slug}",
        "description": f"descent audit of {args.model} on {args.data}",
        "seeds": args.seeds,
        "device": args.device,
        "task": {
            "kind": "audit",
            "model": args.model,
            "data": args.data,
            "split": args.split,
            "max_examples": args.max_examples,
            "max_length": args.max_length,
            "batch_size": args.batch_size,
        },
    }
    try:
        cfg = parse_config(apply_overrides(data, args.set))
    except ConfigError as exc:
        raise ConfigError(f"unrolled audit: {exc}") from None
    out = Path(args.out) if args.out else Path("runs") / "audit" / slug
    args.workers, args.no_progress = 1, True
    return _run(
        cfg, out, args.resume, args, f"unrolled audit {args.model} --data {args.data} --resume --out {out}"
    )


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (``--workers 0`` is an error, not the default)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _run_options(parser: argparse.ArgumentParser) -> None:
    """The options `run` and `demo` share."""
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--workers", type=positive_int, help="worker processes (default: one per core, at most 4)"
    )
    parser.add_argument(
        "--threads", type=positive_int, default=1, help="torch threads in the main process (default 1)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unrolled", description="Transformers as optimization algorithms.")
    parser.add_argument("--version", action="version", version=f"unrolled {package_version('unrolled')}")
    sub = parser.add_subparsers(dest="command", required=True)
    env = sub.add_parser(
        "env", help="one line of versions (unrolled, Python, torch, CUDA, the HF stack) for bug reports"
    )
    env.set_defaults(func=cmd_env)

    run = sub.add_parser("run", help="run an experiment config into a run folder")
    run.add_argument(
        "config", nargs="?", help="a YAML file, or a name from configs/ (see `unrolled configs`)"
    )
    run.add_argument("--out", help="run folder (default: runs/<name>)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    _run_options(run)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="the default demo: a Memformer against CG and the linear transformer")
    demo.add_argument("--out", help=f"run folder (default: {DEMO_OUT})")
    _run_options(demo)
    demo.set_defaults(func=cmd_demo)

    rep = sub.add_parser("report", help="rebuild reports of run folders; overlay several")
    rep.add_argument("run_dirs", nargs="+")
    rep.add_argument("--out", help="folder for the overlay of several runs (default: runs/overlay)")
    rep.set_defaults(func=cmd_report)

    cfgs = sub.add_parser("configs", help="list the configs (./configs, then the ones shipped with unrolled)")
    cfgs.add_argument("--long", action="store_true", help="every config's whole description")
    cfgs.set_defaults(func=cmd_configs)

    conf = sub.add_parser("config", help="show a resolved config, or write the JSON Schema of configs")
    conf.add_argument("action", choices=["show", "schema"])
    conf.add_argument("config", nargs="?", help="show: a YAML file or a name from configs/")
    conf.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="show: override a key")
    conf.add_argument("--out", help="schema: write to this file (default: print)")
    conf.set_defaults(func=cmd_config)

    aud = sub.add_parser(
        "audit", help="layerwise loss of a pretrained model through its own head, no training"
    )
    aud.add_argument(
        "model", help="an alias (`unrolled models`), a folder saved with save_pretrained, or a hub name"
    )
    aud.add_argument(
        "--data", required=True, help="newsgroups, chatterbot, chatterbot_pairs, a file, or a hub dataset"
    )
    aud.add_argument(
        "--split", default="test", help="classifiers: which side of the seeded split (default test)"
    )
    aud.add_argument("--max-examples", type=positive_int, default=64, help="texts to read (default 64)")
    aud.add_argument(
        "--max-length", type=positive_int, default=256, help="tokens per text at most (default 256)"
    )
    aud.add_argument("--batch-size", type=positive_int, default=8)
    aud.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="one audit per seed (the seed picks the texts)"
    )
    aud.add_argument("--device", default="cpu")
    aud.add_argument("--out", help="run folder (default: runs/audit/<model>)")
    aud.add_argument("--resume", action="store_true", help="re-report a finished audit in --out")
    aud.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    aud.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    aud.set_defaults(func=cmd_audit)

    mods = sub.add_parser("models", help="the models that work offline here, and whether they are ready")
    mods.set_defaults(func=cmd_models)

    conv = sub.add_parser("convert", help="convert a carrier model once (smollm2: GGUF -> plain checkpoint)")
    conv.add_argument("what", choices=["smollm2"])
    conv.add_argument("--out", help="where to write it (default: $UNROLLED_CACHE or ~/.cache/unrolled)")
    conv.set_defaults(func=cmd_convert)

    ex = sub.add_parser(
        "exits", help="early exit on a finished run's models: error against layers run, calibrated"
    )
    ex.add_argument(
        "run_dir", help="a finished run folder with its trained models (task.kind icl, text, video or sft)"
    )
    ex.add_argument(
        "--samples",
        type=positive_int,
        help="at most this many held-out and test samples per seed (icl: 2000 prompts; text: all; video: 512 "
        "clips; sft: 16 win-rate prompts)",
    )
    ex.add_argument("--budget", type=float,
                    help="the quality an exit may lose against the full model (icl: +0.01 of squared error / d "
                         "at the last pair; text: 0.01 of accuracy; video: 0.02 of RMSE, relative)")  # fmt: skip
    ex.add_argument("--layers", type=positive_int, nargs="+",
                    help="sft: the draft layers of self-speculative decoding (default: L/8, L/4, L/2)")  # fmt: skip
    ex.set_defaults(func=cmd_exits)

    jud = sub.add_parser("judge", help="judge a finished SFT run's saved responses with another judge")
    jud.add_argument("run_dir", help="the run folder of an SFT experiment")
    jud.add_argument(
        "--judge", required=True, help="reference, local:MODEL (alias, folder or hub name) or openai:MODEL"
    )
    jud.add_argument("--base-url", help="the OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    jud.add_argument("--timeout", type=float, help="seconds per request (openai)")
    jud.add_argument("--max-retries", type=int, help="retries per request (openai)")
    jud.set_defaults(func=cmd_judge)
    return parser


def init_distributed() -> bool:
    """Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1); gloo on CPU, NCCL on GPUs."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from unrolled.experiments.workers import RunFolderError
    from unrolled.extras import MissingExtraError, explain

    distributed = init_distributed()
    try:
        return int(args.func(args))
    except (
        ConfigError,
        RunFolderError,
        CheckpointError,
        FileNotFoundError,
        ValueError,
        MissingExtraError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # an optional extra's module, reached by a path no check covered
        extra = explain(exc, f"unrolled {args.command}")
        if extra is None:
            raise
        print(f"error: {extra}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `unrolled configs | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if distributed:
            import gc

            import torch.distributed as dist

            # A DDP wrapper left in a reference cycle would otherwise outlive its process group and abort
            # the interpreter's exit (SIGABRT, "terminate called without an active exception"), ~1 run in 20.
            gc.collect()
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
