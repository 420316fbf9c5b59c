"""Backbones against second implementations: the UT layer in the paper's column form, the ViT block by hand."""

import math

import pytest
import torch

from unrolled.models.unrolled_transformer import TransformerEncoder, UnrolledLayer, UnrolledTransformer

SIGMA = {
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "relu": lambda x: torch.clamp(x, min=0),
    "tanh": torch.tanh,
    "identity": lambda x: x,
}


def _layer_norm_columns(Xc, weight, bias, eps):
    """LayerNorm of every column (token) of ``[D, N]``."""
    mean = Xc.mean(dim=0, keepdim=True)
    var = ((Xc - mean) ** 2).mean(dim=0, keepdim=True)
    return (Xc - mean) / torch.sqrt(var + eps) * weight[:, None] + bias[:, None]


def _paper_layer(layer, X, activation):
    """X_l = σ(W Z + U X + b), Z = V X̂ softmax[(Q X̂)ᵀ (K X̂) / √d_h] per head, one sample at a time.

    Columns are tokens; the softmax normalises each column (over the source index i).
    """
    D, H = layer.width, layer.heads
    dh = D // H
    Q, K, V = layer.Q.weight, layer.K.weight, layer.V.weight
    W, b, U = layer.W.weight, layer.W.bias, layer.U.weight
    out = []
    for x in X:  # [N, D]
        Xc = x.T  # [D, N]
        if isinstance(layer.norm, torch.nn.LayerNorm):
            Xh = _layer_norm_columns(Xc, layer.norm.weight, layer.norm.bias, layer.norm.eps)
        else:
            Xh = Xc
        Z = []
        for h in range(H):
            rows = slice(h * dh, (h + 1) * dh)
            S = (Q[rows] @ Xh).T @ (K[rows] @ Xh) / math.sqrt(dh)  # [N, N], S[i, j]
            A = torch.exp(S - S.max(dim=0, keepdim=True).values)
            A = A / A.sum(dim=0, keepdim=True)  # each column sums to 1
            Z.append(V[rows] @ Xh @ A)  # [d_h, N]
        Z = torch.cat(Z, dim=0)  # [D, N]
        out.append(SIGMA[activation](W @ Z + U @ Xc + b[:, None]).T)
    return torch.stack(out)


def _randomise_affine(module, g):
    """Non-trivial LayerNorm weights/biases and linear biases, so the comparison sees them."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, torch.nn.Linear) and m.bias is not None:
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))


@pytest.mark.parametrize("activation", ["gelu", "relu", "tanh", "identity"])
@pytest.mark.parametrize("norm", ["none", "layer"])
@pytest.mark.parametrize("heads", [1, 3])
def test_ut_layer_matches_the_paper_column_form(activation, norm, heads):
    g = torch.Generator().manual_seed(0)
    layer = UnrolledLayer(12, heads, activation, norm, init="random", generator=g).double()
    _randomise_affine(layer, g)
    X = torch.randn(3, 7, 12, generator=g, dtype=torch.float64)
    torch.testing.assert_close(layer(X), _paper_layer(layer, X, activation), rtol=1e-12, atol=1e-12)


def test_ut_runs_its_layers_in_order_and_is_not_weight_tied():
    g = torch.Generator().manual_seed(1)
    model = UnrolledTransformer(8, 3, 2, "tanh", "layer", init="random", generator=g).double()
    x0 = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    states = model(x0)
    assert isinstance(states, tuple)
    assert len(states) == 4
    assert states[0] is x0
    for l, layer in enumerate(model.layers):
        assert states[l + 1].shape == (2, 5, 8)
        torch.testing.assert_close(states[l + 1], _paper_layer(layer, states[l], "tanh"))
    # each layer owns its parameters: 5 matrices + b_l + LayerNorm (2) per layer, none shared
    params = list(model.parameters())
    assert len(params) == 3 * 8
    assert len({id(p) for p in params}) == len(params)
    assert not torch.equal(model.layers[0].Q.weight, model.layers[1].Q.weight)


@pytest.mark.parametrize("activation", ["relu", "identity", "tanh"])
def test_identity_init_without_attention_is_sigma_of_the_input(activation):
    """init='identity': U_l = I, b_l = 0; with W_l = 0 the layer is exactly X ↦ σ(X)."""
    layer = UnrolledLayer(6, 2, activation, "layer", init="identity").double()
    torch.testing.assert_close(layer.U.weight, torch.eye(6, dtype=torch.float64))
    with torch.no_grad():
        layer.W.weight.zero_()
    X = torch.randn(2, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(X), SIGMA[activation](X))


def test_identity_init_starts_near_sigma_of_the_input():
    model = UnrolledTransformer(
        16, 4, 4, "relu", "layer", init="identity", generator=torch.Generator().manual_seed(2)
    )
    x0 = torch.randn(3, 10, 16, generator=torch.Generator().manual_seed(3))
    states = model(x0)
    for s in states[1:]:
        assert (s - torch.relu(x0)).abs().max() < 0.05


def _manual_vit_block(block, x):
    """x + proj(softmax(q kᵀ/√d_h) v) on LN x, then + MLP on LN x, in explicit math."""
    H = block.attn.heads
    D = x.shape[-1]
    dh = D // H

    def ln(m, t):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + m.eps) * m.weight + m.bias

    h = ln(block.ln1, x)
    qkv = h @ block.attn.qkv.weight.T + block.attn.qkv.bias
    q, k, v = qkv[..., :D], qkv[..., D : 2 * D], qkv[..., 2 * D :]
    heads = []
    for i in range(H):
        cols = slice(i * dh, (i + 1) * dh)
        S = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(dh)  # [B, N, N] query × key
        heads.append(torch.softmax(S, dim=-1) @ v[..., cols])
    x = x + torch.cat(heads, dim=-1) @ block.attn.proj.weight.T + block.attn.proj.bias
    h = ln(block.ln2, x) @ block.mlp.fc.weight.T + block.mlp.fc.bias
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    return x + h @ block.mlp.proj.weight.T + block.mlp.proj.bias


@pytest.mark.parametrize("heads", [1, 4])
def test_vit_block_matches_explicit_math(heads):
    g = torch.Generator().manual_seed(4)
    enc = TransformerEncoder(8, 2, heads, mlp_ratio=2.0, init_std=0.5, generator=g).double()
    _randomise_affine(enc, g)
    x0 = torch.randn(3, 6, 8, generator=g, dtype=torch.float64)
    states = enc(x0)
    assert len(states) == 3
    assert states[0] is x0
    for l, block in enumerate(enc.blocks):
        torch.testing.assert_close(states[l + 1], _manual_vit_block(block, states[l]), rtol=1e-12, atol=1e-12)


def _backbones():
    g = torch.Generator().manual_seed(5)
    return {
        "ut-identity": UnrolledTransformer(8, 3, 2, "gelu", "layer", init="identity", generator=g),
        "ut-random-nonorm": UnrolledTransformer(8, 3, 2, "tanh", "none", init="random", generator=g),
        "vit": TransformerEncoder(8, 3, 2, generator=g),
    }


@pytest.mark.parametrize("name", ["ut-identity", "ut-random-nonorm", "vit"])
def test_gradients_reach_every_parameter(name):
    model = _backbones()[name].double()
    x0 = torch.randn(2, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    target = torch.randn(2, 5, 8, dtype=torch.float64)
    sum(((s - target) ** 2).sum() for s in model(x0)).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ["ut-identity", "vit"])
def test_backbones_are_token_permutation_equivariant(name):
    """No positions inside the backbones: permuting the tokens permutes every state."""
    model = _backbones()[name].double()
    x0 = torch.randn(2, 7, 8, dtype=torch.float64)
    perm = torch.randperm(7)
    for s, sp in zip(model(x0), model(x0[:, perm]), strict=True):
        torch.testing.assert_close(s[:, perm], sp)


def test_dropout_only_in_training():
    model = UnrolledTransformer(8, 2, 2, dropout=0.5, generator=torch.Generator().manual_seed(7))
    x0 = torch.randn(2, 5, 8)
    model.eval()
    torch.testing.assert_close(model(x0)[-1], model(x0)[-1])
    model.train()
    assert not torch.allclose(model(x0)[-1], model(x0)[-1])


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="heads must divide width"):
        UnrolledTransformer(10, 2, 4)
    with pytest.raises(ValueError, match="heads must divide width"):
        TransformerEncoder(10, 2, 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(activation="swish"), "activation"),
        (dict(norm="batch"), "norm"),
        (dict(init="zeros"), "init"),
        (dict(dropout=1.0), "dropout"),
        (dict(depth=0), "depth"),
    ],
)
def test_bad_ut_config_is_refused(kwargs, match):
    args = dict(width=8, depth=2, heads=2) | kwargs
    with pytest.raises(ValueError, match=match):
        UnrolledTransformer(**args)


def test_wrong_token_width_is_refused():
    with pytest.raises(ValueError, match=r"expected tokens \[B, N, 8\]"):
        UnrolledTransformer(8, 2, 2)(torch.zeros(2, 5, 6))
    with pytest.raises(ValueError, match=r"expected tokens \[B, N, 8\]"):
        TransformerEncoder(8, 2, 2)(torch.zeros(5, 8))
