"""The CUDA paths, against the same computations on the CPU. Skipped where no GPU is present (CI, 2-core
machines); run on a GPU machine with ``python -m pytest tests/test_cuda.py``."""

import pytest
import torch

from tests.conftest import make_batch
from unrolled.constrained import ConstrainedObjective, DescentConstraints, Multipliers
from unrolled.experiments.regression import LearnedMethod, build_model
from unrolled.models import LinearTransformer
from unrolled.models.denoisers import VideoDenoiser, clip_mse
from unrolled.solvers import ConjugateGradient, GradientDescent, Nesterov
from unrolled.tasks import RegressionTask
from unrolled.tasks.regression import RegressionConfig
from unrolled.train import load_checkpoint, train
from unrolled.train.config import TrainConfig
from unrolled.train.loop import RegressionStream

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = "cuda"


def _close_trees(a, b, rtol=1e-9, atol=1e-11):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.cpu(), y.cpu(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("d", [2, 5])
def test_free_B_transformer_on_cuda_equals_cpu_with_gradients(d):
    """GD++ layers in both layouts (elementwise below SMALL_D, batched products above)."""
    batch = make_batch(64, seed=4, d=d, covariance="isotropic")
    model = LinearTransformer(d, 20, 3, B="free", A="full", heads=2, init_std=0.2,
                              generator=torch.Generator().manual_seed(3)).double()  # fmt: skip
    gpu = LinearTransformer(d, 20, 3, B="free", A="full", heads=2, init_std=0.2).double().to(CUDA)
    gpu.load_state_dict(model.state_dict())
    ours, ref = gpu(batch.to(CUDA)), model(batch)
    _close_trees(ours.states, ref.states)
    ours.prediction().pow(2).sum().backward()
    ref.prediction().pow(2).sum().backward()
    _close_trees([p.grad for p in gpu.parameters()], [p.grad for p in model.parameters()])


@pytest.mark.parametrize("solver", [GradientDescent(0.01), Nesterov(0.01, 0.5), ConjugateGradient()])
def test_batched_classical_solvers_on_cuda_equal_cpu(solver):
    batch = make_batch(128, seed=2)
    _close_trees(solver(batch.to(CUDA), 6).states, solver(batch, 6).states)


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_gram_form_readouts_on_cuda_equal_the_direct_readout_on_cpu(fraction):
    """The constrained denoiser's Lagrangian and gradients, Gram form on CUDA (subsets drawn on the CPU and
    moved) against one direct readout per layer on the CPU, float64."""
    clip = (4, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    cpu = VideoDenoiser("ut", *clip, patch=(2, 4, 4), width_D=8, depth=3, heads=2, generator=g).double()
    gpu = VideoDenoiser("ut", *clip, patch=(2, 4, 4), width_D=8, depth=3, heads=2).double().to(CUDA)
    gpu.load_state_dict(cpu.state_dict())
    noisy, clean = torch.rand(6, *clip, dtype=torch.float64), torch.rand(6, *clip, dtype=torch.float64)

    def objective(loss, fraction_=1.0):
        o = ConstrainedObjective(DescentConstraints(0.2), Multipliers(3, 1.0), loss, readout_fraction=fraction_,
                                 generator=torch.Generator().manual_seed(1))  # fmt: skip
        o.multipliers.value = torch.tensor([0.0, 0.7, 1.3], dtype=torch.float64)
        return o

    losses = objective(None, fraction).layer_losses(gpu(noisy.to(CUDA)), clean.to(CUDA))
    objective(None).lagrangian(losses)[0].backward()
    if fraction == 1.0:
        reference = objective(clip_mse).layer_losses(cpu(noisy), clean)
    else:  # the same subsets, by hand, on the CPU
        from unrolled.constrained.subsample import subsample

        pick = subsample(6, fraction, torch.Generator().manual_seed(1))
        trajectory = cpu(noisy)
        reference = torch.stack(
            [clip_mse(trajectory.readout(s[pick]), clean[pick]).mean() for s in trajectory.states[:-1]]
            + [clip_mse(trajectory.prediction(), clean).mean()]
        )
    objective(None).lagrangian(reference)[0].backward()
    torch.testing.assert_close(losses.cpu(), reference.detach(), rtol=1e-10, atol=1e-12)
    _close_trees([p.grad for p in gpu.parameters()], [p.grad for p in cpu.parameters()])


def test_training_on_cuda_learns_and_its_checkpoint_loads_on_cpu(tmp_path):
    task = RegressionTask(RegressionConfig(), seed=0)
    model = build_model(
        LearnedMethod(name="m", kind="memformer_lfom"), 5, 20, 2, torch.Generator().manual_seed(0)
    )
    cfg = TrainConfig(protocol="online", steps=60, batch_size=256, lr=0.01, checkpoint_every=30)
    stream = RegressionStream(task, cfg, torch.Generator().manual_seed(1), device=CUDA)
    result = train(model, stream, cfg, device=CUDA, checkpoint=tmp_path / "ck.pt")
    assert result.steps == 60 and next(model.parameters()).is_cuda
    state = load_checkpoint(tmp_path / "ck.pt")
    assert state["step"] == 60
    cpu = build_model(
        LearnedMethod(name="m", kind="memformer_lfom"), 5, 20, 2, torch.Generator().manual_seed(5)
    )
    cpu.load_state_dict({k: v.cpu() for k, v in state["model"].items()})
    test = task.sample(512, torch.Generator().manual_seed(2))
    with torch.no_grad():
        on_cpu = cpu(test).layerwise_losses(test.y_query)
        on_gpu = model(test.to(CUDA)).layerwise_losses(test.y_query.to(CUDA)).cpu()
        untrained = build_model(
            LearnedMethod(name="m", kind="memformer_lfom"), 5, 20, 2, torch.Generator().manual_seed(0)
        )(test).layerwise_losses(test.y_query)
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-4, atol=1e-5)
    assert on_cpu[-1] < 0.8 * untrained[-1]


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_steps_on_cuda_equal_the_eager_steps(mode):
    """train.compile on a GPU (Inductor's Triton kernels; CUDA graphs with reduce-overhead): the constrained
    UT denoiser step, Gram-form readouts, three steps in a row (the graph replayed with new multipliers)."""
    from unrolled.train.compiled import CompiledLoss

    g = torch.Generator().manual_seed(0)
    clean = torch.rand(8, 4, 1, 16, 16, generator=g)
    noisy = clean + 0.2 * torch.randn(clean.shape, generator=g)
    runs = []
    for compiled in (False, True):
        model = VideoDenoiser("ut", 4, 1, 16, 16, patch=(2, 4, 4), width_D=32, depth=3, heads=2,
                              generator=torch.Generator().manual_seed(1)).to(CUDA)  # fmt: skip
        objective = ConstrainedObjective(DescentConstraints(0.1), Multipliers(3, 1.0), None)
        forward_loss = (
            CompiledLoss(model, objective, mode)
            if compiled
            else (lambda x, y, m=model, o=objective: o.loss(m(x), y))
        )
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses = []
        for step in range(1, 4):
            opt.zero_grad(set_to_none=True)
            loss, _ = forward_loss(noisy.to(CUDA), clean.to(CUDA))
            loss.backward()
            opt.step()
            objective.after_step(step)
            losses.append(float(loss))
        runs.append((losses, [p.detach().cpu() for p in model.parameters()]))
    assert runs[1][0] == pytest.approx(runs[0][0], rel=1e-4)
    _close_trees(runs[1][1], runs[0][1], rtol=1e-3, atol=1e-5)
