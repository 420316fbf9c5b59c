"""The core install on its own: a wheel of unrolled installed with ``[plot]`` only (no ``[hf]``, no ``[video]``)
in a fresh virtual environment, every subcommand run from a folder without ./configs. Each exits 0, or 2 with a
one-line message naming the extra to install; none prints a traceback (issue 29).

Slow (a venv, torch from the local wheel, the core's dependencies: about a minute), so marked ``slow``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.stem for p in (ROOT / "src" / "unrolled" / "configs").glob("*.yaml"))


def _sh(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def core_env(tmp_path_factory) -> tuple[Path, Path]:
    """(the ``unrolled`` executable of a fresh venv holding the wheel with [plot] only, a work folder)."""
    tmp = tmp_path_factory.mktemp("core")
    wheel_dir, venv = tmp / "wheel", tmp / "venv"
    out = _sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheel_dir), str(ROOT)], tmp)
    assert out.returncode == 0, out.stderr[-2000:]
    base = getattr(sys, "_base_executable", sys.executable)
    assert _sh([base, "-m", "venv", str(venv)], tmp).returncode == 0
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    out = _sh([*pip, "torch==2.13.0"], tmp)  # the CPU wheel on this machine's disk; pinned, as the Makefile
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(wheel_dir.glob("unrolled-*.whl"))
    out = _sh([*pip, f"{wheel}[plot]"], tmp)
    assert out.returncode == 0, out.stderr[-2000:]
    work = tmp / "work"
    work.mkdir()
    return venv / "bin" / "unrolled", work


def _check(result: subprocess.CompletedProcess, command: str) -> None:
    assert "Traceback" not in result.stderr + result.stdout, (
        f"{command}: a traceback\n{result.stderr[-3000:]}"
    )
    assert result.returncode in (0, 2), f"{command}: exit {result.returncode}\n{result.stderr[-2000:]}"


@pytest.mark.slow
def test_the_hf_and_video_extras_are_really_absent(core_env):
    exe, work = core_env
    python = exe.parent / "python"
    for module in ("transformers", "trl", "peft", "datasets", "av", "skimage"):
        out = _sh([str(python), "-c", f"import {module}"], work)
        assert out.returncode != 0, f"{module} is installed in the core environment"


@pytest.mark.slow
def test_every_command_works_or_names_the_extra(core_env):
    exe, work = core_env
    needs_hf = "pip install 'unrolled[hf]'"
    expectations: list[tuple[list[str], int, str]] = [
        (["--version"], 0, "unrolled"),
        (["env"], 0, "torch"),
        (["config", "schema"], 0, "unrolled experiment config"),
        (["models"], 0, needs_hf),
        (["run", "text_constrained_vs_erm", "--out", "t"], 2, needs_hf),
        (["run", "sft_constrained_vs_erm", "--out", "s"], 2, needs_hf),
        (["run", "icl_toy", "--out", "i"], 2, needs_hf),  # its GPT-2 learner
        (["run", "denoise_constrained_vs_erm", "--out", "v"], 2, "pip install 'unrolled[video]'"),
        (["audit", "smollm2-135m-instruct", "--data", "chatterbot_pairs", "--out", "a"], 2, needs_hf),
        (["convert", "smollm2"], 2, needs_hf),
        (["judge", "nowhere", "--judge", "reference"], 2, "error:"),
        (["report", "nowhere"], 2, "not a run folder"),
        (["exits", "nowhere"], 2, "no run folder here"),
        (["run", "--resume", "--out", "nowhere"], 2, "nothing to resume"),
    ]
    for args, code, text in expectations:
        out = _sh([str(exe), *args], work)
        command = "unrolled " + " ".join(args)
        _check(out, command)
        assert out.returncode == code, (
            f"{command}: exit {out.returncode}, expected {code}\n{out.stderr[-2000:]}"
        )
        assert text in out.stdout + out.stderr, f"{command}: no {text!r} in\n{out.stdout[-1000:]}{out.stderr}"
        if code == 2:
            assert len(out.stderr.strip().splitlines()) == 1, f"{command}: not one line\n{out.stderr}"
    assert not (work / "t").exists(), "a run that cannot start made its run folder"


@pytest.mark.slow
def test_configs_lists_every_shipped_config_and_marks_the_extras(core_env):
    exe, work = core_env
    out = _sh([str(exe), "configs"], work)
    _check(out, "unrolled configs")
    assert out.returncode == 0
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line and not line.startswith("#")}
    assert sorted(lines) == SHIPPED
    assert "[needs hf]" in lines["text_constrained_vs_erm"] and "[needs hf]" in lines["sft_recipes"]
    assert "[needs video]" in lines["denoise_constrained_vs_erm"]
    assert "[needs" not in lines["demo"] and "[needs" not in lines["icl_ut_study"]
    assert all(len(line) <= 200 for line in lines.values())
    for name in SHIPPED:  # every config resolves without the extras
        shown = _sh([str(exe), "config", "show", name], work)
        _check(shown, f"unrolled config show {name}")
        assert shown.returncode == 0, f"config show {name}: {shown.stderr}"


@pytest.mark.slow
def test_the_core_runs_its_own_models(core_env):
    exe, work = core_env
    demo = _sh([str(exe), "run", "demo", "--set", "seeds=[0]", "--set", "depths=[1]", "--set", "train.steps=3",
                "--out", "demo", "--no-progress"], work)  # fmt: skip
    _check(demo, "unrolled run demo")
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert (work / "demo" / "report.md").is_file() and list((work / "demo").glob("*.png"))
    ut = _sh([str(exe), "run", "icl_toy", "--set", "methods=[{name: ut, kind: ut, width: 16, depth: 1, heads: 2}]",
              "--set", "train.steps=3", "--set", "eval.prompts=50", "--set", "eval.curve_every=100",
              "--set", "eval.reading=null", "--out", "ut", "--no-progress"], work)  # fmt: skip
    _check(ut, "unrolled run icl_toy (UT only)")
    assert ut.returncode == 0, ut.stderr[-2000:]
