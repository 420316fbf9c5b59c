"""Descent constraints and primal-dual training against closed forms and an independent dual update."""

import pytest
import torch
from torch import nn

from unrolled.constrained import ConstrainedObjective, DescentConstraints, Multipliers, violation_share
from unrolled.train import train
from unrolled.train.config import TrainConfig
from unrolled.trajectory import Trajectory


def test_slacks_and_lagrangian_by_hand():
    f = torch.tensor([4.0, 3.0, 2.5, 2.6])
    c = DescentConstraints(alpha=0.1)
    torch.testing.assert_close(c.slacks(f), torch.tensor([3.0 - 3.6, 2.5 - 2.7, 2.6 - 2.25]))
    lam = torch.tensor([0.0, 1.0, 2.0])
    assert c.lagrangian(f, lam).item() == pytest.approx(2.6 + 1.0 * (2.5 - 2.7) + 2.0 * (2.6 - 2.25))
    per_layer = DescentConstraints(alpha=(0.0, 0.5, 0.2))
    torch.testing.assert_close(per_layer.slacks(f), torch.tensor([3.0 - 4.0, 2.5 - 1.5, 2.6 - 2.0]))
    assert violation_share(f) == pytest.approx(1 / 3)  # only the last layer goes up
    with pytest.raises(ValueError, match="alpha must be in"):
        DescentConstraints(alpha=1.0)
    with pytest.raises(ValueError, match="3 layers"):
        DescentConstraints(alpha=(0.1, 0.2)).slacks(f)


def test_detach_switch_controls_the_gradient_through_the_previous_layer():
    theta = torch.tensor([1.0, 2.0], requires_grad=True)
    f = torch.stack([theta[0] ** 2, theta[1] ** 2])
    lam = torch.tensor([1.0])
    DescentConstraints(0.0, detach_previous=True).lagrangian(f, lam).backward()
    assert theta.grad[0].item() == 0.0  # f_0 gets no gradient from the constraint when detached
    theta.grad = None
    f = torch.stack([theta[0] ** 2, theta[1] ** 2])
    DescentConstraints(0.0, detach_previous=False).lagrangian(f, lam).backward()
    assert theta.grad[0].item() == pytest.approx(-2.0)  # −λ (1 − α) ∂f_0/∂θ_0


def test_multipliers_stay_zero_when_descending_and_grow_when_violated():
    lam = Multipliers(3, lr=0.5)
    descending = DescentConstraints(0.0).slacks(torch.tensor([3.0, 2.0, 1.5, 1.0]))
    for _ in range(10):
        lam.step(descending)
    assert torch.all(lam.value == 0)
    violated = DescentConstraints(0.0).slacks(torch.tensor([3.0, 2.0, 2.5, 1.0]))  # layer 2 goes up
    values = [lam.step(violated)[1].item() for _ in range(5)]
    assert values == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.25])
    assert lam.value[0] == 0 and lam.value[2] == 0


@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.5, 1.0, 1.5])
def test_resilient_multipliers_converge_to_cost_times_slack_whatever_the_dual_lr(ratio):
    """Hounie et al. 2023, h(u) = c u²/2: at a fixed slack s the fixed point is λ* = c s for every η_λ < 2c
    (PAPERS.md C.2); the relaxation the cost buys does not move with the dual step size."""
    cost, s = 3.0, torch.tensor([2.0, -1.0])
    lam = Multipliers(2, ratio * cost, cost=cost)
    plain = Multipliers(2, ratio * cost)
    for _ in range(5000):
        lam.step(s)
        plain.step(s)
    assert lam.value.tolist() == pytest.approx([cost * 2.0, 0.0], rel=1e-9, abs=1e-12)
    assert plain.value[0].item() == pytest.approx(5000 * ratio * cost * 2.0)  # projected: grows without bound


def test_resilient_ascent_refuses_a_dual_lr_it_would_diverge_with():
    with pytest.raises(ValueError, match="diverges"):
        Multipliers(1, 2.0, cost=1.0)


def test_bounded_multipliers_solve_the_elastic_problem():
    """Projecting λ onto [0, λ_max] is the dual of min f + λ_max [g]_+ (PAPERS.md C.3). For f(x) = x², g(x) =
    2 − x ≤ 0: the constrained optimum is x = 2 with λ* = 4. Below that price (λ_max = 1) the elastic problem
    gives up part of the constraint, x = λ_max / 2 = 0.5; above it (λ_max = 10) it is exact."""
    for bound, x_star, lam_star in [(1.0, 0.5, 1.0), (10.0, 2.0, 4.0)]:
        x, lam = torch.tensor(0.0), Multipliers(1, 0.05, bound=bound)
        for _ in range(20_000):  # gradient descent-ascent on x² + λ (2 − x)
            x = x - 0.05 * (2 * x - lam.value[0].float())
            lam.step(torch.tensor([2.0 - float(x)]))
        assert float(x) == pytest.approx(x_star, abs=1e-4)
        assert lam.value.item() == pytest.approx(lam_star, abs=1e-3)
        # the same point minimises the elastic objective, checked on a grid
        grid = torch.linspace(-1, 3, 40_001, dtype=torch.float64)
        elastic = grid**2 + bound * (2 - grid).clamp_min(0)
        assert float(grid[elastic.argmin()]) == pytest.approx(x_star, abs=1e-3)


def test_a_constraint_not_measured_keeps_its_multiplier():
    lam = Multipliers(2, 0.5)
    lam.step(torch.tensor([1.0, 1.0]))
    lam.step(torch.tensor([1.0, float("nan")]), observed=torch.tensor([True, False]))
    assert lam.value.tolist() == [1.0, 0.5]


def test_multiplier_errors_and_state_round_trip():
    with pytest.raises(ValueError, match="cost must be > 0"):
        Multipliers(2, 0.1, cost=0.0)
    with pytest.raises(ValueError, match="bound must be > 0"):
        Multipliers(2, 0.1, bound=-1.0)
    with pytest.raises(ValueError, match="non-finite slack"):
        Multipliers(1, 0.1).step(torch.tensor([float("nan")]))
    lam = Multipliers(2, 0.1)
    lam.step(torch.tensor([1.0, -1.0]))
    again = Multipliers(2, 0.1)
    again.load_state_dict(lam.state_dict())
    assert torch.equal(again.value, lam.value) and again.steps == 1
    with pytest.raises(ValueError, match="holds 2 multipliers"):
        Multipliers(3, 0.1).load_state_dict(lam.state_dict())


class ToyLayers(nn.Module):
    """A two-layer 'solver' whose layer losses are f_0 = 1, f_1 = θ_1, f_2 = (θ_1 − a)² + θ_2² (convex problem)."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = a
        self.theta = nn.Parameter(torch.tensor([2.0, 1.0]))

    def forward(self, inputs: torch.Tensor) -> Trajectory:
        ones = torch.ones_like(inputs)
        f0 = ones
        f1 = self.theta[0] * ones
        f2 = ((self.theta[0] - self.a) ** 2 + self.theta[1] ** 2) * ones
        return Trajectory((f0, f1, f2), readout=lambda s: s)


class ConstantStream:
    def next(self):
        return torch.zeros(4), torch.zeros(4)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        return None


def test_primal_dual_converges_to_the_kkt_point_and_matches_an_independent_dual_update():
    """min f_2 s.t. f_1 ≤ ½ f_0, f_2 ≤ ½ f_1 (α = ½) with a = 0.8: θ* = (½, 0), λ* = (2(a − ½), 0) = (0.6, 0)."""
    a, alpha, eta = 0.8, 0.5, 0.05
    model = ToyLayers(a)
    objective = ConstrainedObjective(
        DescentConstraints(alpha, detach_previous=False),  # the exact Lagrangian of this convex problem
        Multipliers(2, lr=eta),
        per_sample_loss=lambda pred, target: pred,
    )
    logs = []
    cfg = TrainConfig(steps=4000, optimizer="sgd", lr=0.05, log_every=1, checkpoint_every=10_000)
    train(model, ConstantStream(), cfg, objective=objective, on_log=logs.append)
    theta = model.theta.detach()
    assert theta[0].item() == pytest.approx(0.5, abs=5e-3)
    assert theta[1].item() == pytest.approx(0.0, abs=5e-3)
    lam = objective.multipliers.value
    assert lam[0].item() == pytest.approx(2 * (a - 0.5), abs=1e-2)
    assert lam[1].item() == pytest.approx(0.0, abs=1e-6)
    # the logged multipliers follow λ ← max(0, λ + η s) computed here, from the logged slacks, in plain floats
    ref = [0.0, 0.0]
    for rec in logs:
        ref = [max(0.0, lv + eta * sv) for lv, sv in zip(ref, rec["slack_estimate"], strict=True)]
        assert rec["multipliers"] == pytest.approx(ref, abs=1e-12)
        assert rec["slack_estimate"] == pytest.approx(rec["slacks"])


def test_resilient_training_relaxes_an_infeasible_constraint():
    """With α = 0.9 the problem is infeasible; resilient multipliers settle instead of growing forever."""
    model = ToyLayers(0.8)
    objective = ConstrainedObjective(
        DescentConstraints(0.9, detach_previous=False), Multipliers(2, lr=0.05, cost=0.25), lambda p, t: p
    )
    cfg = TrainConfig(steps=3000, optimizer="sgd", lr=0.02, log_every=100, checkpoint_every=10_000)
    logs = []
    train(model, ConstantStream(), cfg, objective=objective, on_log=logs.append)
    late = [rec["multipliers"] for rec in logs[-5:]]
    for m in late:
        assert max(m) < 5.0
    assert late[-1] == pytest.approx(late[0], abs=1e-3)  # settled


@pytest.mark.parametrize("detach", [True, False])
def test_graph_free_readouts_give_the_exact_lagrangian_gradient(detach):
    """Layers whose multipliers are zero are read out without a graph; the gradient is unchanged."""
    from tests.conftest import make_batch
    from unrolled.models import LinearTransformer
    from unrolled.trajectory import squared_error

    batch = make_batch(32)
    model = LinearTransformer(5, 20, 4, A="full", generator=torch.Generator().manual_seed(0)).double()
    objective = ConstrainedObjective(DescentConstraints(0.2, detach_previous=detach), Multipliers(4, lr=1.0))
    objective.multipliers.value = torch.tensor([0.0, 0.7, 0.0, 0.3], dtype=torch.float64)
    loss, _ = objective.loss(model(batch), batch.y_query)
    fast = torch.autograd.grad(loss, list(model.parameters()))
    full = objective.constraints.lagrangian(
        model(batch).layerwise_losses(batch.y_query, squared_error), objective.multipliers.value
    )
    ref = torch.autograd.grad(full, list(model.parameters()))
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b)
    assert loss.item() == pytest.approx(full.item())
