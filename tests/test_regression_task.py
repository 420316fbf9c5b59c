"""The in-context regression task: layout, covariance families, scaling, mixtures, seeding."""

import math

import pytest
import torch

from tests.conftest import make_batch
from unrolled.tasks import RegressionTask, random_rotation
from unrolled.tasks.regression import MixtureComponent, RegressionConfig


def test_token_layout_query_last_with_zero_label(batch64):
    Z = batch64.tokens()
    assert Z.shape == (64, 21, 6)
    torch.testing.assert_close(Z[:, :20, :5], batch64.X)
    torch.testing.assert_close(Z[:, :20, 5], batch64.y)
    torch.testing.assert_close(Z[:, 20, :5], batch64.x_query)
    assert torch.all(Z[:, 20, 5] == 0)
    # noiseless labels are exactly <x, w*>
    torch.testing.assert_close(batch64.y, torch.einsum("bnd,bd->bn", batch64.X, batch64.w_star))
    torch.testing.assert_close(batch64.y_query, (batch64.x_query * batch64.w_star).sum(-1))


def test_seeding_is_reproducible_and_seeds_differ():
    a, b = make_batch(seed=3), make_batch(seed=3)
    torch.testing.assert_close(a.X, b.X)
    assert not torch.allclose(make_batch(seed=4).X, a.X)
    # each seed has its own rotation U
    assert not torch.allclose(random_rotation(5, 1), random_rotation(5, 2))
    U = random_rotation(5, 1)
    torch.testing.assert_close(U @ U.T, torch.eye(5, dtype=torch.float64))


@pytest.mark.parametrize("covariance", ["rotated", "rotated_text"])
def test_rotated_covariances_match_their_definitions(covariance):
    task = RegressionTask(RegressionConfig(covariance=covariance), seed=7)
    batch = task.sample(20000, torch.Generator().manual_seed(0), dtype=torch.float64)
    x = batch.X.reshape(-1, 5)
    emp = x.T @ x / x.shape[0]
    D = torch.tensor([1.0, 1.0, 0.5, 0.25, 1.0], dtype=torch.float64)
    from unrolled.seeding import derive_seed

    U = random_rotation(5, derive_seed(7, "rotation"))
    if covariance == "rotated":  # x = U D g: Σ_x = U D² Uᵀ, w* ~ N(0, U D⁻² Uᵀ)
        sigma = U @ torch.diag(D**2) @ U.T
        sigma_w = U @ torch.diag(D**-2) @ U.T
    else:  # Σ = Uᵀ D U (the paper's text), w* ~ N(0, Σ⁻¹)
        sigma = U.T @ torch.diag(D) @ U
        sigma_w = torch.linalg.inv(sigma)
    torch.testing.assert_close(emp, sigma, atol=0.03, rtol=0.03)
    torch.testing.assert_close(task.input_second_moment(), sigma)
    w = batch.w_star
    torch.testing.assert_close(w.T @ w / w.shape[0], sigma_w, atol=0.6, rtol=0.05)
    # E[y²] = tr(Σ_x Σ_w) = d for the published family
    if covariance == "rotated":
        assert abs(batch.y.pow(2).mean().item() - 5) < 0.15


def test_variance_scale_gives_zero_predictor_loss_d_sigma4():
    cfg = RegressionConfig(covariance="isotropic", variance=2.5)
    task = RegressionTask(cfg, seed=0)
    batch = task.sample(40000, torch.Generator().manual_seed(1), dtype=torch.float64)
    assert task.zero_predictor_loss() == pytest.approx(5 * 2.5**2)
    assert batch.y_query.pow(2).mean().item() == pytest.approx(5 * 2.5**2, rel=0.05)
    assert batch.X.var().item() == pytest.approx(2.5, rel=0.02)


def test_mixture_components_and_label_noise():
    comps = (
        MixtureComponent(mean=2.5, variance=0.5, weight=0.2),
        MixtureComponent(mean=0.0, variance=1.0, weight=0.3),
        MixtureComponent(mean=-1.0, variance=2.0, weight=0.5),
    )
    cfg = RegressionConfig(d=1, covariance="mixture", mixture=comps, label_noise=0.3)
    task = RegressionTask(cfg, seed=0)
    batch = task.sample(20000, torch.Generator().manual_seed(2), dtype=torch.float64)
    x = batch.X.flatten()
    mean = 0.2 * 2.5 + 0.5 * -1.0
    second = sum(c.weight * (c.mean**2 + c.variance) for c in comps)
    assert x.mean().item() == pytest.approx(mean, abs=0.03)
    assert x.pow(2).mean().item() == pytest.approx(second, rel=0.03)
    torch.testing.assert_close(task.input_second_moment(), torch.tensor([[second]], dtype=torch.float64))
    residual = batch.y - torch.einsum("bnd,bd->bn", batch.X, batch.w_star)
    assert residual.std().item() == pytest.approx(0.3, rel=0.03)
    zero = batch.y_query.pow(2).mean().item()
    assert zero == pytest.approx(task.zero_predictor_loss(), rel=0.1)


def test_sample_rejects_empty_batch():
    with pytest.raises(ValueError, match="batch_size"):
        RegressionTask(RegressionConfig(), 0).sample(0)


def test_batch_dtype_and_device_roundtrip(batch64):
    b32 = batch64.to(dtype=torch.float32)
    assert b32.X.dtype == torch.float32 and b32.tokens().dtype == torch.float32
    assert math.isclose(float(b32.X[0, 0, 0]), float(batch64.X[0, 0, 0]), rel_tol=1e-6)
