"""Memformers against second implementations: heavy-ball momentum, tied LFOMs, the linear transformer."""

import math

import pytest
import torch

from tests.conftest import make_batch
from unrolled.experiments.regression import LearnedMethod, build_model
from unrolled.models import CGDMemformer, LFOMMemformer, LinearTransformer, RecurrentMemformer
from unrolled.solvers import LFOM, HeavyBall


def test_untrained_cgd_memformer_is_the_linear_transformer(batch64):
    g = torch.Generator().manual_seed(3)
    mem = CGDMemformer(5, 20, 3, A="full", generator=g).double()
    lt = LinearTransformer(5, 20, 3, A="full", generator=torch.Generator().manual_seed(3)).double()
    torch.testing.assert_close(mem(batch64).predictions(), lt(batch64).predictions())


def test_cgd_memformer_with_constant_coefficients_is_heavy_ball():
    """R_l = attn + γ R_{l−1}, Z += α R with A = a I: heavy ball with step α·a and momentum γ (mean objective)."""
    batch = make_batch(100, seed=4)
    L, a, alpha, gamma = 5, 0.4, 0.8, 0.6
    mem = CGDMemformer(5, 20, L, A="scalar").double()
    with torch.no_grad():
        for layer in mem.layers:
            layer.a.fill_(a)
        mem.alpha.fill_(alpha)
        mem.gamma.fill_(gamma)
    hb = HeavyBall(alpha * a, gamma, objective="mean")(batch, L)
    torch.testing.assert_close(mem(batch).predictions(), hb.predictions(), rtol=1e-10, atol=1e-12)


def test_lfom_memformer_with_uniform_masks_is_a_tied_lfom():
    """Γ_j = c_j·1 and A_l = a I: w_{l+1} = w_l − a Σ_{j≤l} c_j ∇R(w_j), the tied LFOM solver with Γ_j = a c_j."""
    batch = make_batch(100, seed=5)
    L, a, c = 4, 0.5, [1.0, 0.6, -0.2, 0.9]
    mem = LFOMMemformer(5, 20, L, A="scalar").double()
    with torch.no_grad():
        for layer in mem.layers:
            layer.a.fill_(a)
        for l in range(L):
            mem.gamma[l].fill_(c[l])
    gamma = torch.tensor([[a * cj] * 5 for cj in c], dtype=torch.float64)
    ref = LFOM(gamma, objective="mean")(batch, L)
    torch.testing.assert_close(mem(batch).predictions(), ref.predictions(), rtol=1e-10, atol=1e-12)


def test_lfom_masks_are_per_token_weights():
    """A mask that zeroes one context token's label slot removes that token from later gradients."""
    batch = make_batch(16, seed=6)
    mem = LFOMMemformer(5, 20, 2, A="scalar", gamma_init=1.0).double()
    with torch.no_grad():
        for layer in mem.layers:
            layer.a.fill_(0.5)
        mem.gamma[0, 3, :] = 0.0  # token 3 keeps its label after layer 0
    traj = mem(batch)
    torch.testing.assert_close(traj.states[1][:, 3], traj.states[0][:, 3])
    assert not torch.allclose(traj.states[1][:, 4], traj.states[0][:, 4])


def test_lfom_plus_with_zero_memory_is_the_linear_transformer(batch64):
    plus = LFOMMemformer(
        5, 20, 3, A="full", include_current=False, generator=torch.Generator().manual_seed(8)
    )
    lt = LinearTransformer(5, 20, 3, A="full", generator=torch.Generator().manual_seed(8))
    plus, lt = plus.double(), lt.double()
    torch.testing.assert_close(plus(batch64).predictions(), lt(batch64).predictions())
    # with Γ = 1 every layer adds the sum of all earlier updates: Z_{l+1} = Z_l + R_l + Σ_{j<l} R_j
    with torch.no_grad():
        plus.gamma.fill_(1.0)
    traj = plus(batch64)
    Z = batch64.tokens()
    total = torch.zeros_like(Z)
    for l, layer in enumerate(plus.layers):
        R = layer(Z)
        Z = Z + R + total
        total = total + R
        torch.testing.assert_close(traj.states[l + 1], Z)


def test_recurrent_memformer_untrained_is_multihead_lt_and_recurrence_holds(batch64):
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    rec = RecurrentMemformer(5, 20, 3, heads=5, A="scalar", generator=g1).double()
    lt = LinearTransformer(5, 20, 3, heads=5, A="scalar", generator=g2).double()
    torch.testing.assert_close(rec(batch64).predictions(), lt(batch64).predictions())
    with torch.no_grad():
        rec.alpha.copy_(torch.tensor([0.9, 1.1, 0.7]))
        rec.beta.copy_(torch.tensor([0.0, 0.5, 0.3]))
        rec.gamma.copy_(torch.tensor([1.0, 0.8, 1.2]))
    traj = rec(batch64)
    Z, R = batch64.tokens(), torch.zeros_like(batch64.tokens())
    for l, layer in enumerate(rec.layers):
        R = rec.beta[l] * R + rec.gamma[l] * layer(Z)
        Z = Z + rec.alpha[l] * R
        torch.testing.assert_close(traj.states[l + 1], Z)
    with pytest.raises(ValueError, match="A='scalar'"):
        RecurrentMemformer(5, 20, 2, A="full")


def test_ahn_one_layer_optimum_closed_form():
    """Isotropic, one layer, B = 0: the best A is a I with a = n/(n+d+1), loss d(d+1)/(n+d+1) (Ahn et al. 2023)."""
    d, n = 5, 20
    a_star = n / (n + d + 1)
    batch = make_batch(100_000, seed=11, covariance="isotropic")
    model = LinearTransformer(d, n, 1, A="scalar").double()
    losses = {}
    for a in (a_star - 0.15, a_star, a_star + 0.15):
        with torch.no_grad():
            model.layers[0].a.fill_(a)
        losses[a] = model(batch).layerwise_losses(batch.y_query)[-1].item()
    expected = d * (d + 1) / (n + d + 1)
    assert losses[a_star] == pytest.approx(expected, rel=0.03)
    assert losses[a_star] < min(losses[a_star - 0.15], losses[a_star + 0.15])
    assert math.log(expected) == pytest.approx(0.143, abs=0.01)


@pytest.mark.parametrize(
    "kind",
    ["linear_transformer", "memformer_cgd", "memformer_lfom", "memformer_lfom_plus", "memformer_recurrent"],
)
def test_build_model_kinds_run_and_backprop(kind, batch64):
    method = LearnedMethod(
        name=kind, kind=kind, A="scalar" if kind == "memformer_recurrent" else "full", heads=2
    )
    model = build_model(method, 5, 20, 3, torch.Generator().manual_seed(0)).double()
    traj = model(batch64)
    assert traj.depth == 3 and traj.final.shape == (64, 21, 6)
    traj.layerwise_losses(batch64.y_query)[-1].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("kind", ["lt", "cgd", "lfom", "lfom_plus", "recurrent"])
def test_label_only_forward_equals_the_full_token_path(kind):
    """With B = 0 the models run on the label column alone; stepping the full tokens must agree."""
    kinds = {
        "lt": "linear_transformer",
        "cgd": "memformer_cgd",
        "lfom": "memformer_lfom",
        "lfom_plus": "memformer_lfom_plus",
        "recurrent": "memformer_recurrent",
    }
    A = "scalar" if kind == "recurrent" else "full"
    method = LearnedMethod(name="m", kind=kinds[kind], A=A, heads=2)
    model = build_model(method, 5, 20, 3, torch.Generator().manual_seed(1)).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in ("gamma", "alpha", "beta"):
                p.add_(0.3 * torch.rand(p.shape, generator=torch.Generator().manual_seed(2), dtype=p.dtype))
    assert model.label_only
    batch = make_batch(16)
    fast = model(batch)
    Zt = batch.tokens().permute(1, 2, 0).contiguous()
    memory = model.init_memory(Zt)
    for l in range(model.depth):
        Zt, memory = model.step(l, Zt, memory)
        torch.testing.assert_close(fast.states[l + 1], Zt.permute(2, 0, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["lt", "cgd", "lfom", "lfom_plus", "recurrent"])
def test_the_compiled_layout_gives_the_eager_states_and_gradients(kind, monkeypatch):
    """Under ``torch.compile`` a label-only model runs batch-first by batched products
    (``label_delta_batch_first``); run here eagerly in float64 against the batch-last elementwise path."""
    kinds = {
        "lt": "linear_transformer",
        "cgd": "memformer_cgd",
        "lfom": "memformer_lfom",
        "lfom_plus": "memformer_lfom_plus",
        "recurrent": "memformer_recurrent",
    }
    A = "scalar" if kind == "recurrent" else "full"
    method = LearnedMethod(name="m", kind=kinds[kind], A=A, heads=2)
    model = build_model(method, 5, 20, 3, torch.Generator().manual_seed(1)).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in ("gamma", "alpha", "beta"):
                p.add_(0.3 * torch.rand(p.shape, generator=torch.Generator().manual_seed(2), dtype=p.dtype))
    batch = make_batch(16)

    def run() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        traj = model(batch)
        traj.layerwise_losses(batch.y_query).sum().backward()
        return [s.detach() for s in traj.states], [p.grad.clone() for p in model.parameters()]

    eager_states, eager_grads = run()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    states, grads = run()
    for a, b in zip(states, eager_states, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
