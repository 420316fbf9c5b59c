"""The in-context baselines at every prefix, against NumPy, plain loops and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unrolled.models.icl import Prompts
from unrolled.solvers.prefix import (
    IterativeNewton,
    Lasso,
    PrefixCG,
    PrefixGD,
    bayes,
    default_gd_grid,
    least_squares,
    prefix_errors,
    ridge,
    tune_alpha,
    tune_gd,
    tuned_gd,
)


def _prompts(B: int = 6, N: int = 9, d: int = 4, noise: float = 0.0, seed: int = 0) -> Prompts:
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(B, N, d, generator=g, dtype=torch.float64)
    w = torch.randn(B, d, generator=g, dtype=torch.float64)
    ys = torch.einsum("bnd,bd->bn", xs, w) + noise * torch.randn(B, N, generator=g, dtype=torch.float64)
    return Prompts(xs, ys, w)


def _per_prefix(prompts: Prompts, fit) -> np.ndarray:
    """A plain loop over prompts and prefixes: ``fit(X [i, d], y [i]) -> w [d]``, prediction at x_i."""
    xs, ys = prompts.xs.numpy(), prompts.ys.numpy()
    B, N, _d = xs.shape
    out = np.zeros((B, N))
    for b in range(B):
        for i in range(1, N):
            out[b, i] = xs[b, i] @ fit(xs[b, :i], ys[b, :i])
    return out


def test_least_squares_is_numpy_lstsq_on_every_prefix() -> None:
    p = _prompts()
    ours = least_squares(p).prediction().numpy()
    ref = _per_prefix(p, lambda X, y: np.linalg.lstsq(X, y, rcond=None)[0])
    np.testing.assert_allclose(ours, ref, atol=1e-9)
    assert np.all(ours[:, 0] == 0)  # no pairs: predict 0, as Garg et al.'s baseline


def test_ridge_and_bayes_are_their_closed_forms() -> None:
    p = _prompts(noise=0.5)
    lam = 0.7
    ref = _per_prefix(p, lambda X, y: np.linalg.solve(X.T @ X + lam * np.eye(X.shape[1]), X.T @ y))
    np.testing.assert_allclose(ridge(p, lam).prediction().numpy(), ref, atol=1e-10)
    prior = torch.diag(torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64))
    ref_b = _per_prefix(
        p, lambda X, y: np.linalg.solve(X.T @ X + 0.25 * np.linalg.inv(prior.numpy()), X.T @ y)
    )
    np.testing.assert_allclose(bayes(p, 0.5, prior).prediction().numpy(), ref_b, atol=1e-10)
    torch.testing.assert_close(bayes(p, 0.0, prior).prediction(), least_squares(p).prediction())
    with pytest.raises(ValueError, match="λ > 0"):
        ridge(p, 0.0)


def test_bayes_beats_least_squares_and_other_ridges_under_known_noise() -> None:
    """The posterior mean is optimal in expectation: on many prompts no other λ does better."""
    p = _prompts(B=4000, N=8, d=4, noise=1.0, seed=3)
    bayes_err = float(prefix_errors(bayes(p, 1.0, torch.eye(4, dtype=torch.float64)), p).mean())
    for lam in (0.1, 0.4, 3.0, 10.0):
        assert bayes_err < float(prefix_errors(ridge(p, lam), p).mean())
    assert bayes_err < float(prefix_errors(least_squares(p), p).mean())


def _newton_loop(X: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    S = X.T @ X
    M = S.T / np.linalg.norm(S @ S.T)  # Frobenius, as Fu et al.'s newton_inv
    for _ in range(k):
        M = M @ (2 * np.eye(S.shape[0]) - S @ M)
    return M @ (X.T @ y)


@pytest.mark.parametrize("k", [0, 1, 3, 8])
def test_newton_is_a_plain_newton_loop(k: int) -> None:
    p = _prompts()
    ours = IterativeNewton()(p, 8).prediction(k).numpy()
    np.testing.assert_allclose(ours, _per_prefix(p, lambda X, y: _newton_loop(X, y, k)), atol=1e-9)


def test_newton_and_cg_reach_least_squares() -> None:
    p = _prompts(N=12, d=4)
    ls = least_squares(p).prediction()
    newton = IterativeNewton()(p, 40).prediction()
    cg = PrefixCG()(p, 4).prediction()  # d steps: exact in exact arithmetic, on every prefix
    torch.testing.assert_close(newton, ls, atol=1e-7, rtol=0)
    torch.testing.assert_close(cg, ls, atol=1e-7, rtol=0)


def test_gd_is_a_plain_gd_loop_and_keep_selects_states() -> None:
    p = _prompts()

    def gd(X: np.ndarray, y: np.ndarray, k: int, lr: float) -> np.ndarray:
        w = np.zeros(X.shape[1])
        for _ in range(k):
            w = w - lr * (X.T @ X @ w - X.T @ y)
        return w

    traj = PrefixGD(0.01)(p, 16, keep=[2, 16])
    assert traj.depth == 1
    np.testing.assert_allclose(traj.prediction(0).numpy(), _per_prefix(p, lambda X, y: gd(X, y, 2, 0.01)))
    np.testing.assert_allclose(traj.prediction(1).numpy(), _per_prefix(p, lambda X, y: gd(X, y, 16, 0.01)))
    mean = PrefixGD(0.3, "mean")(p, 3).prediction().numpy()
    ref = _per_prefix(p, lambda X, y: gd(X / np.sqrt(len(y)), y / np.sqrt(len(y)), 3, 0.3))
    np.testing.assert_allclose(mean, ref, atol=1e-12)
    with pytest.raises(ValueError, match="outside"):
        PrefixGD(0.01)(p, 4, keep=[5])


def test_tuned_gd_picks_the_best_step_for_each_count() -> None:
    val, test = _prompts(B=400, seed=1), _prompts(B=400, seed=2)
    grid = default_gd_grid("mean", d=4, points=9)
    tuned = tune_gd(val, [1, 4, 16], grid)
    assert set(tuned) == {1, 4, 16}
    traj = tuned_gd(test, tuned)
    assert traj.depth == 2
    for j, k in enumerate([1, 4, 16]):  # on validation, no grid point beats the chosen one
        chosen = float(prefix_errors(PrefixGD(tuned[k], "mean")(val, k), val)[-1].mean())
        for lr in grid:
            err = float(prefix_errors(PrefixGD(lr, "mean")(val, k), val)[-1].mean())
            assert chosen <= err or not np.isfinite(err)
        assert traj.states[j].shape == test.xs.shape


def test_lasso_matches_scikit_learn() -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(0)
    B, N, d = 3, 10, 6
    xs = torch.randn(B, N, d, generator=g, dtype=torch.float64)
    w = torch.randn(B, d, generator=g, dtype=torch.float64) * (torch.arange(d) < 2)  # 2-sparse
    p = Prompts(xs, torch.einsum("bnd,bd->bn", xs, w), w)
    alpha = 0.05
    ours = Lasso(alpha, steps=5000)(p).prediction().numpy()

    def fit(X: np.ndarray, y: np.ndarray) -> np.ndarray:
        model = sklearn.Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=200000)
        return model.fit(X, y).coef_

    np.testing.assert_allclose(ours, _per_prefix(p, fit), atol=1e-6)


def test_tune_alpha_picks_the_validation_minimum() -> None:
    p = _prompts(B=300, noise=1.0)
    grid = [0.01, 0.3, 1.0, 30.0]
    best, errors = tune_alpha(ridge, p, grid)
    assert best == grid[int(np.argmin(errors))]
    with pytest.raises(ValueError, match="empty"):
        tune_alpha(ridge, p, [])


def test_rank_deficient_prefixes_survive_a_large_next_point():
    """S_i must not carry the rounding of the next point's outer product (a cumsum − term would): with a
    small x_0 and a large x_1, prefix 1 is rank one and least squares and CG must solve it exactly."""
    g = torch.Generator().manual_seed(5)
    xs = torch.randn(50, 6, 4, generator=g, dtype=torch.float64)
    xs[:, 0] *= 0.1
    xs[:, 1:] *= 3.0
    w = torch.randn(50, 4, generator=g, dtype=torch.float64)
    p = Prompts(xs, torch.einsum("bnd,bd->bn", xs, w), w)
    ref = _per_prefix(p, lambda X, y: np.linalg.lstsq(X, y, rcond=None)[0])
    np.testing.assert_allclose(least_squares(p).prediction().numpy(), ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(PrefixCG()(p, 8).prediction().numpy()[:, :4], ref[:, :4], rtol=1e-6, atol=1e-6)
