"""``train.compile``: a compiled step against the eager one, for every own model kind and objective.

Most tests compile with the ``aot_eager`` backend: it traces the step exactly as Inductor does (one graph,
``fullgraph=True``, AOT autograd's forward and backward) and runs the traced graph without generating code,
so tracing, guards and recompilation are checked in seconds. One test generates real kernels with Inductor
(a C++ compiler, tens of seconds on two cores) and checks them to float tolerance.
"""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

import unrolled.train.compiled as compiled
from tests.test_gram_readout import CLIP
from tests.test_gram_readout import _model as denoiser
from unrolled.constrained import (
    ConstrainedObjective,
    DescentConstraints,
    EarlyExitConfig,
    EarlyExitObjective,
    Multipliers,
    Objective,
)
from unrolled.experiments.regression import LearnedMethod, build_model
from unrolled.tasks import RegressionTask
from unrolled.tasks.regression import RegressionConfig
from unrolled.train import train
from unrolled.train.compiled import CompiledLoss, CompileError, compile_mode, trainer_compile_args
from unrolled.train.config import TrainConfig
from unrolled.train.loop import RegressionStream
from unrolled.trajectory import Trajectory, squared_error

REGRESSION = {
    "lt": {"kind": "linear_transformer"},
    "lt_normalized": {"kind": "linear_transformer", "normalize": True},
    "lfom": {"kind": "memformer_lfom"},
    "lfom_plus": {"kind": "memformer_lfom_plus", "B": "free"},
    "cgd": {"kind": "memformer_cgd"},
    "recurrent": {"kind": "memformer_recurrent", "A": "scalar", "heads": 2},
    "unrolled_lfom": {"kind": "lfom"},
}


def _objective(kind: str, depth: int, loss=squared_error, fraction: float = 1.0) -> Objective:
    if kind == "erm":
        return Objective(loss)
    if kind == "early_exit":
        objective = EarlyExitObjective(EarlyExitConfig(scale_type="l", curriculum="gradual"), depth, 10, loss)
        objective.sync_step(7, 10)  # some layers switched on, some not
        return objective
    constraints = {
        "constrained": DescentConstraints(0.1),
        "attached": DescentConstraints(0.1, detach_previous=False),
        "late": DescentConstraints(0.1, layers=[depth - 1, depth]),
    }[kind]
    objective = ConstrainedObjective(
        constraints, Multipliers(depth, 1.0), loss, readout_fraction=fraction,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    objective.multipliers.value = torch.linspace(
        0, 2, depth, dtype=torch.float64
    )  # λ_1 = 0: graph-free eagerly
    return objective


def _loss_and_grads(model: nn.Module, step, inputs, target) -> tuple[torch.Tensor, dict, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss, info = step(inputs, target)
    loss.backward()
    return loss.detach(), info, [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _assert_same_step(model: nn.Module, make_objective, inputs, target, backend="aot_eager", rtol=1e-6):
    eager = make_objective()
    e_loss, e_info, e_grads = _loss_and_grads(model, lambda x, y: eager.loss(model(x), y), inputs, target)
    c_loss, c_info, c_grads = _loss_and_grads(
        model, CompiledLoss(model, make_objective(), backend=backend), inputs, target
    )
    torch.testing.assert_close(c_loss, e_loss, rtol=rtol, atol=1e-7)
    assert len(c_grads) == len(e_grads) > 0
    for a, b in zip(c_grads, e_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol * 10, atol=1e-6 * b.abs().max().item())
    assert set(c_info) == set(e_info)
    if "layer_losses" in e_info:
        torch.testing.assert_close(torch.tensor(c_info["layer_losses"]), torch.tensor(e_info["layer_losses"]))


@pytest.mark.parametrize(
    ("kind", "objective"),
    [(k, "constrained") for k in REGRESSION] + [("lt", "erm"), ("lfom", "early_exit")],
)
def test_compiled_regression_step_is_the_eager_step(kind, objective):
    """Loss, every gradient and the logged layer losses: compiled (one graph) = eager, for each Memformer kind."""
    task = RegressionTask(RegressionConfig(), seed=0)
    batch = task.sample(16, torch.Generator().manual_seed(0))
    model = build_model(
        LearnedMethod(name="m", **REGRESSION[kind]), 5, 20, 3, torch.Generator().manual_seed(0)
    )
    _assert_same_step(model, lambda: _objective(objective, 3), batch, batch.y_query)


@pytest.mark.parametrize(
    ("kind", "objective", "fraction"),
    [("ut", "constrained", 1.0), ("vit", "constrained", 1.0), ("dust", "constrained", 1.0),
     ("ut", "constrained", 0.5), ("ut", "attached", 1.0), ("ut", "late", 1.0), ("ut", "erm", 1.0)],
)  # fmt: skip
def test_compiled_denoiser_step_is_the_eager_step(kind, objective, fraction):
    """The denoisers with Gram-form and subsampled readouts (the same samples drawn in both modes)."""
    model = denoiser(kind, torch.float32)
    g = torch.Generator().manual_seed(1)
    noisy, clean = (torch.rand(6, *CLIP, generator=g) for _ in range(2))
    _assert_same_step(model, lambda: _objective(objective, 3, None, fraction), noisy, clean)


@pytest.mark.parametrize("kind", ["constrained", "attached", "late"])
@pytest.mark.parametrize("affine", [True, False], ids=["gram", "direct"])
def test_the_layers_a_compiled_step_reads_with_a_graph_are_those_the_lagrangian_can_weigh(kind, affine):
    """A layer whose weight ∂L/∂f_l is 0 for every λ (f_0 and the layers below a subset, with f_{l−1}
    detached) gets no gradient path; every other layer gets one, even at λ = 0 (the graph does not change
    with λ). States are independent leaves, so a state's ``.grad`` shows exactly whether it was read with a
    graph. Checked against :meth:`ConstrainedObjective.gradient_weights` at random λ."""
    depth, model = 3, denoiser("ut", torch.float64)
    g = torch.Generator().manual_seed(2)
    noisy, clean = (torch.rand(4, *CLIP, generator=g, dtype=torch.float64) for _ in range(2))
    with torch.no_grad():
        full = model(noisy)
    states = tuple(s.clone().requires_grad_() for s in full.states)
    if affine:
        trajectory = Trajectory(states, full.readout, full.state_loss, full.affine_readout)
        objective = _objective(kind, depth, None)
    else:
        trajectory = Trajectory(states, full.readout)
        objective = _objective(kind, depth)
    objective.multipliers.value = torch.zeros(depth, dtype=torch.float64)
    loss, _ = objective.traced_loss(trajectory, clean, objective.step_tensors(clean))
    loss.backward()
    read = [s.grad is not None for s in states]
    assert read == objective.weighable(depth)
    weighs = torch.zeros(depth + 1, dtype=torch.bool)
    for _ in range(20):
        lam = torch.rand(depth, generator=g, dtype=torch.float64)  # λ_l > 0 only where a constraint is
        constrained = objective.constraints.constrained_layers(depth)
        objective.multipliers.value = lam * torch.tensor([l in constrained for l in range(1, depth + 1)])
        weighs |= objective.gradient_weights(depth) != 0
    assert weighs.tolist() == read
    assert read[0] == (kind == "attached") and read[-1]


def _fit(tmp_path, *, compile_at: set[int], steps: int, stop: int | None = None, name: str = "run"):
    """A constrained LFOM Memformer whose multipliers move every step; compiled for the parts in
    ``compile_at`` ({1}: the first leg, {2}: the resumed leg). Returns the model, logs and graphs compiled."""
    task = RegressionTask(RegressionConfig(), seed=0)
    model = build_model(
        LearnedMethod(name="m", kind="memformer_lfom"), 5, 20, 3, torch.Generator().manual_seed(0)
    )
    stream = RegressionStream(task, TrainConfig(batch_size=32), torch.Generator().manual_seed(1))
    objective = _objective("constrained", 3)
    objective.multipliers.value.zero_()
    logs: list[dict] = []
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    legs = [(1, stop or steps), (2, steps)] if stop else [(1, steps)]
    for leg, until in legs:
        cfg = TrainConfig(
            steps=until, batch_size=32, lr=0.01, log_every=1, checkpoint_every=2, compile=leg in compile_at
        )
        train(model, stream, cfg, objective=objective, checkpoint=tmp_path / f"{name}.pt", on_log=logs.append)
    return model, logs, torch._dynamo.utils.counters["stats"]["unique_graphs"] - before


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")


def test_a_compiled_run_follows_the_eager_run_and_compiles_once(tmp_path, aot_eager):
    """Six steps with a dual step after each: the multipliers are data to the compiler (one graph, no
    recompilation), and the run's losses, multipliers and parameters are the eager run's."""
    e_model, e_logs, _ = _fit(tmp_path, compile_at=set(), steps=6, name="eager")
    c_model, c_logs, graphs = _fit(tmp_path, compile_at={1}, steps=6, name="compiled")
    assert graphs == 1
    lam = torch.tensor([r["multipliers"] for r in c_logs])
    torch.testing.assert_close(lam, torch.tensor([r["multipliers"] for r in e_logs]), rtol=1e-5, atol=1e-7)
    assert lam[-1].min() > lam[0].max() > 0  # the multipliers did move, at every dual step
    assert [r["loss"] for r in c_logs] == pytest.approx([r["loss"] for r in e_logs], rel=1e-5)
    for a, b in zip(c_model.parameters(), e_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("compile_at", [{1}, {2}], ids=["compiled-then-eager", "eager-then-compiled"])
def test_checkpoints_resume_across_modes(tmp_path, aot_eager, compile_at):
    """Interrupted after 3 of 6 steps and resumed in the other mode: the parameters of an uninterrupted eager
    run (the checkpoint holds the same model, optimizer, stream and multipliers either way)."""
    reference, _, _ = _fit(tmp_path, compile_at=set(), steps=6, name="reference")
    model, logs, _ = _fit(tmp_path, compile_at=compile_at, steps=6, stop=3, name="mixed")
    assert [r["step"] for r in logs] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_inductor_kernels_give_the_eager_step_to_float_tolerance():
    """Real code generation (Inductor, C++ on the CPU): the constrained UT denoiser step with Gram-form
    readouts, loss and gradients to float32 tolerance."""
    model = denoiser("ut", torch.float32)
    g = torch.Generator().manual_seed(1)
    noisy, clean = (torch.rand(6, *CLIP, generator=g) for _ in range(2))
    _assert_same_step(model, lambda: _objective("constrained", 3, None), noisy, clean, "inductor", rtol=1e-4)


def test_without_a_compiler_the_option_fails_clearly(monkeypatch):
    """No silent eager fall-back: a missing C++ compiler is a CompileError naming the remedy."""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/c++",))
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)
    model = nn.Linear(7, 3)  # a graph no other test compiles (no cached kernels to reuse)

    def solver(x: torch.Tensor) -> Trajectory:
        return Trajectory((x[:, :3], model(x)), readout=lambda s: s)

    with pytest.raises(CompileError, match=r"could not build the step.*train.compile: false"):
        CompiledLoss(solver, Objective())(torch.randn(5, 7), torch.randn(5, 3))


def test_a_graph_break_on_the_hot_path_is_an_error():
    class Host(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> Trajectory:
            torch._dynamo.graph_break()  # what a host-side step in a forward pass amounts to
            return Trajectory((x, x * self.w), readout=lambda s: s)

    with pytest.raises(CompileError, match="graph break"):
        CompiledLoss(Host(), Objective(), backend="aot_eager")(torch.randn(4, 3), torch.randn(4, 3))


def test_the_setting_and_its_trainer_arguments():
    assert TrainConfig().compile is False and compile_mode(False) is None
    assert compile_mode(TrainConfig(compile=True).compile) == "default"
    assert compile_mode(TrainConfig(compile="reduce-overhead").compile) == "reduce-overhead"
    with pytest.raises(ValidationError, match="compile"):
        TrainConfig(compile="fastest")
    assert trainer_compile_args(False) == {}
    assert trainer_compile_args(True) == {"torch_compile": True, "torch_compile_mode": None}
    assert trainer_compile_args("max-autotune") == {
        "torch_compile": True,
        "torch_compile_mode": "max-autotune",
    }


@pytest.mark.parametrize("model", ["bert", "ut_text"])
def test_the_trainer_compiles_the_model_when_the_setting_asks(tmp_path, model):
    """The Hugging Face families pass ``train.compile`` to the Trainer: its model (a pretrained encoder, or
    the UT text classifier) runs compiled (``OptimizedModule``) and the constrained run logs the eager run's
    losses and multipliers."""
    pytest.importorskip("transformers")
    from tests.test_hf_trainer import CONSTRAINTS, Examples, args, solver
    from unrolled.models.text_classifier import UTTextClassifier
    from unrolled.train.hf import ConstrainedTrainer

    def build() -> nn.Module:
        if model == "bert":
            return solver()
        return UTTextClassifier(101, 3, width=16, depth=3, heads=2, max_length=16, embeddings="scratch",
                                generator=torch.Generator().manual_seed(0))  # fmt: skip

    runs = {}
    for setting in (False, True):
        extra = trainer_compile_args(setting) | ({"torch_compile_backend": "aot_eager"} if setting else {})
        trainer = ConstrainedTrainer(
            model=build(), args=args(tmp_path / str(setting), max_steps=3, **extra),
            train_dataset=Examples(n=8), constraints=CONSTRAINTS,
        )  # fmt: skip
        trainer.train()
        runs[setting] = trainer
    assert type(runs[True].model_wrapped).__name__ == "OptimizedModule"
    assert type(runs[False].model_wrapped).__name__ != "OptimizedModule"
    losses = {k: [h["loss"] for h in t.state.log_history if "loss" in h] for k, t in runs.items()}
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)
    torch.testing.assert_close(
        runs[True].objective.multipliers.value, runs[False].objective.multipliers.value
    )
