"""Training: learning a known optimum, improving with depth, NaN handling, checkpoints and resume."""

import math

import pytest
import torch

from unrolled.constrained import Objective
from unrolled.experiments.regression import LearnedMethod, build_model
from unrolled.models import LinearTransformer
from unrolled.tasks import RegressionTask
from unrolled.tasks.regression import RegressionConfig
from unrolled.train import NonFiniteLossError, load_checkpoint, train
from unrolled.train.config import ScheduleConfig, TrainConfig
from unrolled.train.loop import RegressionStream, clip_per_matrix, final_layer_mse


def test_one_layer_learns_ahn_optimum():
    """Isotropic, one scalar layer: training finds a = n/(n+d+1) and loss d(d+1)/(n+d+1) (Ahn et al. 2023)."""
    d, n = 5, 20
    task = RegressionTask(RegressionConfig(covariance="isotropic"), seed=0)
    model = LinearTransformer(d, n, 1, A="scalar", generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(protocol="online", steps=400, batch_size=2000, lr=0.01)
    train(model, RegressionStream(task, cfg, torch.Generator().manual_seed(1)), cfg)
    a = model.layers[0].a.item()
    assert a == pytest.approx(n / (n + d + 1), abs=0.03)
    test = task.sample(50_000, torch.Generator().manual_seed(2))
    with torch.no_grad():
        loss = model(test).layerwise_losses(test.y_query)[-1].item()
    assert loss == pytest.approx(d * (d + 1) / (n + d + 1), rel=0.04)


def test_trained_model_beats_zero_and_improves_with_depth():
    """The default setting (non-isotropic, d = 5, n = 20), held-out prompts."""
    task = RegressionTask(RegressionConfig(), seed=0)
    test = task.sample(5000, torch.Generator().manual_seed(9))
    cfg = TrainConfig(protocol="online", steps=300, batch_size=500, lr=0.01)
    losses = []
    for L in (1, 2, 3):
        model = build_model(
            LearnedMethod(name="m", kind="memformer_cgd"), 5, 20, L, torch.Generator().manual_seed(L)
        )
        train(model, RegressionStream(task, cfg, torch.Generator().manual_seed(0)), cfg)
        with torch.no_grad():
            losses.append(model(test).layerwise_losses(test.y_query)[-1].item())
    zero = task.zero_predictor_loss()
    assert losses[0] < 0.7 * zero
    assert losses[0] > losses[1] > losses[2]


def _fit(tmp_path, steps, protocol="online", stop_at=None, resample_every=1):
    task = RegressionTask(RegressionConfig(), seed=0)
    model = build_model(
        LearnedMethod(name="m", kind="memformer_lfom"), 5, 20, 2, torch.Generator().manual_seed(0)
    )
    cfg = TrainConfig(
        protocol=protocol,
        steps=steps,
        batch_size=64,
        checkpoint_every=7,
        resample_every=resample_every,
        schedule=ScheduleConfig(kind="step", every=5, factor=0.9),
    )

    def on_step(step):
        if stop_at is not None and step == stop_at:
            raise KeyboardInterrupt

    log = []
    result = train(
        model,
        RegressionStream(task, cfg, torch.Generator().manual_seed(3)),
        cfg,
        checkpoint=tmp_path / "ck.pt",
        on_step=on_step,
        on_log=log.append,
    )
    return model, result, log


@pytest.mark.parametrize(("protocol", "resample_every"), [("online", 1), ("online", 3), ("fixed_batch", 1)])
def test_interrupted_training_resumes_bit_for_bit(tmp_path, protocol, resample_every):
    ref, ref_result, _ = _fit(tmp_path / "a", 30, protocol, resample_every=resample_every)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "b", 30, protocol, stop_at=17, resample_every=resample_every)
    assert load_checkpoint(tmp_path / "b" / "ck.pt")["step"] == 14
    resumed, result, _ = _fit(tmp_path / "b", 30, protocol, resample_every=resample_every)
    assert result.resumed_from == 14
    for p, q in zip(ref.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    assert result.final_loss == ref_result.final_loss


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    task = RegressionTask(RegressionConfig(), seed=0)
    model = LinearTransformer(5, 20, 2)
    calls = {"n": 0}

    class Poisoned(Objective):
        def loss(self, traj, target):
            calls["n"] += 1
            loss = final_layer_mse(traj, target)
            return (loss * float("nan") if calls["n"] == 25 else loss), {}

    cfg = TrainConfig(steps=40, batch_size=32, checkpoint_every=10)
    stream = RegressionStream(task, cfg, torch.Generator().manual_seed(0))
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 25.*checkpoint \(step 20\) is kept"):
        train(model, stream, cfg, objective=Poisoned(), checkpoint=tmp_path / "c.pt")
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["step"] == 20
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_divergence_is_caught_before_a_bad_checkpoint(tmp_path):
    task = RegressionTask(RegressionConfig(), seed=0)
    model = LinearTransformer(5, 20, 3, init_std=1.0)
    cfg = TrainConfig(steps=50, batch_size=32, optimizer="sgd", lr=1e6, checkpoint_every=1)
    with pytest.raises(NonFiniteLossError, match="at step"):
        train(
            model,
            RegressionStream(task, cfg, torch.Generator().manual_seed(0)),
            cfg,
            checkpoint=tmp_path / "c.pt",
        )
    if (tmp_path / "c.pt").exists():
        state = load_checkpoint(tmp_path / "c.pt")
        assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_per_matrix_clipping_bounds_each_tensor():
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([3.0, 4.0, 0.0])  # norm 5
    b.grad = torch.tensor([0.003, 0.004])  # norm 0.005
    clip_per_matrix([a, b], 0.01)
    assert a.grad.norm().item() == pytest.approx(0.01)
    assert b.grad.norm().item() == pytest.approx(0.005)  # untouched: each matrix is clipped on its own


def test_schedules():
    from unrolled.train.config import ScheduleConfig
    from unrolled.train.loop import make_scheduler

    for sched, expect in [
        (ScheduleConfig(kind="step", every=4, factor=0.5), [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25]),
        (ScheduleConfig(kind="cosine"), [0.5 * (1 + math.cos(math.pi * s / 8)) for s in range(9)]),
    ]:
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=1.0)
        sch = make_scheduler(TrainConfig(steps=8, schedule=sched), opt)
        seen = []
        for _ in range(9):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sch.step()
        assert seen == pytest.approx(expect)


def test_nothing_to_train_is_an_error():
    model = LinearTransformer(5, 20, 1, A="fixed")
    cfg = TrainConfig(steps=1)
    stream = RegressionStream(RegressionTask(RegressionConfig(), 0), cfg, torch.Generator())
    with pytest.raises(ValueError, match="nothing to train"):
        train(model, stream, cfg)
