"""The in-context learning family end to end, kept tiny: units, results, gaps, resume, config errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from unrolled.cli import main
from unrolled.config import from_dict
from unrolled.experiments import ExperimentConfig, run_experiment
from unrolled.experiments.icl import PromptStream
from unrolled.experiments.icl.aggregate import seed_interval, t975
from unrolled.tasks.regression import RegressionTask
from unrolled.validation import ConfigError

pytest.importorskip("transformers")

TINY = {
    "name": "tiny_icl",
    "seeds": [0, 1],
    "task": {"kind": "icl", "d": 3, "points": 7},
    "train": {"steps": 12, "batch_size": 16, "lr": 0.003, "log_every": 4, "checkpoint_every": 5},
    "eval": {
        "prompts": 120,
        "validation": 80,
        "reading": {"probe_prompts": 80, "prompts": 40},
        "curve_every": 4,
        "curve_prompts": 50,
        "shifts": [{"kind": "variance", "sizes": [0.5, 2.0]}, {"kind": "points", "sizes": [9]}],
    },
    "baselines": {"gd_steps": [0, 1, 4], "gd_tuned_steps": [1, 2], "newton_steps": 3},
    "methods": [
        {"name": "erm", "kind": "gpt2", "width": 16, "depth": 2, "heads": 2},
        {"name": "con", "kind": "gpt2", "width": 16, "depth": 2, "heads": 2, "baseline": "erm",
         "constraints": {"alpha": 0.1, "dual_lr": 5.0}},
        {"name": "ut", "kind": "ut", "width": 16, "depth": 2, "heads": 2},
    ],
}  # fmt: skip


def tiny(**overrides) -> ExperimentConfig:
    data = json.loads(json.dumps(TINY))
    data.update(overrides)
    return from_dict(ExperimentConfig, data)


def _units(run) -> dict:
    return {p.stem + "/" + p.parent.name: json.loads(p.read_text()) for p in (run / "units").rglob("*.json")}


@pytest.fixture(scope="module")
def tiny_icl_run(tmp_path_factory):
    """One tiny run shared by the tests that only read it (the run itself, and its early exits)."""
    run = tmp_path_factory.mktemp("icl") / "run"
    return run, run_experiment(tiny(), run, progress=False, log=lambda _m: None)


def test_icl_run_scores_learners_and_baselines_and_pairs_the_gaps(tiny_icl_run):
    run, results = tiny_icl_run
    assert set(results["learners"]) == {"erm", "con", "ut"}
    splits = {"test", "shift:variance=0.5", "shift:variance=2", "shift:points=9"}
    assert set(results["splits"]) == splits
    erm = results["learners"]["erm"]["splits"]
    assert len(erm["test"]["curve"]) == 7 and len(erm["shift:points=9"]["curve"]) == 9
    assert len(erm["test"]["layers_last"]) == 3  # the embedding and 2 layers
    # the gap is the paired difference of the records, seed by seed
    units = _units(run)
    gap = results["gaps"]["con"]["splits"]["shift:variance=2"]["last"]
    for seed, value in zip([0, 1], gap["seeds"], strict=True):
        a = units[f"seed{seed}/con"]["splits"]["shift:variance=2"]["last"]["mean"][-1]
        b = units[f"seed{seed}/erm"]["splits"]["shift:variance=2"]["last"]["mean"][-1]
        assert value == pytest.approx(a - b)
    assert gap["ci"] == pytest.approx(t975(1) * float(torch.tensor(gap["seeds"]).std()) / math.sqrt(2))
    base = results["baselines"]["test"]
    assert base["least_squares"]["last"][0] < 1e-8  # noiseless, n = 6 > d: least squares is exact
    assert "lasso" not in base and "bayes" in base  # Lasso only for sparse tasks
    reading = results["learners"]["erm"]["reading"]["probe"]["newton"]
    assert len(reading["similarity"]) == 3 and len(reading["best"]) == 3
    assert set(results["bar"]) == {"erm", "ut"}  # the ERM learners
    curve = results["learners"]["erm"]["learning_curve"]
    assert curve["steps"] == [4, 8, 12] and len(curve["curve"][0]) == 7
    report = (run / "report.md").read_text()
    assert "Shifts: layerwise method" in report and "icl_shift_gaps.png" in report


def test_interrupted_icl_run_resumes_to_identical_results(tmp_path):
    cfg = tiny(seeds=[0])
    ref = run_experiment(cfg, tmp_path / "ref", progress=False, log=lambda _m: None)

    def interrupt(unit, step):
        if unit.method == "con" and step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path / "cut", progress=False, on_step=interrupt, log=lambda _m: None)
    resumed = run_experiment(cfg, tmp_path / "cut", resume=True, progress=False, log=lambda _m: None)

    def untimed(learners):
        return {k: {f: v for f, v in e.items() if f != "train_seconds"} for k, e in learners.items()}

    assert untimed(resumed["learners"]) == untimed(ref["learners"])
    assert resumed["gaps"] == ref["gaps"]


def test_prompt_stream_follows_gargs_curriculum_and_resumes():
    cfg = tiny(
        task={"kind": "icl", "d": 4, "points": 9,
              "curriculum": {"dims": {"start": 2, "end": 4, "interval": 3},
                             "points": {"start": 5, "end": 9, "inc": 2, "interval": 3}}},
        train={"steps": 20, "batch_size": 4, "log_every": 4},
    )  # fmt: skip
    task = RegressionTask(cfg.task.regression(), 0)
    stream = PromptStream(cfg, task, cfg.train, torch.Generator().manual_seed(0))
    shapes = [stream.shape_at(t) for t in (1, 3, 4, 7, 100)]
    assert shapes == [(5, 2), (5, 2), (7, 3), (9, 4), (9, 4)]
    for _ in range(4):
        p, _y = stream.next()
    assert p.points == 7 and (p.xs[..., 3:] == 0).all() and not (p.xs[..., :3] == 0).all()
    state = stream.state_dict()
    a = stream.next()[0]
    stream.load_state_dict(state)
    assert torch.equal(stream.next()[0].xs, a.xs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"methods": [{"name": "baselines", "kind": "ut"}]}, "baselines"),
        ({"task": {"kind": "icl", "d": 4, "curriculum": {"dims": {"start": 2, "end": 3}}}}, "curriculum.dims.end"),
        ({"eval": {"shifts": [{"kind": "points", "sizes": [9.5]}]}}, "integers"),
        ({"methods": [{"name": "a", "kind": "ut", "baseline": "zz"}]}, "no method named"),
        ({"methods": [{"name": "a", "kind": "gpt2", "widht": 8}]}, "widht"),
        ({"eval": {"shifts": [{"kind": "skew", "sizes": [1]}, {"kind": "skew", "sizes": [2]}]}}, "one entry per kind"),
    ],
)  # fmt: skip
def test_bad_icl_configs_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message):
        tiny(**change)


def test_seed_interval_is_students_t():
    stats = pytest.importorskip("scipy.stats")
    values = [0.1, 0.3, 0.2, 0.25, 0.15]
    out = seed_interval(values)
    sem = float(torch.tensor(values, dtype=torch.float64).std()) / math.sqrt(5)
    assert out["ci"] == pytest.approx(stats.t.ppf(0.975, 4) * sem, rel=1e-3)
    for df in (1, 2, 4, 9, 12, 30, 100):
        assert t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=0.011)


def test_exits_of_a_finished_icl_run(tiny_icl_run, capsys):
    """``unrolled exits``: curves, calibrated exits and CG stopped on its residual."""
    run, results = tiny_icl_run
    assert main(["exits", str(run), "--samples", "120", "--budget", "0.05"]) == 0  # 120: the run's test split
    out = json.loads((run / "exits.json").read_text())
    assert set(out["methods"]) == {"erm", "con", "ut"}
    for name, m in out["methods"].items():
        # the full model's error on the run's own test prompts is what the run itself measured
        own = results["learners"][name]["splits"]["test"]["last"]["mean"]  # the mean over seeds
        assert m["full"]["mean"] == pytest.approx(own, rel=1e-5)
        assert m["fixed"][-1] == pytest.approx(m["full"]["mean"], rel=1e-6)  # truncated after L: the model
        layers = m["small_step"]["mean_layers"]
        assert all(1.0 <= v <= m["depth"] for v in layers)
        assert layers == sorted(layers, reverse=True)  # a looser tolerance never runs more layers
        assert m["calibrated"]["seeds"] == 2 and m["per_seed"][0]["timing"]["exit_seconds"] > 0
    cg = out["cg"]
    assert cg["error"][cg["tol"].index(1e-8)] < 1e-10  # noiseless, n = 6 > d = 3: CG solves it exactly
    assert max(cg["iterations"]) <= 2 * 3
    assert (run / "exits.md").is_file() and "| learner |" in capsys.readouterr().out


def test_exits_name_what_is_missing(tmp_path, capsys):
    assert main(["exits", str(tmp_path)]) == 2
    assert "no run folder here" in capsys.readouterr().err
