"""``train.report_to``: the own-model loop's TensorBoard scalars, read back with TensorBoard's own reader, hold
the values the loop logged, under the tags the Hugging Face Trainer writes for the same objective."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from unrolled.constrained.config import ConstraintConfig
from unrolled.constrained.factory import objective_from_config
from unrolled.experiments.regression import LearnedMethod, build_model
from unrolled.tasks import RegressionTask
from unrolled.tasks.regression import RegressionConfig
from unrolled.train import train
from unrolled.train.config import TrainConfig
from unrolled.train.loop import RegressionStream
from unrolled.train.tracking import Tracker, normalize_report_to, scalars
from unrolled.trajectory import squared_error

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

CONSTRAINTS = ConstraintConfig(alpha=0.5, dual_lr=2.0)


def _events(folder) -> dict[str, dict[int, float]]:
    """Every scalar TensorBoard finds under ``folder``: tag -> {step: value}."""
    files = sorted(folder.rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file under {folder}"
    out: dict[str, dict[int, float]] = {}
    for f in files:
        acc = EventAccumulator(str(f))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return out


def _own_run(tmp_path, depth: int = 3):
    task = RegressionTask(RegressionConfig(), seed=0)
    model = build_model(
        LearnedMethod(name="m", kind="memformer_lfom"), 5, 20, depth, torch.Generator().manual_seed(0)
    )
    cfg = TrainConfig(steps=12, batch_size=32, log_every=4, report_to="tensorboard")
    objective, _ = objective_from_config(CONSTRAINTS, depth, squared_error)
    logged: list[dict] = []
    train(
        model,
        RegressionStream(task, cfg, torch.Generator().manual_seed(1)),
        cfg,
        objective=objective,
        on_log=logged.append,
        log_dir=tmp_path / "runs",
    )
    return logged, _events(tmp_path / "runs")


def test_the_loops_tensorboard_scalars_are_the_logged_values(tmp_path):
    logged, events = _own_run(tmp_path)
    assert [r["step"] for r in logged] == [1, 4, 8, 12]
    for r in logged:
        s = r["step"]
        assert events["train/loss"][s] == pytest.approx(r["loss"], rel=1e-6)
        assert events["train/learning_rate"][s] == pytest.approx(r["lr"], rel=1e-6)
        for l, v in enumerate(r["layer_losses"]):
            assert events[f"train/layer_loss/{l}"][s] == pytest.approx(v, rel=1e-6)
        for l, v in enumerate(r["multipliers"], start=1):  # after this step's dual step
            assert events[f"train/multiplier/{l}"][s] == pytest.approx(v, rel=1e-6, abs=1e-12)
        for l, v in enumerate(r["slacks"], start=1):
            assert events[f"train/slack/{l}"][s] == pytest.approx(v, rel=1e-6, abs=1e-12)
        assert events["train/task_weight"][s] == pytest.approx(r["task_weight"], rel=1e-6)
    assert max(events["train/multiplier/1"].values()) > 0  # the constraints bind: the values are not trivial


@pytest.mark.slow
def test_the_tags_are_the_hugging_face_trainers(tmp_path):
    transformers = pytest.importorskip("transformers")
    from tests.test_hf_trainer import Examples, args, solver  # a 3-layer encoder, as the own model below
    from unrolled.train.hf import ConstrainedTrainer

    trainer = ConstrainedTrainer(
        model=solver(),
        args=args(tmp_path / "hf", max_steps=2, report_to="tensorboard"),
        train_dataset=Examples(n=8),
        constraints=CONSTRAINTS,
    )
    trainer.train()
    hf_tags = set(_events(tmp_path / "hf"))
    _, own = _own_run(tmp_path / "own", depth=3)
    per_layer = {t for t in hf_tags if t.split("/")[1] in ("layer_loss", "slack", "multiplier")}
    assert len(per_layer) == 4 + 3 + 3
    assert per_layer | {"train/loss", "train/learning_rate", "train/task_weight"} <= set(own)
    assert transformers.__version__  # the Trainer's own TensorBoard callback wrote hf_tags


def test_scalars_flatten_lists_skip_unread_layers_and_flag_infeasible_ones():
    record = {
        "step": 3, "loss": 1.5, "lr": 0.1, "layer_losses": [2.0, None, 1.0], "multipliers": [0.0, 0.5],
        "infeasible": [2], "task_weight": 0.4, "dual_step": 3, "note": "text", "nan": math.nan,
    }  # fmt: skip
    assert scalars(record) == {
        "loss": 1.5, "learning_rate": 0.1, "layer_loss/0": 2.0, "layer_loss/2": 1.0, "multiplier/1": 0.0,
        "multiplier/2": 0.5, "infeasible/2": 1.0, "task_weight": 0.4, "dual_step": 3.0,
    }  # fmt: skip


def test_report_to_names_are_checked_and_none_writes_nothing(tmp_path):
    assert normalize_report_to("none") == [] and normalize_report_to(["tensorboard"]) == ["tensorboard"]
    with pytest.raises(ValueError, match=r"unknown writer.*'tensorbord'"):
        normalize_report_to(["tensorbord"])
    with Tracker("none", tmp_path / "runs") as t:
        t.log({"step": 1, "loss": 1.0})
    assert not (tmp_path / "runs").exists()


def test_wandb_without_the_package_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # importing it now raises ImportError
    with pytest.raises(ImportError, match="pip install wandb"):
        Tracker("wandb", tmp_path)


def test_a_config_rejects_an_unknown_writer():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        TrainConfig(report_to="mlflow")
