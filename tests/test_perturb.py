"""Perturbations: the noise families' statistics, γ = 0 exactness, embedding hooks and sweeps."""

import math

import pytest
import torch
from torch import nn

from unrolled.perturb import EmbeddingNoise, Perturbation, robustness_sweep


def test_gaussian_noise_has_the_asked_mean_and_scale():
    x = torch.zeros(200, 50, 20)
    g = torch.Generator().manual_seed(0)
    eps = Perturbation("gaussian", gamma=0.5, mean=0.2, sigma=3.0).apply(x, g)
    assert eps.mean().item() == pytest.approx(0.2, abs=0.01)
    assert eps.std().item() == pytest.approx(1.5, rel=0.01)
    # σ defaults to the batch's own standard deviation
    data = torch.randn(100, 10, generator=g) * 4.0
    noise = Perturbation("gaussian", gamma=1.0).noise(data, g)
    assert noise.std().item() == pytest.approx(data.std().item(), rel=0.03)


def test_uniform_noise_uses_neftune_scaling():
    x = torch.zeros(64, 32, 16)  # N = 32 tokens of width D = 16
    eps = Perturbation("uniform", gamma=5.0).apply(x, torch.Generator().manual_seed(1))
    bound = 5.0 / math.sqrt(32 * 16)
    assert eps.abs().max().item() <= bound
    assert eps.abs().max().item() > 0.99 * bound
    assert eps.var().item() == pytest.approx(bound**2 / 3, rel=0.02)  # variance of U(−b, b)


def test_gamma_zero_is_bit_exact_and_errors():
    x = torch.randn(3, 4)
    assert Perturbation("gaussian", 0.0).apply(x) is x
    assert Perturbation("uniform", 0.0).apply(x) is x
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        Perturbation("gaussian", -1.0)
    with pytest.raises(ValueError, match="noise kind"):
        Perturbation("laplace", 1.0)  # type: ignore[arg-type]


def test_embedding_noise_respects_train_and_test_time():
    emb = nn.Embedding(10, 8)
    ids = torch.arange(10).unsqueeze(0)
    clean = emb(ids).detach()
    noise = Perturbation("uniform", gamma=10.0)
    with EmbeddingNoise(emb, noise, when="train"):
        emb.train()
        assert not torch.allclose(emb(ids), clean)
        emb.eval()
        assert torch.equal(emb(ids), clean)  # NEFTune: no noise at evaluation
    with EmbeddingNoise(emb, noise, when="test"):
        emb.train()
        assert torch.equal(emb(ids), clean)
        emb.eval()
        assert not torch.allclose(emb(ids), clean)
    emb.eval()
    assert torch.equal(emb(ids), clean)  # hooks removed


def test_sweep_at_zero_reproduces_the_clean_metric():
    torch.manual_seed(0)
    model = nn.Linear(5, 1)
    x, y = torch.randn(100, 5), torch.randn(100, 1)

    def metric(gamma: float) -> float:
        g = torch.Generator().manual_seed(123)
        noisy = Perturbation("gaussian", gamma).apply(x, g)
        with torch.no_grad():
            return float(((model(noisy) - y) ** 2).mean())

    with torch.no_grad():
        clean = float(((model(x) - y) ** 2).mean())
    sweep = robustness_sweep(metric, [0.0, 0.5, 1.0])
    assert sweep[0.0] == clean
    assert sweep[1.0] > sweep[0.0]
    with pytest.raises(ValueError, match="empty"):
        robustness_sweep(metric, [])
