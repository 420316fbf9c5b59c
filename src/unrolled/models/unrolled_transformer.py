"""Token backbones whose every layer is a state: the Unrolled Transformer and a pre-norm ViT encoder.

Both map input tokens ``x0 [B, N, D]`` to the ``L + 1`` states ``(x0, x1, ..., xL)``, each ``[B, N, D]``;
a task wrapper (e.g. :class:`~unrolled.models.denoisers.VideoDenoiser`) owns the embedding that makes ``x0``
and the readout shared by all states, and packs them into a :class:`~unrolled.trajectory.Trajectory`.

**Unrolled Transformer** (UT; Porras-Valenzuela, Hadou & Ribeiro, arXiv 2601.17257), not weight-tied: with
tokens as columns, X ∈ R^{D×N}, layer l computes

    Z_l = V_l X̂ softmax[(Q_l X̂)ᵀ (K_l X̂) / √d_h],      X̂ = LN(X_{l−1}) (``norm="layer"``) or X_{l−1}
    X_l = σ(W_l Z_l + U_l X_{l−1} + b_l)

The softmax normalises each *column* j over the rows i, so output token j is a convex combination of the
values V_l x̂_i; i is the key (source) index. In row-layout attention terms token j queries with K_l x̂_j and
token i is keyed by Q_l x̂_i (only the bilinear form Q_lᵀ K_l enters, so naming is all this changes). With
H heads, Q_l, K_l, V_l are split by rows into H blocks of d_h = D / H, each head attends on its own and the
head outputs are stacked back into Z_l. The 1/√d_h (not in the paper's formula, and absorbable into Q_l)
keeps the logits O(1) whatever the head width, as in standard attention. Here tokens are rows, ``[B, N, D]``,
and ``nn.Linear(D, D)`` with ``weight = Q_l`` computes Q_l X̂ as ``X̂ @ Q_lᵀ``.

**TransformerEncoder**: the standard pre-norm ViT block, x ← x + attn(LN x); x ← x + MLP(LN x), its states
being the residual stream after each block (no final LayerNorm: a shared readout brings its own).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Activation = Literal["gelu", "relu", "tanh", "identity"]
Norm = Literal["none", "layer"]
UTInit = Literal["identity", "random"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}


def check_tokens(x: Tensor, width: int) -> None:
    """Raise unless ``x`` is tokens ``[B, N, width]``."""
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != width:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"expected tokens [B, N, {width}], got {got}")


def _check_dims(width: int, depth: int, heads: int) -> None:
    if width < 1 or depth < 1 or heads < 1:
        raise ValueError(f"need width, depth, heads >= 1, got width={width}, depth={depth}, heads={heads}")
    if width % heads != 0:
        raise ValueError(f"heads must divide width: width={width} is not a multiple of heads={heads}")


def init_normal(param: Tensor, std: float, generator: torch.Generator | None) -> None:
    """In-place N(0, std²) draw from ``generator`` (CPU draw, copied to the parameter's device/dtype)."""
    with torch.no_grad():
        param.copy_(torch.randn(param.shape, generator=generator) * std)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``[B, N, D] -> [B, H, N, D/H]``: head h takes features ``h·d_h .. (h+1)·d_h − 1``."""
    B, N, D = x.shape
    return x.view(B, N, heads, D // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``[B, H, N, d_h] -> [B, N, H·d_h]``, the inverse of :func:`split_heads`."""
    B, H, N, dh = x.shape
    return x.transpose(1, 2).reshape(B, N, H * dh)


# --------------------------------------------------------------------------------------------------------
# Unrolled Transformer
# --------------------------------------------------------------------------------------------------------


class UnrolledLayer(nn.Module):
    """One UT layer, ``X_{l−1} [B, N, D] -> X_l [B, N, D]`` (equations in the module docstring).

    Args:
        width: D.
        heads: H, must divide D.
        activation: σ, one of ``gelu``, ``relu``, ``tanh``, ``identity``. Default ReLU: σ(W Z + U X + b) is
            then a LISTA-like step (Gregor & LeCun 2010) with attention in place of the data term, and ReLU
            is idempotent, so the identity init below stays close to the identity map after layer 1.
        norm: ``layer``: LayerNorm on X_{l−1} before Q, K, V only (pre-norm); the skip U_l X_{l−1} sees the
            raw state. Normalising the attention input keeps the softmax logits in range however the
            un-normalised, non-residual states drift in scale across layers, while leaving U_l the whole
            state (with ``init="identity"`` the layer starts as σ(X_{l−1} + small)). ``none``: the paper's
            layer as written.
        dropout: on the attention weights and on W_l Z_l (training only).
        init: ``identity``: U_l = I and Q_l, K_l, V_l, W_l ~ N(0, init_std²), so the untrained layer is
            σ(X_{l−1} + a small attention term), close to σ(X_{l−1}) (which is X_{l−1} itself for the
            identity, and for ReLU once the state is nonnegative, i.e. from layer 2 on). ``random``: every
            matrix, U_l included, ~ N(0, 1/D) (variance-preserving, a generic random layer). Biases are 0,
            LayerNorm weights 1.
        init_std: the std of the small matrices of ``init="identity"``.
        generator: random generator for the initialisation.
        causal: token j attends to tokens i ≤ j only (a prompt read left to right, as the in-context
            learners of :mod:`unrolled.models.icl` need); default False: every token sees every token.
    """

    def __init__(
        self,
        width: int,
        heads: int,
        activation: Activation = "relu",
        norm: Norm = "layer",
        dropout: float = 0.0,
        init: UTInit = "identity",
        init_std: float = 0.02,
        generator: torch.Generator | None = None,
        causal: bool = False,
    ) -> None:
        super().__init__()
        _check_dims(width, 1, heads)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if norm not in ("none", "layer"):
            raise ValueError(f"norm must be 'none' or 'layer', got {norm!r}")
        if init not in ("identity", "random"):
            raise ValueError(f"init must be 'identity' or 'random', got {init!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.width, self.heads, self.dropout, self.causal = width, heads, dropout, causal
        self.norm = nn.LayerNorm(width) if norm == "layer" else nn.Identity()
        self.Q = nn.Linear(width, width, bias=False)
        self.K = nn.Linear(width, width, bias=False)
        self.V = nn.Linear(width, width, bias=False)
        self.W = nn.Linear(width, width, bias=True)  # its bias is b_l
        self.U = nn.Linear(width, width, bias=False)
        self.sigma = ACTIVATIONS[activation]()
        self.drop = nn.Dropout(dropout)

        small = init_std if init == "identity" else 1.0 / math.sqrt(width)
        for lin in (self.Q, self.K, self.V, self.W):
            init_normal(lin.weight, small, generator)
        nn.init.zeros_(self.W.bias)
        if init == "identity":
            with torch.no_grad():
                self.U.weight.copy_(torch.eye(width))
        else:
            init_normal(self.U.weight, 1.0 / math.sqrt(width), generator)

    def attention(self, X: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """Z_l, multi-head: ``[B, N, D] -> [B, N, D]`` (row j is output token j, heads concatenated).

        ``key_mask`` ``[B, N]`` (True or 1 on real tokens) keeps padding out of every softmax: no token
        attends to a padded source.
        """
        h = self.norm(X)
        # Column j of softmax[(Q X̂)ᵀ (K X̂)] weighs source i by (Q x̂_i)·(K x̂_j): K makes the queries.
        query, key, value = (split_heads(p(h), self.heads) for p in (self.K, self.Q, self.V))
        drop_p = self.dropout if self.training else 0.0
        attn_mask = None if key_mask is None else key_mask.bool()[:, None, None, :]
        causal = self.causal
        if (
            causal and attn_mask is not None
        ):  # SDPA takes one or the other: fold the causal part into the mask
            N = X.shape[1]
            attn_mask = attn_mask & torch.ones(N, N, dtype=torch.bool, device=X.device).tril()
            causal = False
        return merge_heads(
            F.scaled_dot_product_attention(
                query, key, value, attn_mask=attn_mask, dropout_p=drop_p, is_causal=causal
            )
        )

    def forward(self, X: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """X_l = σ(W_l Z_l + U_l X_{l−1} + b_l): ``[B, N, D] -> [B, N, D]``."""
        check_tokens(X, self.width)
        return self.sigma(self.drop(self.W(self.attention(X, key_mask))) + self.U(X))


class UnrolledTransformer(nn.Module):
    """L UT layers, each with its own parameters (not weight-tied).

    Args:
        width: D; depth: L >= 1; heads: H (must divide D).
        activation, norm, dropout, init, init_std, generator, causal: see :class:`UnrolledLayer`.
    """

    def __init__(
        self,
        width: int,
        depth: int,
        heads: int,
        activation: Activation = "relu",
        norm: Norm = "layer",
        dropout: float = 0.0,
        init: UTInit = "identity",
        init_std: float = 0.02,
        generator: torch.Generator | None = None,
        causal: bool = False,
    ) -> None:
        super().__init__()
        _check_dims(width, depth, heads)
        self.width, self.depth, self.heads = width, depth, heads
        self.layers = nn.ModuleList(
            UnrolledLayer(width, heads, activation, norm, dropout, init, init_std, generator, causal)
            for _ in range(depth)
        )

    def forward(self, x0: Tensor, key_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        """The states Φ_0 = x0, Φ_1, ..., Φ_L: ``[B, N, D] -> L + 1`` tensors ``[B, N, D]``.

        ``key_mask`` ``[B, N]`` marks real tokens (text with padding); None: every token is real.
        """
        check_tokens(x0, self.width)
        states = [x0]
        for layer in self.layers:
            states.append(layer(states[-1], key_mask))
        return tuple(states)


# --------------------------------------------------------------------------------------------------------
# Pre-norm ViT encoder (the conventional-transformer baseline)
# --------------------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Multi-head softmax self-attention, fused qkv projection, output projection: ``[B, N, D] -> [B, N, D]``."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        _check_dims(width, 1, heads)
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        p = self.dropout if self.training else 0.0
        return self.drop(self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v, dropout_p=p))))


class MLP(nn.Module):
    """Linear(D, rD) → GELU → Linear(rD, D) → dropout."""

    def __init__(self, width: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(width, hidden)
        self.proj = nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(LN x), then + MLP(LN ·); ``[B, N, D] -> [B, N, D]``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, dropout)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = MLP(width, max(1, round(mlp_ratio * width)), dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TransformerEncoder(nn.Module):
    """L pre-norm ViT blocks; the states are the residual stream after each block.

    Init (nanoGPT): weights ~ N(0, init_std²), the two residual-branch output projections of every block
    ~ N(0, init_std² / 2L), biases 0, LayerNorms identity.

    Args:
        width: D; depth: L >= 1; heads: H (must divide D).
        mlp_ratio: hidden width of the MLP over D.
        dropout: on the attention weights and on both residual branches (training only).
        init_std: see above.
        generator: random generator for the initialisation.
    """

    def __init__(
        self,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        init_std: float = 0.02,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_dims(width, depth, heads)
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.width, self.depth, self.heads = width, depth, heads
        self.blocks = nn.ModuleList(TransformerBlock(width, heads, mlp_ratio, dropout) for _ in range(depth))
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                init_normal(p, init_std / math.sqrt(2 * depth), generator)
            elif name.endswith("weight") and p.dim() == 2:
                init_normal(p, init_std, generator)
            elif name.endswith("bias") and ".ln" not in name:
                nn.init.zeros_(p)

    def forward(self, x0: Tensor) -> tuple[Tensor, ...]:
        """The states x0, x1, ..., xL: ``[B, N, D] -> L + 1`` tensors ``[B, N, D]``."""
        check_tokens(x0, self.width)
        states = [x0]
        for block in self.blocks:
            states.append(block(states[-1]))
        return tuple(states)
