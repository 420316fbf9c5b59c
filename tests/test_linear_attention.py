"""Linear attention: the re-associated form equals the direct one; B = 0 layers are (preconditioned) GD."""

import pytest
import torch

from tests.conftest import make_batch
from unrolled.models import LinearAttention, LinearTransformer
from unrolled.solvers import GradientDescent, LeastSquares


def _pair(**kw):
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    direct = LinearAttention(5, attention="direct", generator=g1, init_std=0.3, **kw).double()
    fast = LinearAttention(5, attention="reassociated", generator=g2, init_std=0.3, **kw).double()
    return direct, fast


@pytest.mark.parametrize("A", ["full", "scalar", "fixed"])
@pytest.mark.parametrize("B", ["zero", "free"])
@pytest.mark.parametrize("heads", [1, 3])
def test_reassociated_equals_direct(A, B, heads, batch64):
    direct, fast = _pair(A=A, B=B, heads=heads)
    Z = batch64.tokens()
    torch.testing.assert_close(fast(Z), direct(Z), rtol=1e-10, atol=1e-12)
    Zt = Z.permute(1, 2, 0).contiguous()
    torch.testing.assert_close(
        fast.forward_batch_last(Zt), direct.forward_batch_last(Zt), rtol=1e-10, atol=1e-12
    )


def test_reassociated_equals_direct_in_gradients(batch64):
    direct, fast = _pair(A="full", B="free", heads=2)
    Z = batch64.tokens()
    (direct(Z)[:, -1, -1] ** 2).sum().backward()
    (fast(Z)[:, -1, -1] ** 2).sum().backward()
    torch.testing.assert_close(fast.A.grad, direct.A.grad)
    torch.testing.assert_close(fast.B.grad, direct.B.grad)


def test_paper_column_form_matches(batch64):
    """Ahn et al.'s Attn = P Z M Zᵀ Q Z in columns, with Q = −[[A_paper,0],[0,0]] and our A = A_paperᵀ."""
    layer = LinearAttention(
        5, A="full", B="free", init_std=0.4, generator=torch.Generator().manual_seed(2)
    ).double()
    A_ours, B = layer.A[0].detach(), layer.B[0].detach()
    A_paper = A_ours.T
    Zc = batch64.tokens()[0].T  # (d+1) × (n+1)
    n = Zc.shape[1] - 1
    P = torch.zeros(6, 6, dtype=torch.float64)
    P[:5, :5], P[5, 5] = B, 1.0
    Q = torch.zeros(6, 6, dtype=torch.float64)
    Q[:5, :5] = -A_paper
    M = torch.diag(torch.tensor([1.0] * n + [0.0], dtype=torch.float64))
    paper = P @ Zc @ M @ Zc.T @ Q @ Zc / n
    torch.testing.assert_close(layer(batch64.tokens())[0].T, paper)


def test_scalar_layers_are_gradient_descent():
    """Ahn et al. Lemma 1: B_l = 0, A_l = η_l I gives GD's prediction after every layer."""
    batch = make_batch(128, seed=1)
    L, etas = 4, [0.3, 0.7, 0.5, 0.9]
    model = LinearTransformer(5, 20, L, A="scalar").double()
    with torch.no_grad():
        for layer, eta in zip(model.layers, etas, strict=True):
            layer.a.fill_(eta)
    traj = model(batch)
    gd = GradientDescent(etas, objective="mean")(batch, L)
    torch.testing.assert_close(traj.predictions(), gd.predictions(), rtol=1e-10, atol=1e-12)
    # context label slots hold the residuals y_i − <x_i, w_l>
    for l in range(L + 1):
        resid = batch.y - torch.einsum("bnd,bd->bn", batch.X, gd.states[l])
        torch.testing.assert_close(traj.states[l][:, :20, 5], resid)


def test_full_preconditioners_are_preconditioned_gd():
    batch = make_batch(128, seed=2)
    L = 3
    model = LinearTransformer(
        5, 20, L, A="full", init_std=0.2, generator=torch.Generator().manual_seed(0)
    ).double()
    traj = model(batch)
    problem = LeastSquares.from_batch(batch, "mean")
    w = torch.zeros(128, 5, dtype=torch.float64)
    for l, layer in enumerate(model.layers):
        w = w - problem.grad(w) @ layer.A[0].detach().T
        torch.testing.assert_close(traj.prediction(l + 1), (w * batch.x_query).sum(-1))
    # the same with the library's preconditioned GD, one layer
    one = LinearTransformer(
        5, 20, 1, A="full", init_std=0.2, generator=torch.Generator().manual_seed(0)
    ).double()
    gd = GradientDescent(1.0, preconditioner=one.layers[0].A[0].detach(), objective="mean")(batch, 1)
    torch.testing.assert_close(one(batch).prediction(), gd.prediction())


def test_heads_with_zero_B_sum_their_preconditioners(batch64):
    multi = LinearAttention(
        5, heads=3, A="full", init_std=0.3, generator=torch.Generator().manual_seed(1)
    ).double()
    single = LinearAttention(5, heads=1, A="full").double()
    with torch.no_grad():
        single.A.copy_(multi.A.sum(0, keepdim=True))
    Z = batch64.tokens()
    torch.testing.assert_close(multi(Z), single(Z))


def test_bad_shapes_are_errors():
    layer = LinearAttention(5)
    with pytest.raises(ValueError, match="d\\+1 = 6"):
        layer(torch.zeros(2, 21, 5))
    with pytest.raises(ValueError, match="at least one context token"):
        layer(torch.zeros(2, 1, 6))
    with pytest.raises(ValueError, match="A must be"):
        LinearAttention(5, A="diag")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attention must be"):
        LinearAttention(5, attention="fast")  # type: ignore[arg-type]
    model = LinearTransformer(5, 20, 2)
    with pytest.raises(ValueError, match="built for n=20"):
        model(torch.zeros(2, 11, 6))
    with pytest.raises(ValueError, match="at least one layer"):
        LinearTransformer(5, 20, 0)


@pytest.mark.parametrize("d", [2, 5])
@pytest.mark.parametrize("kind", ["transformer", "lfom", "lfom_no_current", "cgd", "mixture"])
def test_models_with_free_B_equal_the_direct_form_in_either_layout(kind, d):
    """GD++ runs batch-first by batched products from d = SMALL_D on and elementwise batch-last below it
    (:attr:`LinearTransformer.batch_first`); either way every model gives the direct form's trajectory and
    gradients, Memformer masks and mixtures of a B-free and a B = 0 expert included."""
    from unrolled.models import CGDMemformer, LFOMMemformer, MixtureOfExperts
    from unrolled.models.linear_attention import SMALL_D

    batch64 = make_batch(64, seed=4, d=d, covariance="isotropic")

    def build(attention: str) -> torch.nn.Module:
        g = torch.Generator().manual_seed(3)
        kw = {"A": "full", "init_std": 0.2, "attention": attention, "generator": g}
        if kind == "transformer":
            return LinearTransformer(d, 20, 3, B="free", heads=2, **kw)
        if kind == "cgd":
            return CGDMemformer(d, 20, 3, B="free", **kw)
        if kind == "mixture":
            experts = [LFOMMemformer(d, 20, 3, B="free", **kw), LinearTransformer(d, 20, 3, B="zero", **kw)]
            return MixtureOfExperts(experts, gate="linear", gate_init=[0.6, 0.5])
        model = LFOMMemformer(d, 20, 3, B="free", include_current=kind == "lfom", **kw)
        with torch.no_grad():
            model.gamma.copy_(torch.rand(model.gamma.shape, generator=g))
        return model

    fast, direct = build("reassociated").double(), build("direct").double()
    direct.load_state_dict(fast.state_dict())
    inner = fast.experts[0] if kind == "mixture" else fast
    assert inner.batch_first == (d >= SMALL_D)
    ours, ref = fast(batch64), direct(batch64)
    for a, b in zip(ours.states, ref.states, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    ours.prediction().pow(2).sum().backward()
    ref.prediction().pow(2).sum().backward()
    for (name, p), q in zip(fast.named_parameters(), direct.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12, msg=name)
