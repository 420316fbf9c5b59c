"""Mixtures of experts and distribution shifts in regression experiments, end to end."""

import json
import math

import pytest
import torch

from unrolled.config import ConfigError, from_dict
from unrolled.experiments import ExperimentConfig, run_experiment
from unrolled.solvers import ConjugateGradient
from unrolled.tasks import RegressionTask
from unrolled.tasks.regression import RegressionConfig


def test_shift_config_errors_name_the_shift():
    base = {
        "name": "s",
        "task": {"d": 3, "n": 8, "covariance": "isotropic"},
        "methods": [{"name": "cg", "kind": "cg"}],
    }
    with pytest.raises(ConfigError, match=r"eval\.shifts\[0\]\.mixture: required"):
        from_dict(ExperimentConfig, {**base, "eval": {"shifts": [{"name": "m", "covariance": "mixture"}]}})
    with pytest.raises(ConfigError, match=r"eval\.shifts\[0\]\.variance: must be > 0"):
        from_dict(ExperimentConfig, {**base, "eval": {"shifts": [{"name": "v", "variance": -1}]}})
    with pytest.raises(ConfigError, match="duplicate shift names"):
        from_dict(ExperimentConfig, {**base, "eval": {"shifts": [{"name": "v"}, {"name": "v"}]}})


MOE = {
    "name": "tiny_moe",
    "seeds": [0],
    "depths": [2],
    "task": {"d": 2, "n": 6, "covariance": "isotropic"},
    "train": {"protocol": "fixed_batch", "steps": 30, "batch_size": 64, "checkpoint_every": 10},
    "eval": {"batch_size": 300, "validation_size": 100, "shifts": [{"name": "var3", "variance": 3.0}]},
    "methods": [
        {
            "name": "moe",
            "kind": "mixture",
            "expert_variances": [1.0, 2.0],
            "adapt_steps": 20,
            "adapt_size": 64,
        },
        {
            "name": "moe_g",
            "kind": "mixture",
            "expert_variances": [1.0, 2.0],
            "adapt": "gates_and_gamma",
            "gate": "softmax",
            "adapt_steps": 20,
            "adapt_size": 64,
        },
        {"name": "cg", "kind": "cg"},
    ],
}


def test_mixture_experiment_end_to_end(tmp_path):
    cfg = from_dict(ExperimentConfig, json.loads(json.dumps(MOE)))
    results = run_experiment(cfg, tmp_path / "run", progress=False, log=lambda _: None)
    methods = results["methods"]
    experts = [k for k, m in methods.items() if m["kind"] == "expert"]
    assert len(experts) == 2  # shared by both mixtures, trained once each
    for name in ("moe", "moe_g"):
        m = methods[name]
        assert {"test", "shift:var3", "adapt:base", "adapt:var3"} <= set(m)
        adapted = m["adapted"]["0_L2"]
        assert set(adapted) == {"base", "var3"}
        if name == "moe_g":
            assert math.isclose(sum(adapted["var3"]["gates"]), 1.0, rel_tol=1e-6)
    # the shifted test prompts are the shifted task's: CG on them, recomputed independently
    shifted = RegressionTask(RegressionConfig(d=2, n=6, covariance="isotropic", variance=3.0), 0)
    assert math.isclose(
        results["shifts"]["var3"]["zero_predictor_log_loss"], math.log(2 * 9.0), rel_tol=1e-12
    )
    from unrolled.seeding import generator

    test = shifted.sample(300, generator(0, "test", "shift", "var3"), torch.float32)
    cg_loss = float(ConjugateGradient()(test, 2).layerwise_losses(test.y_query)[2])
    assert math.isclose(methods["cg"]["shift:var3"]["log_loss_mean"][0], math.log(cg_loss), rel_tol=1e-5)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Out of distribution" in report and (tmp_path / "run" / "shifts.png").exists()


def test_aggregate_counts_diverged_seeds_and_averages_the_rest():
    """A seed whose loss overflowed (None in its record) is counted, not averaged in, and JSON stays valid."""
    from unrolled.experiments.regression import aggregate

    cfg = from_dict(
        ExperimentConfig,
        {
            "name": "agg",
            "seeds": [0, 1, 2],
            "depths": [1],
            "task": {"d": 2, "n": 4, "covariance": "isotropic"},
            "methods": [{"name": "cg", "kind": "cg"}],
        },
    )
    records = [
        {"method": "cg", "seed": s, "depth": None, "layerwise": {"test": {"1": [2.0, v]}}}
        for s, v in enumerate([math.e, None, math.e**3])
    ]
    entry = aggregate(cfg, records)["methods"]["cg"]["test"]
    assert entry["diverged_seeds"] == [1]
    assert math.isclose(entry["log_loss_mean"][0], 2.0)
    assert math.isclose(entry["log_loss_std"][0], math.sqrt(2.0))
    assert entry["log_loss_per_seed"] == [[1.0], [None], [3.0]]
    json.dumps(entry, allow_nan=False)


def test_interrupted_mixture_run_resumes_to_identical_results(tmp_path):
    """Experts resume from checkpoints; a mixture cut during adaptation is adapted again from the start."""
    cfg = from_dict(ExperimentConfig, json.loads(json.dumps(MOE)))
    whole = run_experiment(cfg, tmp_path / "whole", progress=False, log=lambda _: None)
    calls = {"n": 0}

    def interrupt(unit, step):
        if unit.method == "moe_g" and step == 7:
            calls["n"] += 1
            if calls["n"] == 2:  # during the adaptation to the second distribution
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path / "cut", progress=False, on_step=interrupt, log=lambda _: None)
    resumed = run_experiment(cfg, tmp_path / "cut", resume=True, progress=False, log=lambda _: None)
    for name, m in whole["methods"].items():
        for split, v in m.items():
            if isinstance(v, dict) and "log_loss_mean" in v:
                assert resumed["methods"][name][split]["log_loss_mean"] == v["log_loss_mean"], (name, split)
