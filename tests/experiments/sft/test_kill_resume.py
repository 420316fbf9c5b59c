"""Constrained SFT killed with SIGKILL between two checkpoints, then resumed, ends where an uninterrupted run
ends: the same training losses, multipliers, eval token accuracy and layerwise losses (issue 29).

The run is a separate process that kills itself (``os.kill(os.getpid(), SIGKILL)``: no ``finally``, no
flushing, what a crash or ``kill -9`` leaves) at a step between the checkpoint at step 2 and the next. The
quick test uses a tiny Llama saved to disk; a slow one does the same on SmolLM2-135M when it is converted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from unrolled.config import to_dict

DRIVER = """
import os, signal, sys
from unrolled.experiments import load_config, run_experiment

cfg, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])

def on_step(unit, step):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

run_experiment(load_config(cfg), out, resume=True, progress=False, on_step=on_step if kill_at else None,
               log=lambda _m: None)
"""


def _run(cfg_file: Path, out: Path, kill_at: int, cwd: Path) -> subprocess.CompletedProcess:
    driver = cwd / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(driver), str(cfg_file), str(out), str(kill_at)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=1200)  # fmt: skip


def _training_lines(out: Path) -> list[dict]:
    """The logged training steps of ``metrics.jsonl`` (loss, multipliers), sorted by step."""
    lines = [json.loads(t) for t in (out / "metrics.jsonl").read_text().splitlines() if t.strip()]
    keep = ("step", "loss", "multiplier", "layer_loss")
    rows = [{k: v for k, v in r.items() if k.split("/")[0] in keep} for r in lines if "loss" in r]
    return sorted(rows, key=lambda r: r["step"])


def kill_and_resume(cfg, tmp_path: Path, kill_at: int) -> tuple[dict, dict, Path, Path]:
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(to_dict(cfg)))
    ref = _run(cfg_file, tmp_path / "ref", 0, tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]
    cut = _run(cfg_file, tmp_path / "cut", kill_at, tmp_path)
    assert cut.returncode == -signal.SIGKILL, (
        f"expected a SIGKILL, got {cut.returncode}\n{cut.stderr[-2000:]}"
    )
    assert not (tmp_path / "cut" / "results.json").exists()
    (ckpt,) = (tmp_path / "cut" / "checkpoints").glob("*/seed0.pt")
    assert (
        torch.load(ckpt)["step"] == kill_at - 1
    )  # killed after the checkpoint at kill_at − 1, before the next
    resumed = _run(cfg_file, tmp_path / "cut", 0, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    load = lambda p: json.loads((p / "results.json").read_text())  # noqa: E731
    return load(tmp_path / "ref"), load(tmp_path / "cut"), tmp_path / "ref", tmp_path / "cut"


def assert_same_run(ref: dict, resumed: dict, ref_dir: Path, cut_dir: Path) -> None:
    for name, a in ref["methods"].items():
        b = resumed["methods"][name]
        for lam_a, lam_b in zip(
            a.get("multipliers_per_seed", []), b.get("multipliers_per_seed", []), strict=True
        ):
            assert lam_b == pytest.approx(lam_a, rel=1e-4, abs=1e-6)
        assert b["token_accuracy_mean"] == pytest.approx(a["token_accuracy_mean"], abs=1e-6)
        for gamma, losses in a["layer_loss_mean"].items():
            assert b["layer_loss_mean"][gamma] == pytest.approx(losses, rel=1e-4, abs=1e-6)
    a_lines, b_lines = _training_lines(ref_dir), _training_lines(cut_dir)
    assert [r["step"] for r in b_lines] == [r["step"] for r in a_lines]  # no step lost, none logged twice
    for ra, rb in zip(a_lines, b_lines, strict=True):
        for key, value in ra.items():
            assert rb[key] == pytest.approx(value, rel=1e-4, abs=1e-6), f"step {ra['step']}: {key}"


def test_sft_killed_between_checkpoints_resumes_to_the_same_run(tmp_path, tiny_chat_model, instruction_file):
    from tests.experiments.sft.test_sft_family import tiny_config

    cfg = tiny_config(
        tiny_chat_model, instruction_file, winrate=None,
        train={"steps": 6, "batch_size": 4, "lr": 0.01, "log_every": 1, "checkpoint_every": 2,
               "eval_batch_size": 4, "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
        methods=[{"name": "con", "constraints": {"alpha": 0.1, "dual_lr": 1.0, "dual_every": 1}}],
    )  # fmt: skip
    ref, resumed, ref_dir, cut_dir = kill_and_resume(cfg, tmp_path, kill_at=3)
    assert_same_run(ref, resumed, ref_dir, cut_dir)


@pytest.mark.slow
def test_smollm2_sft_killed_between_checkpoints_resumes_to_the_same_run(tmp_path):
    from unrolled.config import from_dict
    from unrolled.experiments import ExperimentConfig
    from unrolled.models.hub import ALIASES, ModelNotFoundError

    try:
        ALIASES["smollm2-135m-instruct"]()
    except ModelNotFoundError as exc:
        pytest.skip(f"SmolLM2 is not converted here ({exc})")
    cfg = from_dict(ExperimentConfig, {
        "name": "smollm2_kill_resume",
        "seeds": [0],
        "task": {"kind": "sft", "source": "chatterbot", "model": "smollm2-135m-instruct", "max_length": 96,
                 "eval_instructions": 8, "winrate_prompts": 1},
        "train": {"steps": 6, "batch_size": 2, "lr": 0.0002, "log_every": 1, "checkpoint_every": 2,
                  "eval_batch_size": 8, "lora": {"r": 8, "alpha": 16}},
        "perturbation": {"train_gamma": 0.5, "test_gammas": [0.0]},
        "winrate": None,
        "methods": [{"name": "con", "constraints": {"alpha": 0.01, "dual_lr": 1.0, "dual_every": 1,
                                                    "relative": True, "multiplier_max": 1.0}}],
    })  # fmt: skip
    ref, resumed, ref_dir, cut_dir = kill_and_resume(cfg, tmp_path, kill_at=3)
    assert_same_run(ref, resumed, ref_dir, cut_dir)
