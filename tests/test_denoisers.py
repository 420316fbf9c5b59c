"""Video denoisers: patching, the trajectory and its shared readout, errors, and a short training run."""

import pytest
import torch
import torch.nn.functional as F

from unrolled.models.denoisers import PatchDecoder, VideoDenoiser, clip_mse, patchify, unpatchify
from unrolled.models.unrolled_transformer import TransformerEncoder, UnrolledTransformer


@pytest.mark.parametrize(
    ("shape", "patch"),
    [((2, 8, 1, 32, 32), (2, 4, 4)), ((2, 4, 3, 16, 24), (1, 8, 8)), ((1, 3, 2, 5, 7), (1, 1, 1))],
)
def test_patchify_and_unpatchify_are_inverses(shape, patch):
    B, T, C, H, W = shape
    clip = torch.randn(shape)
    tokens = patchify(clip, patch)
    pt, ph, pw = patch
    assert tokens.shape == (B, (T // pt) * (H // ph) * (W // pw), pt * C * ph * pw)
    assert torch.equal(unpatchify(tokens, patch, (T, C, H, W)), clip)
    assert torch.equal(patchify(unpatchify(tokens, patch, (T, C, H, W)), patch), tokens)


def test_patch_tokens_are_ordered_frame_row_column_and_flatten_pt_c_ph_pw():
    clip = torch.randn(2, 4, 3, 8, 12)
    tokens = patchify(clip, (2, 4, 4))  # grid (2, 2, 3)
    for t, i, j in [(0, 0, 0), (1, 0, 2), (0, 1, 1), (1, 1, 2)]:
        n = (t * 2 + i) * 3 + j
        block = clip[:, 2 * t : 2 * t + 2, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]  # [B, pt, C, ph, pw]
        assert torch.equal(tokens[:, n], block.reshape(2, -1))


def test_patching_errors():
    with pytest.raises(ValueError, match="height H = 30 is not divisible"):
        patchify(torch.zeros(1, 8, 1, 30, 32), (2, 4, 4))
    with pytest.raises(ValueError, match="frames T = 5 is not divisible"):
        patchify(torch.zeros(1, 5, 1, 32, 32), (2, 4, 4))
    with pytest.raises(ValueError, match=r"clip \[B, T, C, H, W\]"):
        patchify(torch.zeros(8, 1, 32, 32), (2, 4, 4))
    with pytest.raises(ValueError, match="three positive ints"):
        patchify(torch.zeros(1, 8, 1, 32, 32), (2, 4))
    with pytest.raises(ValueError, match=r"must be \[B, 64, 32\]"):
        unpatchify(torch.zeros(1, 64, 16), (2, 4, 4), (8, 1, 16, 16))


def test_clip_mse_is_the_per_sample_mean():
    a, b = torch.randn(3, 4, 2, 5, 5), torch.randn(3, 4, 2, 5, 5)
    expected = torch.stack([((a[i] - b[i]) ** 2).mean() for i in range(3)])
    torch.testing.assert_close(clip_mse(a, b), expected)
    with pytest.raises(ValueError, match="shape"):
        clip_mse(a, b[:, :2])


def _tiny(backbone, **kw):
    args = dict(frames=4, channels=2, height=8, width=12, patch=(2, 4, 4), width_D=16, depth=3, heads=2)
    return VideoDenoiser(backbone, **(args | kw), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("backbone", ["ut", "vit"])
def test_trajectory_shapes_and_shared_readout(backbone):
    model = _tiny(backbone)
    assert isinstance(model.backbone, UnrolledTransformer if backbone == "ut" else TransformerEncoder)
    noisy, clean = torch.randn(5, 4, 2, 8, 12), torch.randn(5, 4, 2, 8, 12)
    traj = model(noisy)
    assert traj.depth == model.depth == 3
    assert len(traj.states) == 4
    for s in traj.states:
        assert s.shape == (5, model.num_tokens, 16) == (5, 12, 16)
    torch.testing.assert_close(traj.states[0], model.embed_clip(noisy))
    assert traj.readout is model.readout
    assert isinstance(traj.readout, PatchDecoder)
    assert traj.prediction().shape == noisy.shape
    assert traj.predictions().shape == (4, *noisy.shape)
    f = traj.layerwise_losses(clean, loss=clip_mse)
    assert f.shape == (4,)
    torch.testing.assert_close(f[-1], clip_mse(model.readout(traj.final), clean).mean())
    assert traj.layerwise_losses(clean, loss=clip_mse, reduction="none").shape == (4, 5)


def test_readout_is_layer_norm_linear_unpatchify():
    model = _tiny("ut")
    state = torch.randn(3, 12, 16)
    r = model.readout
    expected = unpatchify(
        r.linear(F.layer_norm(state, (16,), r.norm.weight, r.norm.bias)), (2, 4, 4), (4, 2, 8, 12)
    )
    torch.testing.assert_close(r(state), expected)
    assert isinstance(_tiny("ut", readout_norm=False).readout.norm, torch.nn.Identity)


@pytest.mark.parametrize("backbone", ["ut", "vit"])
def test_gradients_reach_every_parameter(backbone):
    model = _tiny(backbone).double()
    noisy = torch.randn(2, 4, 2, 8, 12, dtype=torch.float64)
    clean = torch.randn(2, 4, 2, 8, 12, dtype=torch.float64)
    model(noisy).layerwise_losses(clean, loss=clip_mse).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_denoiser_errors():
    model = _tiny("ut")
    with pytest.raises(ValueError, match="built for 2 channel"):
        model(torch.zeros(1, 4, 3, 8, 12))
    with pytest.raises(ValueError, match=r"built for clips \[B, 4, 2, 8, 12\]"):
        model(torch.zeros(1, 4, 2, 8, 16))
    with pytest.raises(ValueError, match=r"clip \[B, T, C, H, W\]"):
        model(torch.zeros(4, 2, 8, 12))
    with pytest.raises(ValueError, match="width W = 12 is not divisible by the patch size 8"):
        _tiny("ut", patch=(1, 8, 8))
    with pytest.raises(ValueError, match="backbone must be 'ut' or 'vit'"):
        _tiny("mlp")
    with pytest.raises(ValueError, match="heads must divide width"):
        _tiny("vit", heads=3)


def _smooth_clips(n, generator):
    """Smooth clips in [0, 1]: random 2×4×4 grids, trilinearly upsampled to [n, 4, 1, 16, 16]."""
    coarse = torch.rand(n, 1, 2, 4, 4, generator=generator)
    return F.interpolate(coarse, size=(4, 16, 16), mode="trilinear", align_corners=True).transpose(1, 2)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["ut", "vit"])
def test_short_training_reduces_the_final_layer_loss(backbone):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    clean = _smooth_clips(4, g)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g)
    model = VideoDenoiser(
        backbone, 4, 1, 16, 16, (1, 4, 4), 32, 2, 2, generator=torch.Generator().manual_seed(2)
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        loss = clip_mse(model(noisy).prediction(), clean).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = model(noisy).layerwise_losses(clean, loss=clip_mse)
    assert final[-1] < 0.1 * losses[0], (losses[0], final.tolist())
    assert final[-1] < clip_mse(noisy, clean).mean(), "should beat the noisy input itself"
