"""Remedies for infeasible constraints and the early-exit baseline, against hand computations and closed forms.

Covers :mod:`unrolled.constrained.early_exit` (LayerSkip's weights and curricula, as torchtune defines them),
:mod:`unrolled.constrained.calibration`, :mod:`unrolled.constrained.infeasibility`, the partial readouts of
:meth:`ConstrainedObjective.lagrangian`, and the configs' errors. The multipliers' closed forms (resilient,
bounded) are in ``test_constrained.py``.
"""

import logging
import math

import pytest
import torch
from torch import nn

from tests.test_constrained import ConstantStream, ToyLayers
from unrolled.config import ConfigError, from_dict
from unrolled.constrained import (
    ConstrainedObjective,
    ConstraintConfig,
    DescentConstraints,
    EarlyExitConfig,
    EarlyExitObjective,
    InfeasibilityMonitor,
    Multipliers,
    calibrate,
    early_exit_scales,
    objective_from_config,
    task_weight,
)
from unrolled.train import train
from unrolled.train.config import TrainConfig
from unrolled.trajectory import Trajectory

# --- early exit ------------------------------------------------------------------------------------------


def test_early_exit_scales_by_hand():
    """torchtune's scale types on exits 1..4 of a 4-layer model (its layer id + 1), e_scale on the first three."""
    assert early_exit_scales([1, 2, 3, 4], 4, "one", 1.0) == pytest.approx([0.25] * 4)
    assert early_exit_scales([1, 2, 3, 4], 4, "l", 1.0) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert early_exit_scales([1, 2, 3, 4], 4, "sum_l", 1.0) == pytest.approx(
        [1 / 20, 3 / 20, 6 / 20, 10 / 20]
    )
    inv = [1, 1 / 2, 1 / 3, 1 / 4]
    assert early_exit_scales([1, 2, 3, 4], 4, "inv_l", 1.0) == pytest.approx([v / sum(inv) for v in inv])
    roots = [math.sqrt(l) for l in (1, 2, 3, 4)]
    assert early_exit_scales([1, 2, 3, 4], 4, "sqrt_l", 1.0) == pytest.approx([v / sum(roots) for v in roots])
    inv_roots = [1 / v for v in roots]
    assert early_exit_scales([1, 2, 3, 4], 4, "inv_sqrt_l", 1.0) == pytest.approx(
        [v / sum(inv_roots) for v in inv_roots]
    )
    # e_scale 0.5 on the non-final exits: raw 0.5, 1.0, 1.5, 4 over 7
    assert early_exit_scales([1, 2, 3, 4], 4, "l", 0.5) == pytest.approx([0.5 / 7, 1 / 7, 1.5 / 7, 4 / 7])
    # only exits 2 and 4: sum_l is the cumulative sum over the enabled exits
    assert early_exit_scales([2, 4], 4, "sum_l", 1.0) == pytest.approx([2 / 8, 6 / 8])


def test_gradual_curriculum_switches_exits_on_from_the_last_layer_down():
    cfg = EarlyExitConfig(scale_type="one", curriculum="gradual", gradual_fraction=0.5)
    obj = EarlyExitObjective(cfg, depth=4, total_steps=100)
    # layer l is on once t / T ≥ 0.5 (4 − l + 1) / 4: l = 4 at 12.5%, 3 at 25%, 2 at 37.5%, 1 at 50%
    expected = {0: [4], 13: [4], 25: [3, 4], 37: [3, 4], 38: [2, 3, 4], 50: [1, 2, 3, 4], 99: [1, 2, 3, 4]}
    for step, on in expected.items():
        assert obj.enabled(step) == on, step
    obj.sync_step(25, 100)
    assert obj.layer_weights(4).tolist() == [0.0, 0.0, 0.0, 0.5, 0.5]
    assert obj.task_weight(4) == 0.5


def test_rotational_curriculum_rotates_a_sparse_set_of_exits():
    obj = EarlyExitObjective(EarlyExitConfig(curriculum="rotational", layers=(1, 3)), depth=4, total_steps=10)
    # mask over layers 1..4 is [1, 0, 1, 1] (the last layer is always an exit); rolled right one per step
    assert obj.enabled(0) == [1, 3, 4]
    assert obj.enabled(1) == [1, 2, 4]  # [1, 1, 0, 1]
    assert obj.enabled(2) == [1, 2, 3, 4]  # [1, 1, 1, 0] + the last layer
    assert obj.enabled(4) == [1, 3, 4]


def test_early_exit_training_follows_the_naive_weighted_sum(tmp_path):
    """One SGD step of the early-exit objective moves θ as the gradient of Σ w_l f_l computed by hand."""
    model = ToyLayers(0.8)
    cfg = EarlyExitConfig(scale_type="l", scale=0.5)
    obj, _ = objective_from_config(cfg, 2, lambda p, t: p)
    weights = early_exit_scales([1, 2], 2, "l", 0.5)  # 0.5 / 2.5 and 2 / 2.5
    theta = model.theta.detach().clone().requires_grad_(True)
    f1, f2 = theta[0], (theta[0] - 0.8) ** 2 + theta[1] ** 2
    (weights[0] * f1 + weights[1] * f2).backward()
    expected = model.theta.detach() - 0.1 * theta.grad
    train(
        model,
        ConstantStream(),
        TrainConfig(steps=1, optimizer="sgd", lr=0.1, checkpoint_every=10),
        objective=obj,
    )
    torch.testing.assert_close(model.theta.detach(), expected)


# --- calibration -----------------------------------------------------------------------------------------


def test_calibration_relax_makes_every_constraint_feasible_and_drop_keeps_the_descending_layers():
    f = torch.tensor([10.0, 8.0, 9.0, 4.0])  # descends 20%, rises 12.5%, descends 55.6%
    relaxed = calibrate(f, [0.3, 0.3, 0.3], [1, 2, 3], "relax", margin=0.05)
    assert relaxed.descent == pytest.approx((0.2, -0.125, 5 / 9))
    assert relaxed.alphas == pytest.approx((0.15, -0.175, 0.3))
    slack = DescentConstraints(relaxed.alphas).slacks(f)
    assert (slack <= -0.05 * f[:-1] + 1e-6).all()  # feasible by the margin at the start
    dropped = calibrate(f, [0.3, 0.3, 0.3], [1, 2, 3], "drop", margin=0.05)
    assert dropped.layers == (3,) and dropped.alphas == (0.3, 0.3, 0.3)


def test_objective_calibrates_on_its_first_batches_and_resumes_with_its_targets(tmp_path):
    cfg = from_dict(ConstraintConfig, {"alpha": 0.9, "calibrate": {"batches": 2, "margin": 0.01}}, "c")
    obj, _ = objective_from_config(cfg, 2, lambda p, t: p)
    assert obj.needs_calibration
    model = ToyLayers(0.8)  # f = 1, 2, 2.44 at the start: both layers go up
    ckpt = tmp_path / "ckpt.pt"
    train(model, ConstantStream(), TrainConfig(steps=2, optimizer="sgd", lr=0.01, checkpoint_every=1),
          objective=obj, checkpoint=ckpt)  # fmt: skip
    assert not obj.needs_calibration
    assert obj.calibration.base_losses == pytest.approx((1.0, 2.0, 2.44))
    assert obj.constraints.alphas(2).tolist() == pytest.approx([-1.01, 1 - 2.44 / 2 - 0.01])
    fresh, _ = objective_from_config(cfg, 2, lambda p, t: p)
    fresh.load_state_dict(obj.state_dict())
    assert not fresh.needs_calibration
    assert fresh.constraints.alphas(2).tolist() == obj.constraints.alphas(2).tolist()


# --- infeasibility ---------------------------------------------------------------------------------------


class StuckLayer(nn.Module):
    """f_0 = 1, f_1 = 1 whatever θ (layer 1 cannot descend: any α > 0 is infeasible), f_2 = (θ − 0.5)²."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(2.0))

    def forward(self, inputs: torch.Tensor) -> Trajectory:
        ones = torch.ones_like(inputs)
        return Trajectory((ones, ones + 0 * self.theta, (self.theta - 0.5) ** 2 * ones), readout=lambda s: s)


@pytest.mark.parametrize(
    ("extra", "status"),
    [({}, "growing"), ({"multiplier_max": 0.5}, "capped"), ({"resilient_cost": 1.0}, "relaxed")],
)
def test_an_infeasible_constraint_is_flagged_and_named(caplog, extra, status):
    """Flagged, named once in the log with the remedies that fit its multipliers, and in the report."""
    cfg = from_dict(
        ConstraintConfig, {"alpha": 0.5, "dual_lr": 0.05, "infeasibility_window": 10, **extra}, "c"
    )
    obj, _ = objective_from_config(cfg, 2, lambda p, t: p, where="toy")
    model = StuckLayer()
    with caplog.at_level(logging.WARNING, logger="unrolled.constrained"):
        train(model, ConstantStream(), TrainConfig(steps=300, optimizer="sgd", lr=0.01, checkpoint_every=1000),
              objective=obj)  # fmt: skip
    report = obj.report()
    assert report["infeasible_layers"] == [1]  # layer 2 can descend: not flagged
    assert report["infeasible_status"]["1"] == status
    remedy = {"growing": "multiplier_max", "capped": "are capped", "relaxed": "raise resilient_cost"}[status]
    named = [r.message for r in caplog.records if "look infeasible" in r.message]
    assert len(named) == 1  # once per run, though it stays flagged for hundreds of dual steps
    assert "layers 1" in named[0] and "toy" in named[0] and remedy in named[0]
    lam = obj.multipliers.value
    assert report["task_weight"] == pytest.approx(1 / (1 + float(lam.sum())))


def test_a_feasible_problem_raises_no_flag():
    cfg = from_dict(ConstraintConfig, {"alpha": 0.1, "dual_lr": 0.05, "infeasibility_window": 10}, "c")
    obj, _ = objective_from_config(cfg, 2, lambda p, t: p)
    train(ToyLayers(0.8), ConstantStream(), TrainConfig(steps=300, optimizer="sgd", lr=0.01, checkpoint_every=1000),
          objective=obj)  # fmt: skip
    assert obj.report()["infeasible_layers"] == []


def test_monitor_needs_a_full_window_and_a_share_of_positive_slacks():
    mon = InfeasibilityMonitor(2, window=4, share=0.75)
    for step, s in enumerate([1.0, -1.0, 1.0], start=1):
        assert mon.update(torch.tensor([s, -1.0]), torch.tensor([step * 0.1, 0.0]), None, step) == []
    assert mon.update(torch.tensor([1.0, -1.0]), torch.tensor([0.4, 0.0]), None, 4) == [1]  # 3 of 4 positive
    again = InfeasibilityMonitor(2, window=4, share=0.75)
    again.load_state_dict(mon.state_dict())
    assert again.report() == mon.report() == {
        "infeasible_layers": [1], "infeasible_status": {"1": "growing"}, "infeasible_since": {"1": 4},
        "task_weight_low_since": None,
    }  # fmt: skip


def test_a_positive_slack_on_its_way_down_is_not_flagged_and_a_layer_is_named_once(caplog):
    """Layer 1's slack stays positive but falls by 30% per dual step (being met, slowly): never flagged.
    Layer 2's stays put: flagged, and named once although it leaves the flagged set and comes back."""
    mon = InfeasibilityMonitor(2, window=6, share=0.9)

    def update(step: int, s2: float) -> None:
        mon.update(torch.tensor([0.7**step, s2]), torch.tensor([0.1 * step, 0.1 * step]), None, step)

    with caplog.at_level(logging.WARNING, logger="unrolled.constrained"):
        for step in range(1, 7):
            update(step, 1.0)
        assert mon.report()["infeasible_layers"] == [2]
        for step in range(7, 10):  # layer 2 meets its constraint for a while: unflagged
            update(step, -1.0)
        assert mon.report()["infeasible_layers"] == []
        for step in range(10, 17):  # and goes back to violating it
            update(step, 1.0)
    assert mon.report()["infeasible_layers"] == [2]
    assert mon.first_seen == {2: 6}
    assert sum("look infeasible" in r.message for r in caplog.records) == 1


def test_a_short_run_fits_the_window_and_still_names_an_infeasible_constraint(caplog):
    """150 steps with a dual step every 5: 30 dual steps, fewer than the 20 × 3 the window asks for. The window
    becomes 30 // 3 = 10 dual steps, and layer 1 (which cannot descend) is named at the 10th dual step."""
    cfg = from_dict(ConstraintConfig, {"alpha": 0.5, "dual_lr": 0.01, "dual_every": 5}, "c")
    obj, _ = objective_from_config(cfg, 2, lambda p, t: p, where="short")
    with caplog.at_level(logging.INFO, logger="unrolled.constrained"):
        train(StuckLayer(), ConstantStream(), TrainConfig(steps=150, optimizer="sgd", lr=0.01, checkpoint_every=1000),
              objective=obj)  # fmt: skip
    assert obj.monitor.window == 10
    assert obj.report()["infeasible_since"] == {"1": 10}
    assert "too_short" not in obj.report()
    assert any("infeasibility window: 10 dual steps (the run has 30" in r.message for r in caplog.records)
    unfitted = InfeasibilityMonitor(2, window=20)
    for step in range(1, 13):  # the same dual steps without fitting: nothing can be flagged
        unfitted.update(torch.tensor([0.5, -0.1]), torch.tensor([0.01 * step, 0.0]), None, step)
    assert unfitted.report()["infeasible_layers"] == []
    assert unfitted.fit(36) == 12 and unfitted.update(
        torch.tensor([0.5, -0.1]), torch.tensor([0.13, 0.0]), None, 13
    ) == [1]  # the history recorded before fitting counts
    assert InfeasibilityMonitor(2, window=20).fit(3000) == 20  # a long run keeps the window asked for
    assert InfeasibilityMonitor(2, window=20).fit(12) == 10  # never fewer than MIN_DUAL_STEPS


def test_a_run_too_short_to_tell_gets_no_verdict_and_says_so(caplog):
    """40 steps with a dual step every 5: 8 dual steps, fewer than MIN_DUAL_STEPS. The same stuck layer whose
    slack is positive at every one of them is not called infeasible; the report says the run was too short."""
    cfg = from_dict(ConstraintConfig, {"alpha": 0.5, "dual_lr": 0.01, "dual_every": 5}, "c")
    obj, _ = objective_from_config(cfg, 2, lambda p, t: p, where="tiny")
    with caplog.at_level(logging.INFO, logger="unrolled.constrained"):
        train(StuckLayer(), ConstantStream(), TrainConfig(steps=40, optimizer="sgd", lr=0.01, checkpoint_every=1000),
              objective=obj)  # fmt: skip
    report = obj.report()
    assert (
        report["infeasible_layers"] == [] and report["too_short"] == "8 dual steps, 10 needed for a verdict"
    )
    assert not any("look infeasible" in r.message for r in caplog.records)
    assert any("too few to tell" in r.message for r in caplog.records)
    again = InfeasibilityMonitor(2, window=20)
    again.load_state_dict(obj.monitor.state_dict())
    assert again.too_short == 8


def test_the_task_weight_floor_warns_once_when_the_multipliers_outweigh_the_task(caplog):
    """No constraint's slack is positive at 90% of the dual steps (they alternate), yet the multipliers grow:
    the task's share 1 / (1 + Σλ) falls below 0.25 when Σλ passes 3, at the dual step computed by hand."""
    mon = InfeasibilityMonitor(3, window=4, where="seed 0")
    lam = torch.zeros(3)
    with caplog.at_level(logging.WARNING, logger="unrolled.constrained"):
        for step in range(1, 13):
            slack = torch.tensor([1.0, -0.2, 1.0]) * (1 if step % 2 else -0.1)
            lam = lam + torch.tensor([0.2, 0.0, 0.2])  # Σλ = 0.4 · step
            mon.update(slack, lam, None, step, task_weight(torch.cat([lam, torch.ones(1)])))
    assert mon.report()["infeasible_layers"] == []
    assert mon.report()["task_weight_low_since"] == 8  # 1 / (1 + 3.2) < 0.25 ≤ 1 / (1 + 2.8)
    warned = [r.message for r in caplog.records if "task loss holds" in r.message]
    assert len(warned) == 1 and "23.8%" in warned[0] and "seed 0" in warned[0]
    again = InfeasibilityMonitor(3, window=4)
    again.load_state_dict(mon.state_dict())
    assert again.task_low_since == 8
    quiet = InfeasibilityMonitor(3, window=4, task_floor=0.0)
    quiet.update(torch.zeros(3), torch.full((3,), 100.0), None, 1, 0.003)
    assert quiet.task_low_since is None
    with pytest.raises(ValueError, match="task_floor"):
        InfeasibilityMonitor(3, task_floor=1.0)


def test_task_weight_of_the_lagrangian_and_of_early_exit():
    obj = ConstrainedObjective(DescentConstraints(0.1), Multipliers(3, 0.1))
    obj.multipliers.value = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    assert obj.task_weight(3) == pytest.approx(1 / 4.5)  # w = (0, 1, 2, 1.5): detached, Σ w = 1 + Σ λ
    attached = ConstrainedObjective(DescentConstraints(0.1, detach_previous=False), Multipliers(3, 0.1))
    attached.multipliers.value = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    assert attached.task_weight(3) == pytest.approx(1 / (0.9 + 1 + 1))  # |−0.9| + |1| + 1
    assert task_weight(torch.zeros(3)) == 1.0


# --- partial readouts ------------------------------------------------------------------------------------


def test_partial_readouts_give_the_full_lagrangian_and_keep_unread_multipliers():
    f = torch.tensor([4.0, 3.0, 3.5, 2.0, 1.0])
    full = ConstrainedObjective(DescentConstraints(0.1), Multipliers(4, 0.5))
    part = ConstrainedObjective(DescentConstraints(0.1), Multipliers(4, 0.5))
    for obj in (full, part):
        obj.multipliers.value = torch.tensor([0.0, 2.0, 0.0, 0.0], dtype=torch.float64)
    graph, values = part.readout_plan(4, monitor=False)
    assert graph == [2] and values == [1]  # layer 2 (λ_2 > 0) with a graph, its target f_1 by value
    observed = torch.tensor([False, True, True, False, True])
    masked = torch.where(observed, f, torch.tensor(float("nan")))
    a, _ = full.lagrangian(f)
    b, info = part.lagrangian(masked, observed)
    assert float(a) == pytest.approx(float(b))
    assert info["slacks"] == [None, pytest.approx(3.5 - 2.7), None, None]
    part.after_step(1)
    assert part.multipliers.value.tolist() == pytest.approx([0.0, 2.0 + 0.5 * 0.8, 0.0, 0.0])
    # on a monitoring batch every constrained layer is read
    assert part.readout_plan(4, monitor=True) == ([2], [0, 1, 3])
    with pytest.raises(ValueError, match="λ > 0 but were not read"):
        part.lagrangian(masked, torch.tensor([True, False, True, True, True]))


# --- configs ---------------------------------------------------------------------------------------------


def test_configs_name_the_renamed_and_the_unstable_keys():
    with pytest.raises(ConfigError, match=r"resilient_rho: was replaced by resilient_cost.*here 2"):
        from_dict(ConstraintConfig, {"resilient_rho": 4.0, "dual_lr": 0.5}, "constraints")
    with pytest.raises(ConfigError, match="resilient_cost: resilient ascent diverges"):
        from_dict(ConstraintConfig, {"resilient_cost": 0.1, "dual_lr": 0.5}, "constraints")
    with pytest.raises(ConfigError, match="scale_type"):
        from_dict(EarlyExitConfig, {"scale_type": "log"}, "early_exit")
    assert from_dict(ConstraintConfig, {"alphas": [-0.2, 0.1]}, "c").alphas == (-0.2, 0.1)


def test_early_exit_objective_refuses_exits_beyond_the_model():
    with pytest.raises(ValueError, match="for a model of 2 layers"):
        EarlyExitObjective(EarlyExitConfig(layers=(1, 3)), depth=2)


def test_relative_slacks_divide_by_the_layer_before_and_weigh_its_gradient_so():
    f = torch.tensor([10.0, 8.0, 9.0, 4.0], requires_grad=True)
    c = DescentConstraints(0.1, relative=True)
    torch.testing.assert_close(c.slacks(f), torch.tensor([8 / 10 - 0.9, 9 / 8 - 0.9, 4 / 9 - 0.9]))
    obj = ConstrainedObjective(c, Multipliers(3, 0.1))
    obj.multipliers.value = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    loss, _ = obj.lagrangian(f)
    loss.backward()
    weights = obj.gradient_weights(3)  # λ_l / f_{l−1}, from the losses it has seen
    torch.testing.assert_close(f.grad.double(), weights, rtol=1e-6, atol=1e-7)
    assert weights.tolist() == pytest.approx([0.0, 0.1, 0.25, 1 + 0.5 / 9])
