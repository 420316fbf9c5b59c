"""The regression family's units: seed data, classical baselines, in-sample labels, constrained Memformers."""

import json

import pytest

from tests.experiments.tiny import tiny
from unrolled.experiments import run_experiment


def test_in_sample_results_are_labelled(tmp_path):
    results = run_experiment(tiny(**{"eval.in_sample": True, "seeds": [0]}), tmp_path / "r", progress=False)
    assert results["headline_split"] == "train"
    assert "in-sample" in results["evaluation"]
    assert "in-sample" in (tmp_path / "r" / "report.md").read_text().split("##")[1]


def test_seed_data_keeps_test_validation_and_training_prompts_apart():
    import torch

    from unrolled.experiments.regression import SeedData

    data = SeedData(tiny(), 0, torch.float64, "cpu")
    sets = [data.test.X, data.validation.X, data.train_batch.X]
    for i in range(3):
        for j in range(i + 1, 3):
            a, b = sets[i].reshape(-1, 3), sets[j].reshape(-1, 3)
            # no input vector of one set appears in another
            assert torch.cdist(a, b).min() > 0
    # every seed has its own rotation and prompts; the same seed gives the same prompts
    again = SeedData(tiny(), 0, torch.float64, "cpu")
    assert torch.equal(again.test.X, data.test.X)


def test_oracle_preconditioned_gd_uses_the_inverse_covariance():
    import torch

    from unrolled.experiments.regression import ClassicalMethod, build_classical
    from unrolled.solvers import LeastSquares
    from unrolled.tasks import RegressionTask
    from unrolled.tasks.regression import RegressionConfig

    task = RegressionTask(RegressionConfig(), seed=2)
    batch = task.sample(50, torch.Generator().manual_seed(0), dtype=torch.float64)
    method = ClassicalMethod(name="pgd", kind="gd", lr=0.02, preconditioner="inverse_covariance")
    traj = build_classical(method, task, 0.02, None)(batch, 2)
    P = torch.linalg.inv(task.input_second_moment())
    problem = LeastSquares.from_batch(batch, "sum")
    w = torch.zeros(50, 5, dtype=torch.float64)
    for k in range(2):
        w = w - 0.02 * problem.grad(w) @ P.T
        torch.testing.assert_close(traj.states[k + 1], w)


@pytest.mark.parametrize("source", ["train", "heldout"])
def test_constrained_memformer_run_resumes_with_its_multipliers(tmp_path, source):
    cfg = tiny(
        seeds=[0],
        depths=[3],
        methods=[
            {
                "name": "cmem",
                "kind": "memformer_cgd",
                "constraints": {
                    "alpha": 0.3,
                    "dual_lr": 0.5,
                    "dual_every": 2,
                    "dual_source": source,
                    "heldout_size": 64,
                },
            }
        ],
        published=None,
        **{"train.protocol": "online"},
    )
    ref = run_experiment(cfg, tmp_path / "ref", progress=False)

    def interrupt(unit, step):
        if step == 27:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path / "cut", progress=False, on_step=interrupt)
    resumed = run_experiment(cfg, tmp_path / "cut", resume=True, progress=False)
    assert resumed["methods"] == ref["methods"]
    unit = json.loads((tmp_path / "ref" / "units" / "cmem" / "seed0_L3.json").read_text())
    again = json.loads((tmp_path / "cut" / "units" / "cmem" / "seed0_L3.json").read_text())
    assert unit["multipliers"] == again["multipliers"]
    assert max(unit["multipliers"]) > 0  # α = 0.3 is demanding: some constraint was violated
    logged = [json.loads(line) for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert all(len(rec["multipliers"]) == 3 and len(rec["layer_losses"]) == 4 for rec in logged)
    assert (tmp_path / "ref" / "multipliers.png").exists()  # every family's report plots the multipliers
