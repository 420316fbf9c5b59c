"""The softmax in-context learners: Garg et al.'s construction, causality, trajectories; the task's new families."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from unrolled.models.icl import GPT2Learner, Prompts, UTLearner, interleave, prompt_mse
from unrolled.tasks.regression import RegressionConfig, RegressionTask

transformers = pytest.importorskip("transformers")


def _prompts(B: int = 5, N: int = 7, d: int = 3, seed: int = 0) -> Prompts:
    g = torch.Generator().manual_seed(seed)
    return Prompts(torch.randn(B, N, d, generator=g), torch.randn(B, N, generator=g), torch.zeros(B, d))


class GargTransformerModel(nn.Module):
    """Garg et al.'s ``TransformerModel`` (dtsip/in-context-learning, ``src/models.py``), written from its
    description: ``_combine``, a read-in, ``GPT2Model(inputs_embeds=…).last_hidden_state``, a read-out, the
    predictions at the x tokens."""

    def __init__(self, n_dims: int, n_positions: int, n_embd: int, n_layer: int, n_head: int) -> None:
        super().__init__()
        config = transformers.GPT2Config(
            n_positions=2 * n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
        )  # fmt: skip
        self._read_in = nn.Linear(n_dims, n_embd)
        self._backbone = transformers.GPT2Model(config)
        self._read_out = nn.Linear(n_embd, 1)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        b, points, dim = xs.shape
        ys_wide = torch.cat((ys.view(b, points, 1), torch.zeros(b, points, dim - 1)), axis=2)
        zs = torch.stack((xs, ys_wide), dim=2).view(b, 2 * points, dim)
        output = self._backbone(inputs_embeds=self._read_in(zs)).last_hidden_state
        return self._read_out(output)[:, ::2, 0]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_gpt2_learner_computes_what_gargs_model_computes(attn: str) -> None:
    ours = GPT2Learner(d=3, points=7, width=32, depth=3, heads=4, seed=0, attn_implementation=attn)
    garg = GargTransformerModel(3, 7, 32, 3, 4)
    garg._read_in.load_state_dict(ours.read_in.state_dict())
    garg._backbone.load_state_dict(ours.backbone.state_dict())
    garg._read_out.load_state_dict(ours.read_out.state_dict())
    for N in (7, 4):  # full-length and shorter prompts
        p = _prompts(N=N)
        torch.testing.assert_close(ours(p).prediction(), garg(p.xs, p.ys), rtol=1e-5, atol=1e-6)


def test_interleave_is_gargs_combine() -> None:
    xs = torch.arange(12.0).view(1, 2, 6)[..., :3].reshape(1, 2, 3)
    ys = torch.tensor([[10.0, 20.0]])
    z = interleave(xs, ys)
    assert z.tolist() == [[[0, 1, 2], [10, 0, 0], [6, 7, 8], [20, 0, 0]]]
    with pytest.raises(ValueError, match="ys must be"):
        interleave(xs, ys[:, :1])


@pytest.mark.parametrize("cls", [GPT2Learner, UTLearner])
def test_each_prediction_sees_only_the_pairs_before_it(cls) -> None:
    model = cls(d=3, points=7, width=16, depth=2, heads=2, seed=1)
    p = _prompts()
    ys = p.ys.clone()
    ys[:, 3] += 5.0  # changes y_3 only: predictions 0..3 must not move, later ones must
    moved = Prompts(p.xs, ys, p.w_star)
    a, b = model(p).predictions(), model(moved).predictions()
    assert torch.equal(a[..., :4], b[..., :4])
    assert (a[..., 4:] - b[..., 4:]).abs().max() > 1e-6


@pytest.mark.parametrize("cls", [GPT2Learner, UTLearner])
def test_trajectory_states_readout_and_truncation(cls) -> None:
    model = cls(d=3, points=7, width=16, depth=3, heads=2, seed=2)
    p = _prompts()
    traj = model(p)
    assert traj.depth == 3 and traj.states[0].shape == (5, 14, 16)
    assert traj.predictions().shape == (4, 5, 7)
    short = model(p, depth=1)  # later layers are not run
    assert short.depth == 1
    for a, b in zip(short.states, traj.states[:2], strict=False):
        torch.testing.assert_close(a, b)
    per_prompt = prompt_mse(traj.prediction(), p.ys)
    torch.testing.assert_close(per_prompt, (traj.prediction() - p.ys).square().mean(1))


def test_learners_check_their_inputs_and_seed_their_init() -> None:
    model = UTLearner(d=3, points=5, width=16, depth=1, heads=2, seed=3)
    with pytest.raises(ValueError, match="positions for 5"):
        model(_prompts(N=6))
    with pytest.raises(ValueError, match="d = 3"):
        model(_prompts(d=4, N=5))
    with pytest.raises(TypeError, match="Prompts"):
        model(torch.zeros(2, 5, 3))
    state = torch.random.get_rng_state()
    a, b = GPT2Learner(3, 5, 16, 1, 2, seed=4), GPT2Learner(3, 5, 16, 1, 2, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_prompts_from_a_regression_batch_put_the_query_last() -> None:
    task = RegressionTask(RegressionConfig(d=3, n=4, covariance="isotropic"), 0)
    batch = task.sample(2, torch.Generator().manual_seed(0))
    p = Prompts.from_batch(batch)
    assert (
        p.points == 5 and torch.equal(p.xs[:, -1], batch.x_query) and torch.equal(p.ys[:, -1], batch.y_query)
    )


def test_skewed_covariance_is_gargs_normalised_transform() -> None:
    cfg = RegressionConfig(d=4, n=9, covariance="skewed", skew=1.0)
    task = RegressionTask(cfg, 0)
    cov = task.input_second_moment()
    assert math.isclose(float(torch.trace(cov)), 4.0, rel_tol=1e-9)  # E‖x‖² = d
    eig = torch.linalg.eigvalsh(cov).flip(0)
    expected = torch.tensor([1.0, 1 / 4, 1 / 9, 1 / 16], dtype=torch.float64)
    torch.testing.assert_close(eig, expected * 4 / expected.sum())  # eigenvalues ∝ 1/(i+1)²
    batch = task.sample(40000, torch.Generator().manual_seed(1), dtype=torch.float64)
    x = batch.X.reshape(-1, 4)
    torch.testing.assert_close(x.T @ x / len(x), cov, atol=0.03, rtol=0)
    assert float(batch.w_star.square().mean()) == pytest.approx(1.0, rel=0.05)  # w* ~ N(0, I)
    assert task.zero_predictor_loss() == pytest.approx(4.0)


def test_sparse_weights_and_the_dimension_curriculum() -> None:
    task = RegressionTask(RegressionConfig(d=6, n=5, covariance="isotropic", sparsity=2), 0)
    batch = task.sample(500, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert ((batch.w_star != 0).sum(1) == 2).all()
    assert task.zero_predictor_loss() == pytest.approx(float(torch.cat([batch.y, batch.y_query[:, None]], 1)
                                                        .square().mean()), rel=0.1)  # fmt: skip
    full = RegressionTask(RegressionConfig(d=6, n=5, covariance="isotropic"), 0)
    cut = full.sample(3, torch.Generator().manual_seed(0), n=8, active_dims=2)
    assert cut.X.shape == (3, 8, 6) and (cut.X[..., 2:] == 0).all()
    torch.testing.assert_close(cut.y, torch.einsum("bnd,bd->bn", cut.X, cut.w_star))
    with pytest.raises(ValueError, match="active_dims"):
        full.sample(3, active_dims=7)
    with pytest.raises(Exception, match="sparsity"):
        RegressionConfig(d=5, covariance="rotated", sparsity=2)
