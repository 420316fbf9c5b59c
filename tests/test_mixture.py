"""Mixtures of experts and test-time adaptation, learnable LFOMs, and distribution shifts end to end."""

import math

import pytest
import torch

from tests.conftest import make_batch
from unrolled.models import LFOMMemformer, LinearTransformer, MixtureOfExperts
from unrolled.solvers import GradientDescent, UnrolledLFOM
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
