"""DUST against direct computations: soft-thresholding's closed form, and with θ = 0 and no attention, the
unfolded least-squares gradient steps (and, run long, the least-squares solution)."""

import pytest
import torch

from unrolled.models.denoisers import patchify
from unrolled.models.dust import DUSTDenoiser, soft_threshold
from unrolled.perturb import LayerNoise

CLIP = (4, 1, 8, 8)  # T, C, H, W


def test_soft_threshold_is_the_prox_of_the_l1_norm():
    v = torch.linspace(-2, 2, 41, dtype=torch.float64)
    theta = 0.3
    grid = torch.linspace(-3, 3, 60001, dtype=torch.float64)  # brute-force argmin_u ½(u − v)² + θ|u|
    objective = 0.5 * (grid[None, :] - v[:, None]) ** 2 + theta * grid.abs()[None, :]
    brute = grid[objective.argmin(dim=1)]
    torch.testing.assert_close(soft_threshold(v, theta), brute, atol=1e-4, rtol=0)
    torch.testing.assert_close(soft_threshold(v, theta), torch.nn.functional.softshrink(v, theta))
    per_entry = torch.tensor([0.0, 0.5])  # one θ per code entry broadcasts over the last dimension
    torch.testing.assert_close(
        soft_threshold(torch.tensor([[1.0, 1.0]]), per_entry), torch.tensor([[1.0, 0.5]])
    )


def _plain(codes: int, depth: int, patch=(1, 4, 4)) -> DUSTDenoiser:
    model = DUSTDenoiser(*CLIP, patch=patch, codes=codes, depth=depth, attention=False,
                         generator=torch.Generator().manual_seed(0)).double()  # fmt: skip
    with torch.no_grad():
        for layer in model.layers:
            layer.threshold.zero_()
    return model


def test_without_thresholds_and_attention_dust_is_unfolded_least_squares_gradient_descent():
    model = _plain(codes=12, depth=5)
    with torch.no_grad():  # distinct steps per layer, so the check sees each layer's own η_l
        for l, layer in enumerate(model.layers):
            layer.step.mul_(1.0 + 0.1 * l)
    clip = torch.rand(3, *CLIP, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = patchify(clip, model.patch).reshape(-1, model.patch_dim)  # every patch is its own LS problem
    D, b = model.dictionary.weight.detach(), model.dictionary.bias.detach()
    s = torch.zeros(y.shape[0], model.codes, dtype=torch.float64)
    expected = [s]
    for layer in model.layers:  # s ← s − η ∇_s ½‖y − D s − b‖² = s + η Dᵀ(y − D s − b)
        s = s + float(layer.step.detach()) * (y - b - s @ D.T) @ D
        expected.append(s)
    trajectory = model(clip)
    assert trajectory.depth == 5
    for got, want in zip(trajectory.states, expected, strict=True):
        torch.testing.assert_close(got.reshape(-1, model.codes), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(trajectory.prediction(), model.readout(trajectory.final))


def test_many_plain_layers_converge_to_the_least_squares_fit():
    model = _plain(codes=6, depth=400)  # undercomplete D (16 × 6): a unique LS solution
    clip = torch.rand(2, *CLIP, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = patchify(clip, model.patch).reshape(-1, model.patch_dim)
    D, b = model.dictionary.weight.detach(), model.dictionary.bias.detach()
    lstsq = torch.linalg.lstsq(D, (y - b).T).solution.T
    with torch.no_grad():
        final = model(clip).final.reshape(-1, model.codes)
    torch.testing.assert_close(final, lstsq, rtol=1e-6, atol=1e-6)


def test_attention_starts_off_and_mixes_only_frames_of_one_location():
    model = DUSTDenoiser(*CLIP, patch=(1, 4, 4), codes=8, depth=2, heads=2,
                         generator=torch.Generator().manual_seed(0)).double()  # fmt: skip
    plain = _plain(codes=8, depth=2)
    plain.load_state_dict(model.state_dict(), strict=False)
    clip = torch.rand(2, *CLIP, dtype=torch.float64)
    with torch.no_grad():
        for layer in plain.layers:
            layer.threshold.copy_(model.layers[0].threshold)
        torch.testing.assert_close(model(clip).final, plain(clip).final)  # β = 0 at init: plain ISTA
        attn = model.layers[0].attention
        s = torch.randn(1, 4, 4, 8, dtype=torch.float64)  # [B, T', P, K]
        s2 = s.clone()
        s2[:, :, 1:] = torch.randn_like(s2[:, :, 1:])  # change every other location
        torch.testing.assert_close(attn(s)[:, :, 0], attn(s2)[:, :, 0])  # location 0 sees only itself


def test_dust_trains_under_layer_noise_which_is_off_in_eval():
    model = DUSTDenoiser(*CLIP, patch=(1, 4, 4), codes=8, depth=3, generator=torch.Generator().manual_seed(0))
    clip = torch.rand(2, *CLIP)
    model.eval()
    clean = [s.clone() for s in model(clip).states]
    with LayerNoise(model.layers, scale=0.5, decay=0.5, generator=torch.Generator().manual_seed(0)) as noise:
        assert noise.scales == pytest.approx([0.5, 0.25])  # layers 1 and 2; never the last
        with torch.no_grad():
            for got, want in zip(model(clip).states, clean, strict=True):
                torch.testing.assert_close(got, want)  # eval mode: no noise
        model.train()
        noisy = model(clip).states
        assert not torch.equal(noisy[1], clean[1])
        noisy[-1].pow(2).mean().backward()  # gradients flow through the perturbed states
        assert model.dictionary.weight.grad is not None
    with torch.no_grad():
        for got, want in zip(model(clip).states, clean, strict=True):  # hooks removed: training mode, clean
            torch.testing.assert_close(got, want)


def test_layer_noise_has_the_decaying_relative_scale():
    layers = torch.nn.ModuleList(torch.nn.Identity() for _ in range(4))
    x = torch.randn(4000, 50) * 3.0
    with LayerNoise(layers, scale=0.2, decay=0.5, generator=torch.Generator().manual_seed(0)):
        for l, layer in enumerate(layers[:-1]):
            eps = layer(x) - x
            assert float(eps.std()) == pytest.approx(0.2 * 0.5**l * float(x.std()), rel=0.02)
        assert torch.equal(layers[-1](x), x)
    with pytest.raises(ValueError, match="decay"):
        LayerNoise(layers, scale=0.1, decay=0.0)


def test_dust_rejects_clips_of_another_size():
    model = DUSTDenoiser(*CLIP, patch=(1, 4, 4), codes=8, depth=1)
    with pytest.raises(ValueError, match=r"built for clips \[B, 4, 1, 8, 8\]"):
        model(torch.rand(1, 4, 1, 16, 16))
    with pytest.raises(ValueError, match="heads must divide"):
        DUSTDenoiser(*CLIP, patch=(1, 4, 4), codes=6, depth=1, heads=4)
