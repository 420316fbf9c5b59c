"""Ensembles (issue 30): members trained in lockstep end where the same units trained one by one end.

Float64 runs of tiny regression experiments, once with ``train.ensemble`` (the seeds of each method and depth
as one batched model) and once unit by unit; every member's trained parameters, layerwise losses and
multipliers must agree to float rounding, for every model kind, constrained training, normalised models and
mixtures adapted at test time. An ensemble interrupted between checkpoints resumes to the same results, and
a member's checkpoint is the single-unit format (``train`` resumes it alone).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unrolled.config import from_dict
from unrolled.experiments import ExperimentConfig, run_experiment
from unrolled.experiments.regression import build_model
from unrolled.train.checkpoint import load_checkpoint
from unrolled.train.ensemble import (
    Ensemble,
    EnsembleMismatchError,
    split_optimizer_state,
    stack_optimizer_states,
)

TASK = {"d": 3, "n": 6, "covariance": "isotropic"}
TRAIN = {"steps": 12, "batch_size": 40, "lr": 0.02, "log_every": 3, "checkpoint_every": 5}


def config(methods: list[dict], **changes) -> ExperimentConfig:
    data = {"name": "ens", "seeds": [0, 1, 2], "depths": [2], "dtype": "float64", "task": TASK, "train": TRAIN,
            "eval": {"batch_size": 60, "validation_size": 40}, "methods": methods}  # fmt: skip
    data.update(changes)
    return from_dict(ExperimentConfig, data)


def _records(run: Path) -> dict[str, dict]:
    return {f"{p.parent.name}/{p.name}": json.loads(p.read_text()) for p in (run / "units").rglob("*.json")}


def _close(a, b, where: str, tol: float = 1e-10) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _close(a[k], b[k], f"{where}.{k}", tol)
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{where}[{i}]", tol)
    elif isinstance(a, float) and isinstance(b, float):
        assert abs(a - b) <= tol * max(1.0, abs(b)), f"{where}: {a} != {b}"
    elif where.split(".")[-1] != "seconds":
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_runs(ens: Path, alone: Path) -> None:
    a, b = _records(ens), _records(alone)
    assert a.keys() == b.keys()
    for key in a:
        _close({k: v for k, v in a[key].items() if k != "seconds"},
               {k: v for k, v in b[key].items() if k != "seconds"}, key)  # fmt: skip
    for ckpt in (ens / "checkpoints").rglob("*.pt"):  # the trained parameters themselves
        x, y = load_checkpoint(ckpt)["model"], load_checkpoint(alone / ckpt.relative_to(ens))["model"]
        for name in x:
            torch.testing.assert_close(x[name], y[name], rtol=1e-10, atol=1e-12, msg=f"{ckpt.name}: {name}")


METHODS = {
    "linear_transformer": [{"name": "lt", "kind": "linear_transformer"}],
    "lfom": [{"name": "lfom", "kind": "memformer_lfom"}],
    "cgd": [{"name": "cgd", "kind": "memformer_cgd"}],
    "gdpp": [{"name": "gdpp", "kind": "memformer_lfom_plus", "B": "free"}],
    "recurrent": [{"name": "rec", "kind": "memformer_recurrent", "A": "scalar", "heads": 2}],
    "learnable_lfom": [{"name": "lfom_solver", "kind": "lfom", "lfom_form": "full", "gamma_init": 0.1}],
    "normalized": [{"name": "norm", "kind": "memformer_lfom", "normalize": True}],
    "constrained": [{"name": "con", "kind": "memformer_lfom", "constraints": {"alpha": 0.3, "dual_lr": 0.5}}],
    "constrained_heldout": [{"name": "conh", "kind": "linear_transformer",
                             "constraints": {"alpha": 0.3, "dual_lr": 0.5, "dual_source": "heldout",
                                             "heldout_size": 30, "dual_every": 2}}],
    "clipped": [{"name": "clip", "kind": "memformer_cgd"}],
    "fixed_batch": [{"name": "fixed", "kind": "memformer_lfom"}],
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(METHODS))
def test_an_ensemble_trains_each_member_as_it_trains_alone(tmp_path, kind):
    train = {**TRAIN, "clip": 0.05} if kind == "clipped" else TRAIN
    train = {**train, "protocol": "fixed_batch"} if kind == "fixed_batch" else train
    cfg = config(METHODS[kind], train=train)
    run_experiment(cfg, tmp_path / "ens", progress=False, log=lambda _m: None)
    alone = cfg.model_copy(update={"train": cfg.train.model_copy(update={"ensemble": False})})
    run_experiment(alone, tmp_path / "alone", progress=False, log=lambda _m: None)
    assert_same_runs(tmp_path / "ens", tmp_path / "alone")


def test_mixtures_adapt_together_as_they_adapt_alone(tmp_path):
    mixture = {"name": "moe", "kind": "mixture", "expert_variances": [1.0, 2.0], "adapt_steps": 8,
               "adapt_size": 30, "B": "zero"}  # fmt: skip
    shifts = {"batch_size": 60, "validation_size": 40, "shifts": [{"name": "var3", "variance": 3.0}]}
    cfg = config([mixture], eval=shifts)
    run_experiment(cfg, tmp_path / "ens", progress=False, log=lambda _m: None)
    alone = cfg.model_copy(update={"train": cfg.train.model_copy(update={"ensemble": False})})
    run_experiment(alone, tmp_path / "alone", progress=False, log=lambda _m: None)
    assert_same_runs(tmp_path / "ens", tmp_path / "alone")


def test_an_interrupted_ensemble_resumes_to_the_same_results(tmp_path):
    cfg = config(METHODS["constrained"])
    run_experiment(cfg, tmp_path / "ref", progress=False, log=lambda _m: None)

    def interrupt(unit, step):
        if step == 7:  # after the checkpoint at step 5
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path / "cut", progress=False, on_step=interrupt, log=lambda _m: None)
    assert {load_checkpoint(p)["step"] for p in (tmp_path / "cut" / "checkpoints").rglob("*.pt")} == {5}
    run_experiment(cfg, tmp_path / "cut", resume=True, progress=False, log=lambda _m: None)
    assert_same_runs(tmp_path / "cut", tmp_path / "ref")


def test_a_members_checkpoint_is_the_single_unit_format(tmp_path):
    """Stop an ensemble after its checkpoint at step 5; resume one member alone with ``train``: it ends where
    the uninterrupted ensemble's member ends."""
    from unrolled.experiments.regression.data import SeedData
    from unrolled.experiments.regression.units import Work
    from unrolled.seeding import generator
    from unrolled.train.loop import RegressionStream, train

    cfg = config(METHODS["lfom"])
    run_experiment(cfg, tmp_path / "ref", progress=False, log=lambda _m: None)

    def interrupt(unit, step):
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path / "cut", progress=False, on_step=interrupt, log=lambda _m: None)
    method = cfg.methods[0]
    model = build_model(method, 3, 6, 2, generator(1, method.name, 2, "init"))
    data = SeedData(cfg, 1, torch.float64, "cpu")
    stream = RegressionStream(data.task, cfg.train, generator(1, "train"), torch.float64)
    train(
        model,
        stream,
        cfg.train,
        dtype=torch.float64,
        checkpoint=tmp_path / "cut" / "checkpoints" / "lfom" / "seed1_L2.pt",
    )
    ref = load_checkpoint(tmp_path / "ref" / "checkpoints" / "lfom" / "seed1_L2.pt")["model"]
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, ref[name], rtol=1e-10, atol=1e-12)
    assert Work  # the spec type a unit carries (imported to keep the test honest about what it rebuilds)


def test_optimizer_states_split_and_stack_back():
    params = [torch.nn.Parameter(torch.randn(3, 4, 2)), torch.nn.Parameter(torch.randn(3, 5))]
    opt = torch.optim.Adam(params, lr=0.1)
    sum(p.square().sum() for p in params).backward()
    opt.step()
    state = opt.state_dict()
    members = [split_optimizer_state(state, i, 3) for i in range(3)]
    assert members[1]["state"][0]["exp_avg"].shape == (4, 2)
    back = stack_optimizer_states(members)
    for k in state["state"]:
        for name, v in state["state"][k].items():
            torch.testing.assert_close(back["state"][k][name], v)


def test_members_must_share_a_shape():
    from unrolled.models.memformer import LFOMMemformer

    with pytest.raises(EnsembleMismatchError, match="differ"):
        Ensemble([LFOMMemformer(d=3, n=6, layers=2), LFOMMemformer(d=3, n=6, layers=3)])


def test_the_regression_family_groups_seeds_only_where_ensembles_pay():
    from unrolled.experiments.registry import get_family
    from unrolled.experiments.regression.ensembles import MAX_ENTRIES, ensembles

    methods = [{"name": "lt", "kind": "linear_transformer"}, {"name": "cg", "kind": "cg"}]
    small = config(methods)
    units = get_family("regression").plan(small)
    groups = ensembles(small, units)
    learned = [g for g in groups if g[0].method == "lt"]
    assert [len(g) for g in learned] == [3]  # the three seeds of the learned method at depth 2, together
    assert all(len(g) == 1 for g in groups if g[0].method == "cg")  # classical units alone
    off = config(methods, train={**TRAIN, "ensemble": False})
    assert all(len(g) == 1 for g in ensembles(off, units))
    # a batch of more than MAX_ENTRIES prompt entries: measured to cost more together than alone
    big = config(methods, task={**TASK, "d": 20, "n": 200}, train={**TRAIN, "batch_size": 1000})
    assert MAX_ENTRIES < 1000 * 201 * 21
    assert all(len(g) == 1 for g in ensembles(big, get_family("regression").plan(big)))
