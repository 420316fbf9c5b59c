"""Intermediate readouts in Gram form, and their subsampled estimate, against the direct readout."""

import pytest
import torch

from unrolled.constrained import ConstrainedObjective, DescentConstraints, Multipliers
from unrolled.constrained.gram import AffineReadout
from unrolled.constrained.subsample import subsample
from unrolled.models.denoisers import VideoDenoiser, clip_mse
from unrolled.models.dust import DUSTDenoiser
from unrolled.trajectory import Trajectory

CLIP = (4, 1, 8, 8)


def _model(kind: str, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    if kind == "dust":
        model = DUSTDenoiser(*CLIP, patch=(2, 4, 4), codes=8, depth=3, heads=2, generator=g)
    else:
        model = VideoDenoiser(kind, *CLIP, patch=(2, 4, 4), width_D=8, depth=3, heads=2, generator=g)
    with torch.no_grad():  # move the readout away from its init (LN scale 1, shift 0, bias 0)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.to(dtype)


def _objective(per_sample_loss=None, fraction: float = 1.0, seed: int = 0, detach: bool = True):
    objective = ConstrainedObjective(
        DescentConstraints(0.2, detach_previous=detach), Multipliers(3, 1.0), per_sample_loss,
        readout_fraction=fraction, generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    objective.multipliers.value = torch.tensor([0.0, 0.7, 1.3], dtype=torch.float64)  # one layer graph-free
    return objective


def _grads(
    model: torch.nn.Module, objective: ConstrainedObjective, noisy, clean
) -> tuple[torch.Tensor, list]:
    model.zero_grad()
    losses = objective.layer_losses(model(noisy), clean)
    objective.lagrangian(losses)[0].backward()
    return losses.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("kind", ["ut", "vit", "dust"])
@pytest.mark.parametrize("detach", [True, False])
def test_gram_form_equals_the_direct_readout_with_gradients(kind, detach):
    """Layerwise losses and the Lagrangian's gradient, Gram form vs one direct readout per layer (float64)."""
    model = _model(kind)
    g = torch.Generator().manual_seed(1)
    noisy, clean = (torch.rand(5, *CLIP, generator=g, dtype=torch.float64) for _ in range(2))
    gram_losses, gram_grads = _grads(model, _objective(None, detach=detach), noisy, clean)
    direct_losses, direct_grads = _grads(model, _objective(clip_mse, detach=detach), noisy, clean)
    torch.testing.assert_close(gram_losses, direct_losses, rtol=1e-12, atol=1e-15)
    assert len(gram_grads) == len(direct_grads)
    for a, b in zip(gram_grads, direct_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_gram_form_in_float32_agrees_to_float_tolerance_on_a_fixed_batch():
    """At the benchmark's scale (a 64-wide UT, 8×32×32 clips) float32 keeps the losses and gradients."""
    g = torch.Generator().manual_seed(0)
    model = VideoDenoiser("ut", 8, 1, 32, 32, patch=(2, 8, 8), width_D=64, depth=3, heads=4, generator=g)
    noisy, clean = torch.rand(8, 8, 1, 32, 32, generator=g), torch.rand(8, 8, 1, 32, 32, generator=g)
    gram_losses, gram_grads = _grads(model, _objective(None), noisy, clean)
    direct_losses, direct_grads = _grads(model, _objective(clip_mse), noisy, clean)
    torch.testing.assert_close(gram_losses, direct_losses, rtol=1e-5, atol=0)
    for a, b in zip(gram_grads, direct_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * float(b.abs().max()))


def test_affine_readout_without_a_norm_and_bias_matches_a_plain_linear_map():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    states = [torch.randn(3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    target = torch.randn(3, 4, 7, generator=g, dtype=torch.float64)
    readout = AffineReadout(weight, None, targets=lambda t: t)
    gram = readout.mse(states, target)
    direct = torch.stack([((s @ weight.T - target) ** 2).mean(dim=(1, 2)) for s in states])
    torch.testing.assert_close(gram, direct, rtol=1e-12, atol=1e-15)
    w = torch.randn(2, 3, generator=g, dtype=torch.float64)
    a = torch.autograd.grad((gram * w).sum(), [weight, *states])
    b = torch.autograd.grad((direct * w).sum(), [weight, *states])
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="do not match the readout"):
        readout.mse([torch.randn(3, 4, 6, dtype=torch.float64)], target)


def test_gram_form_keeps_no_prediction_sized_tensor_for_the_backward():
    """Memory: beyond ERM's graph, the constrained objective saves M [B, T, D], the patchified target
    [B, T, P] (for the readout weight's gradient) and per-token statistics: nothing per layer of either size."""
    model = _model("ut", torch.float32)
    noisy, clean = torch.rand(4, *CLIP), torch.rand(4, *CLIP)

    def saved_bytes(objective) -> int:
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            objective.loss(model(noisy), clean)
        return sum(seen.values())

    from unrolled.constrained import Objective

    erm, constrained = saved_bytes(Objective(None)), saved_bytes(_objective(None))
    tokens = 4 * model.num_tokens
    patch = model.readout.linear.out_features
    budget = (
        tokens * (model.width_D + patch + 2 * 3) * 4 + 2048
    )  # M, target, mean and 1/std per layer, G etc.
    assert 0 < constrained - erm <= budget, (erm, constrained, budget)


def test_the_subsampled_estimate_is_unbiased_and_the_last_layer_exact():
    model = _model("ut")
    noisy, clean = torch.rand(6, *CLIP, dtype=torch.float64), torch.rand(6, *CLIP, dtype=torch.float64)
    with torch.no_grad():
        trajectory = model(noisy)
        exact = _objective().layer_losses(trajectory, clean)
        objective = _objective(fraction=0.5, seed=1)
        draws = torch.stack([objective.layer_losses(trajectory, clean) for _ in range(3000)])
    assert torch.equal(draws[:, -1], exact[-1].expand(3000))  # f_L in full, every time
    spread = draws[:, :-1].std(dim=0) / 3000**0.5
    assert ((draws[:, :-1].mean(dim=0) - exact[:-1]).abs() < 4 * spread).all()
    assert (draws[:, :-1].std(dim=0) > 0).all()  # and it is a random estimate


def test_the_subsampled_gradient_is_the_gradient_on_the_drawn_samples():
    model = _model("vit")
    noisy, clean = torch.rand(6, *CLIP, dtype=torch.float64), torch.rand(6, *CLIP, dtype=torch.float64)
    objective = _objective(fraction=0.5, seed=3)
    pick = subsample(6, 0.5, torch.Generator().manual_seed(3))
    _, sub = _grads(model, objective, noisy, clean)
    # by hand: intermediate layers read on the drawn samples only, the last on all of them
    model.zero_grad()
    trajectory = model(noisy)
    layers = [clip_mse(trajectory.readout(s[pick]), clean[pick]).mean() for s in trajectory.states[:-1]]
    layers.append(clip_mse(trajectory.prediction(), clean).mean())
    objective.lagrangian(torch.stack(layers))[0].backward()
    for a, p in zip(sub, [p for p in model.parameters() if p.grad is not None], strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-9, atol=1e-12)


def test_subset_draws_resume_from_the_objective_state():
    model = _model("ut")
    noisy, clean = torch.rand(6, *CLIP, dtype=torch.float64), torch.rand(6, *CLIP, dtype=torch.float64)
    with torch.no_grad():
        trajectory = model(noisy)
        first = _objective(fraction=0.5, seed=2)
        first.layer_losses(trajectory, clean)
        state = first.state_dict()
        expected = first.layer_losses(trajectory, clean)
        resumed = _objective(fraction=0.5, seed=99)
        resumed.load_state_dict(state)
        torch.testing.assert_close(resumed.layer_losses(trajectory, clean), expected, rtol=0, atol=0)


def test_subsample_draws_each_item_with_the_fraction_as_probability():
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(10)
    for _ in range(4000):
        counts[subsample(10, 0.3, g)] += 1
    torch.testing.assert_close(counts / 4000, torch.full((10,), 0.3), atol=0.03, rtol=0)
    assert subsample(10, 1.0) is None
    with pytest.raises(ValueError, match="fraction"):
        subsample(10, 0.0)


def test_subsampling_is_refused_without_an_affine_readout():
    states = tuple(torch.randn(4, 3, requires_grad=True) for _ in range(4))
    trajectory = Trajectory(states, lambda s: s)
    with pytest.raises(ValueError, match="affine readout"):
        _objective(fraction=0.5).layer_losses(trajectory, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="readout_fraction"):
        _objective(fraction=0.0)
