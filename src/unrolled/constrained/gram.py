"""Layerwise mean squared errors of an affine readout, for many states at the cost of one readout.

A constrained objective reads every layer out through the same readout. When that readout is affine in a
(per-token normalised) state and the loss is the mean squared error, the L intermediate readouts need not be
formed at all. With Ẑ the normalised tokens of one sample ``[T, D]``, the folded readout
``Ẑ W'ᵀ + b'`` (W' ``[P, D]``: the decoder times the norm's scale; b' ``[P]``: the decoder's bias plus
the decoder applied to the norm's shift) and its target Y ``[T, P]``,

    ‖Ẑ W'ᵀ + b' − Y‖² = ⟨Ẑ, Ẑ G + M⟩ + c,   G = W'ᵀ W' [D, D],  M = −2 (Y − b') W' [T, D],  c = ‖Y − b'‖²,

and G, M, c are shared by every layer. Each layer then costs one ``[T·B, D] × [D, D]`` product instead of
``[T·B, D] × [D, P]`` plus the ``[T·B, P]`` error and its backward; G, M and c cost one readout, once.

:class:`GramMSE` is an autograd function over all the intermediate states at once: its backward forms the
state gradients in closed form, ``∂/∂Ẑ = 2 Ẑ G + M``, recomputing Ẑ from the states rather than keeping it
(so the constraints cost no memory beyond one ``[B, T, D]`` tensor M), and sends G, M and c their gradients,
from which autograd reaches the readout's parameters. The values agree with the direct readout to float
rounding (the expansion subtracts terms of the size of ‖Y‖², so float32 keeps about five significant digits
of a loss 100× smaller than ‖Y‖²/TP: tested against the direct form in float64 and float32).

Why by hand: no library fuses a shared readout's loss over many inputs; ``torch.utils.checkpoint`` of the
direct readout (the general path, kept for every other readout) still pays the ``[T·B, P]`` work three times.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def _normalise(state: Tensor, eps: float | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``[B, T, D]``: each token standardised over D (LayerNorm without its affine part), with its mean and
    1/std ``[B, T, 1]``; None: the state unchanged."""
    if eps is None:
        return state, None, None
    return torch.native_layer_norm(state, state.shape[-1:], None, None, eps)


def _rows(x: Tensor) -> Tensor:
    """``[B, T, D] -> [B·T, D]`` (a view)."""
    return x.reshape(-1, x.shape[-1])


class GramMSE(torch.autograd.Function):
    """Per-sample squared errors ``[k, B]`` of k states ``[B, T, D]`` (summed over T and P; see the module).

    Inputs: G ``[D, D]`` (symmetric), M ``[B', T, D]``, c ``[B']``, the norm's ε (None: no norm), the
    samples to read (indices ``[B']``, or None: all B), the states ``[B, T, D]``. Saved for the backward: G, M,
    the states (which the solver's own graph keeps anyway: reading a subset copies nothing into the graph)
    and each state's token means and 1/std ``[B', T, 1]``; Ẑ is recomputed from them.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        gram: Tensor,
        cross: Tensor,
        const: Tensor,
        eps: float | None,
        pick: Tensor | None,
        *states: Tensor,
    ) -> Tensor:
        out, stats = [], []
        for state in states:
            z, mean, rstd = _normalise(state if pick is None else state[pick], eps)
            a = torch.addmm(_rows(cross), _rows(z), gram).reshape(z.shape)  # Ẑ G + M
            out.append(a.mul_(z).sum(dim=(1, 2)) + const)  # ⟨Ẑ, ẐG + M⟩ per sample
            if mean is not None:
                stats += [mean, rstd]
        ctx.eps, ctx.pick = eps, pick
        ctx.save_for_backward(gram, cross, *states, *stats)
        return torch.stack(out)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        gram, cross, *saved = ctx.saved_tensors
        k = grad.shape[0]
        states, stats = saved[:k], saved[k:]
        need_gram, need_cross = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        d_gram = torch.zeros_like(gram) if need_gram else None
        d_cross = torch.zeros_like(cross) if need_cross else None
        d_states: list[Tensor | None] = []
        pick = ctx.pick
        for l, full in enumerate(states):
            need_state = ctx.needs_input_grad[5 + l]
            state = full if pick is None else full[pick]
            if not (need_state or need_gram or need_cross):
                d_states.append(None)
                continue
            g = grad[l].reshape(-1, 1, 1)  # [B, 1, 1]
            if ctx.eps is None:
                z = state
            else:
                mean, rstd = stats[2 * l], stats[2 * l + 1]
                z = (state - mean) * rstd
            if d_gram is not None:  # Σ_b g_b Ẑ_bᵀ Ẑ_b, without a [B, T, D] temporary
                d_gram += torch.einsum("b,bij->ij", grad[l], torch.bmm(z.mT, z))
            if d_cross is not None:
                d_cross.addcmul_(z, g)
            if not need_state:
                d_states.append(None)
                continue
            d_z = torch.addmm(_rows(cross), _rows(z), gram, alpha=2).reshape(z.shape).mul_(g)  # g (2ẐG + M)
            if ctx.eps is None:
                d_state = d_z
            else:  # LayerNorm's own backward kernel (no affine part)
                d_state, _, _ = torch.ops.aten.native_layer_norm_backward(
                    d_z, state, state.shape[-1:], mean, rstd, None, None, [True, False, False]
                )
            if pick is not None:  # the unread samples get no gradient from this readout
                d_state = full.new_zeros(full.shape).index_copy_(0, pick, d_state)
            d_states.append(d_state)
        d_const = grad.sum(dim=0) if ctx.needs_input_grad[2] else None
        return (d_gram, d_cross, d_const, None, None, *d_states)


@dataclass(frozen=True)
class GramTerms:
    """What every layer shares: G ``[D, D]``, M ``[B', T, D]``, c ``[B']``, the normaliser 1/(T·P), and the
    sample subset (None: all) they were formed for."""

    gram: Tensor
    cross: Tensor
    const: Tensor
    scale: float
    pick: Tensor | None


@dataclass(frozen=True)
class AffineReadout:
    """A readout ``prediction = layout⁻¹(norm(state) Wᵀ + b)``, described so its MSE can be taken in Gram form.

    Attributes:
        weight: W ``[P, D]``.
        bias: b ``[P]`` or None.
        targets: the target in the readout's token layout, ``target [B, ...] -> [B, T, P]`` (e.g. patchify).
        tokens: a state in token layout, ``state [B, ...] -> [B, T, D]`` (a reshape).
        norm_eps: the per-token LayerNorm's ε before W, or None for no norm.
        norm_weight, norm_bias: that LayerNorm's scale and shift ``[D]`` (None: 1 and 0).
    """

    weight: Tensor
    bias: Tensor | None
    targets: Callable[[Tensor], Tensor]
    tokens: Callable[[Tensor], Tensor] = lambda s: s
    norm_eps: float | None = None
    norm_weight: Tensor | None = None
    norm_bias: Tensor | None = None

    def folded(self) -> tuple[Tensor, Tensor]:
        """W' ``[P, D]`` and b' ``[P]``: the norm's affine part folded into the linear map."""
        weight, bias = self.weight, self.bias
        if bias is None:
            bias = weight.new_zeros(weight.shape[0])
        if self.norm_bias is not None:
            bias = bias + weight @ self.norm_bias
        if self.norm_weight is not None:
            weight = weight * self.norm_weight
        return weight, bias

    def terms(self, target: Tensor, pick: Tensor | None = None) -> GramTerms:
        """G, M and c for one target ``[B, ...]`` (restricted to the samples ``pick``): one readout's work."""
        weight, bias = self.folded()
        y = self.targets(target)
        if pick is not None:
            pick = pick.to(y.device)
            y = y[pick]
        B, T, P = y.shape
        # M = −2 (Y − b') W' = −2 Y W' + 2 b'W' and c = ‖Y‖² − 2⟨Σ_t Y_t, b'⟩ + T‖b'‖², without forming Y − b'
        cross = torch.addmm(2 * (bias @ weight), y.reshape(-1, P), weight, alpha=-2).reshape(B, T, -1)
        flat = y.reshape(B, -1)
        const = (flat * flat).sum(dim=1) - 2 * (y.sum(dim=1) @ bias) + T * bias.dot(bias)
        return GramTerms(weight.mT @ weight, cross, const, 1.0 / (T * P), pick)

    def mse(self, states: Sequence[Tensor], target: Tensor | GramTerms, pick: Tensor | None = None) -> Tensor:
        """Per-sample mean squared errors ``[k, B']`` of k states.

        Equal (to float rounding) to ``mean((readout(state) − target)²)`` over each sample's entries. ``target``
        is the target ``[B, ...]`` or its :meth:`terms` (to share them between calls); ``pick`` (sample
        indices, with a raw target) restricts every state and the target to those samples.
        """
        terms = target if isinstance(target, GramTerms) else self.terms(target, pick)
        tokens = [self.tokens(s) for s in states]
        batch = terms.cross.shape[0] if terms.pick is None else None
        for t in tokens:
            if (batch or t.shape[0], *terms.cross.shape[1:2], terms.gram.shape[0]) != (
                t.shape[0],
                *t.shape[1:],
            ):
                raise ValueError(
                    f"state tokens {tuple(t.shape)} do not match the readout: "
                    f"[B, {terms.cross.shape[1]}, {terms.gram.shape[0]}] expected"
                    + ("" if batch is None else f" with B = {batch}")
                )
        return (
            GramMSE.apply(terms.gram, terms.cross, terms.const, self.norm_eps, terms.pick, *tokens)
            * terms.scale
        )
