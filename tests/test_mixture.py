"""Mixtures of experts and test-time adaptation, learnable LFOMs, and distribution shifts end to end."""

import json
import math

import pytest
import torch

from tests.conftest import make_batch
from unrolled.config import ConfigError, from_dict
from unrolled.experiments import ExperimentConfig, run_experiment
from unrolled.models import LFOMMemformer, LinearTransformer, MixtureOfExperts
from unrolled.solvers import ConjugateGradient, GradientDescent, UnrolledLFOM
from unrolled.tasks import RegressionTask
from unrolled.tasks.regression import RegressionConfig
from unrolled.train.config import TrainConfig
from unrolled.train.loop import RegressionStream, train


def _expert(seed: int, B: str = "free", depth: int = 3) -> LFOMMemformer:
    g = torch.Generator().manual_seed(seed)
    model = LFOMMemformer(d=5, n=20, layers=depth, A="full", B=B, init_std=0.2, generator=g)
    with torch.no_grad():  # non-trivial memory masks
        model.gamma.copy_(torch.rand(model.gamma.shape, generator=g))
    return model.double()


def test_one_expert_with_gate_one_is_that_expert():
    batch = make_batch(32)
    expert = _expert(0)
    mixture = MixtureOfExperts([expert], gate="linear", gate_init=1.0).double()
    ours, ref = mixture(batch), expert(batch)
    assert len(ours.states) == len(ref.states) == 4
    for a, b in zip(ours.states, ref.states, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_two_experts_mix_their_layer_updates():
    """One layer by hand: Z_1 = Z_0 + g_1 T^(1)(Z_0) + g_2 T^(2)(Z_0), T^(h) = expert h's Z_1 − Z_0."""
    batch = make_batch(16)
    e1, e2 = _expert(1, depth=1), _expert(2, depth=1)
    mixture = MixtureOfExperts([e1, e2], gate="linear", gate_init=[0.3, -0.7]).double()
    Z0 = batch.tokens()
    T1 = e1(batch).states[1] - Z0
    T2 = e2(batch).states[1] - Z0
    torch.testing.assert_close(mixture(batch).states[1], Z0 + 0.3 * T1 - 0.7 * T2, rtol=1e-10, atol=1e-12)


def test_softmax_gates_sum_to_one_and_start_equal():
    experts = [_expert(i) for i in range(3)]
    mixture = MixtureOfExperts(experts, gate="softmax")
    torch.testing.assert_close(mixture.gates(), torch.full((3,), 1 / 3, dtype=mixture.gates().dtype))
    with torch.no_grad():
        mixture.gate_logits.copy_(torch.tensor([2.0, -1.0, 0.5]))
    assert math.isclose(float(mixture.gates().detach().sum()), 1.0, rel_tol=1e-12)
    assert (mixture.gates() > 0).all()


@pytest.mark.parametrize("what", ["gates", "gates_and_gamma"])
def test_adaptation_changes_only_what_it_was_told(what):
    experts = [_expert(i) for i in range(2)]
    mixture = MixtureOfExperts(experts, gate="softmax")
    before = {k: v.clone() for k, v in mixture.state_dict().items()}
    trainable = mixture.set_adaptable(what)
    task = RegressionTask(RegressionConfig(covariance="isotropic", variance=2.0), 0)
    cfg = TrainConfig(protocol="fixed_batch", steps=15, batch_size=64, lr=0.05, checkpoint_every=100)
    stream = RegressionStream(task, cfg, torch.Generator().manual_seed(0), torch.float64)
    train(mixture, stream, cfg, dtype=torch.float64)
    after = mixture.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    expected = {"gate_logits"} | (
        {"experts.0.gamma", "experts.1.gamma"} if what == "gates_and_gamma" else set()
    )
    assert set(trainable) == expected
    assert changed == expected  # everything else is bit-identical


def test_gates_and_gamma_needs_memory_masks():
    g = torch.Generator().manual_seed(0)
    assert MixtureOfExperts([_expert(0)]).set_adaptable("gates_and_gamma") == [
        "experts.0.gamma",
        "gate_logits",
    ]
    lt = MixtureOfExperts([LinearTransformer(5, 20, 2, generator=g)])
    with pytest.raises(ValueError, match="no memory coefficients"):
        lt.set_adaptable("gates_and_gamma")
    with pytest.raises(ValueError, match="adapt must be"):
        lt.set_adaptable("everything")  # type: ignore[arg-type]


def test_mixture_rejects_mismatched_experts():
    with pytest.raises(ValueError, match="share d, n and depth"):
        MixtureOfExperts([_expert(0, depth=2), _expert(1, depth=3)])


def test_learnable_lfom_initialised_at_gd_reproduces_gd():
    batch = make_batch(40)
    eta = 0.375  # exact in float32, where the coefficients are created
    lfom = UnrolledLFOM(d=5, steps=6, form="full", init=eta, objective="mean").double()
    gd = GradientDescent(eta, objective="mean")
    ours, ref = lfom(batch), gd(batch, 6)
    for a, b in zip(ours.states, ref.states, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_learnable_lfom_learns_on_a_fixed_batch():
    task = RegressionTask(RegressionConfig(covariance="isotropic"), 0)
    cfg = TrainConfig(protocol="fixed_batch", steps=150, batch_size=200, lr=0.05, checkpoint_every=1000)
    stream = RegressionStream(task, cfg, torch.Generator().manual_seed(0), torch.float64)
    lfom = UnrolledLFOM(d=5, steps=3, form="tied")
    result = train(lfom, stream, cfg, dtype=torch.float64)
    start = math.log(task.zero_predictor_loss())
    assert math.log(result.final_loss) < start - 0.8  # Γ = 0 predicts 0; training must improve on it


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
