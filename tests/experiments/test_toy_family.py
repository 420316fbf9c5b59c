"""A new experiment family written in the test suite runs through `unrolled run` without touching the runner.

The toy family: gradient descent on f(w) = ½‖w − c‖² from w = 0, where c is drawn per seed. Its loss after k
steps is (1 − η)^{2k} f(0), a closed form the test checks the run folder against.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import torch
import yaml
from pydantic import Field

from unrolled.cli import main
from unrolled.config import ConfigError, ConfigModel, Float, Int, Str
from unrolled.experiments import (
    ExperimentConfig,
    ExperimentFamily,
    Unit,
    UnitContext,
    get_family,
    json_schema,
    known_kinds,
    register_family,
    unregister_family,
)
from unrolled.report import heading, table
from unrolled.seeding import generator


class ToyTask(ConfigModel):
    kind: Literal["toy"]
    dim: Annotated[Int, Field(ge=1)] = 3


class ToyMethod(ConfigModel):
    name: Str
    kind: Literal["gd"]
    lr: Annotated[Float, Field(gt=0, lt=2)]
    steps: Annotated[Int, Field(ge=1)] = 5


class ToyExperiment(ExperimentConfig):
    task: ToyTask
    methods: tuple[ToyMethod, ...]


class ToyFamily(ExperimentFamily):
    kind = "toy"
    config_class = ToyExperiment
    title = "toy quadratic"

    def plan(self, cfg: ToyExperiment) -> list[Unit]:
        return [Unit(m.name, seed, None, m, steps=m.steps) for seed in cfg.seeds for m in cfg.methods]

    def seed_data(self, cfg: ToyExperiment, seed: int, dtype: torch.dtype, device: str) -> torch.Tensor:
        return torch.randn(cfg.task.dim, generator=generator(seed, "toy"), dtype=torch.float64)

    def run_unit(self, unit: Unit, data: torch.Tensor, ctx: UnitContext) -> dict[str, Any]:
        method: ToyMethod = unit.spec
        w = torch.zeros_like(data)
        losses = [0.5 * float(((w - data) ** 2).sum())]
        for step in range(1, method.steps + 1):
            w = w - method.lr * (w - data)
            losses.append(0.5 * float(((w - data) ** 2).sum()))
            ctx.log_metrics({"step": step, "loss": losses[-1]})
            ctx.on_step(step)
        return {"method": method.name, "seed": unit.seed, "losses": losses}

    def aggregate(self, cfg: ToyExperiment, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": cfg.name,
            "description": cfg.description,
            "task": self.title,
            "methods": {},
        }
        for m in cfg.methods:
            finals = [r["losses"][-1] for r in records if r["method"] == m.name]
            out["methods"][m.name] = {"final_loss_mean": sum(finals) / len(finals), "records": len(finals)}
        return out

    def report(self, results: dict[str, Any], run_dir: Path, plt: Any | None) -> list[str]:
        return [*heading(results), "## Final loss", "", self.summary(results), ""]

    def summary(self, results: dict[str, Any]) -> str:
        rows = [(name, [f"{m['final_loss_mean']:.3g}"]) for name, m in results["methods"].items()]
        return table(["final loss"], rows)


CONFIG = {
    "name": "toy_run",
    "description": "gradient descent on a quadratic",
    "seeds": [0, 1],
    "task": {"kind": "toy", "dim": 4},
    "methods": [
        {"name": "slow", "kind": "gd", "lr": 0.1, "steps": 6},
        {"name": "fast", "kind": "gd", "lr": 0.9},
    ],
}


@pytest.fixture
def toy():
    family = register_family(ToyFamily())
    yield family
    unregister_family("toy")


def test_unknown_kinds_are_named_until_registered(tmp_path, capsys):
    built_in = ", ".join(sorted(known_kinds()))
    assert "toy" not in built_in and "regression" in built_in
    with pytest.raises(ConfigError, match=rf"task\.kind: unknown kind 'toy'; one of {built_in}$"):
        get_family("toy")
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "unknown kind 'toy'" in capsys.readouterr().err


def test_a_family_registered_from_outside_runs_through_the_cli(toy, tmp_path, capsys):
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    assert "| slow |" in capsys.readouterr().out  # the family's own summary
    for name in ("config.yaml", "metrics.jsonl", "results.json", "report.md"):
        assert (out / name).is_file(), name
    for seed in (0, 1):
        for method, lr, steps in (("slow", 0.1, 6), ("fast", 0.9, 5)):
            losses = json.loads((out / "units" / method / f"seed{seed}.json").read_text())["losses"]
            assert len(losses) == steps + 1
            for k, f in enumerate(losses):  # the closed form of gradient descent on a quadratic
                assert math.isclose(f, (1 - lr) ** (2 * k) * losses[0], rel_tol=1e-9)
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "toy quadratic" and results["methods"]["fast"]["records"] == 2
    assert results["timing"]["workers"] == 1
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * (6 + 5) and {ln["method"] for ln in lines} == {"slow", "fast"}
    report = (out / "report.md").read_text()
    assert "## Final loss" in report and "![training loss](training.png)" in report  # shared plots, for free
    assert (out / "training.png").stat().st_size > 1000
    # resume: every unit is done, nothing runs again; report rebuilds from the folder alone
    (out / "report.md").unlink()
    assert main(["run", "--resume", "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    assert "4 of 4 units already done" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0 and (out / "report.md").exists()
    # its config section is checked like any other, and it is in the JSON Schema while registered
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**CONFIG, "methods": [{"name": "x", "kind": "gd", "lr": 3.0}]}))
    assert main(["run", str(bad), "--out", str(tmp_path / "bad")]) == 2
    assert "methods[0].lr: must be in (0, 2), got 3.0" in capsys.readouterr().err
    assert "ToyExperiment" in json.dumps(json_schema())


def test_plugins_are_found_through_entry_points_and_kinds_are_not_taken_twice(monkeypatch):
    from unrolled.experiments import registry

    class FakeEntryPoint:  # what importlib.metadata gives for a package declaring the plug-in
        name = "toy"

        def load(self):
            register_family(ToyFamily())

    monkeypatch.setattr(
        registry, "entry_points", lambda group: [FakeEntryPoint()] if group == "unrolled.experiments" else []
    )
    try:
        assert "toy" in registry.known_kinds()
        assert isinstance(get_family("toy"), ToyFamily)

        class Impostor(ToyFamily):
            pass

        with pytest.raises(ValueError, match="'toy' is already registered to ToyFamily"):
            register_family(Impostor())
        assert isinstance(register_family(Impostor(), replace=True), Impostor)
    finally:
        unregister_family("toy")
