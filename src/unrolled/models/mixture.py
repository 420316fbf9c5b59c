"""Mixtures of Memformer experts and their test-time adaptation (Dutta & Sra, arXiv 2410.07263, Sec. 5).

H experts, each a trained model of :mod:`unrolled.models.memformer` (expert h trained on its own data
distribution, e.g. variance σ_h²), are run side by side on the same token state and their residual
updates are mixed with one gate per expert, shared by all layers:

    Z_{l+1} = Z_l + Σ_h g_h T_l^{(h)}(Z_l),

where T_l^{(h)} is expert h's layer-l update (:meth:`LinearTransformer.update`), each expert carrying its
own memory. Gates are ``linear`` (g = θ, as in the published code, which initialises θ = 0) or
``softmax`` (g = softmax(θ), the paper's "soft gating"; θ = 0 gives equal weights 1/H).

Test-time adaptation (:func:`adapt`) freezes the experts and fits the gates alone, or the gates and the
experts' memory coefficients Γ, on a batch from the shifted distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from unrolled.models.memformer import LinearTransformer, as_tokens, normalize_prompt, query_readout
from unrolled.tasks.regression import RegressionBatch
from unrolled.trajectory import Trajectory

GateForm = Literal["linear", "softmax"]
AdaptForm = Literal["gates", "gates_and_gamma"]


class MixtureOfExperts(nn.Module):
    """Experts' layer updates mixed by gates shared across layers.

    Args:
        experts: H models of the same d, n and depth (their parameters are kept, not copied), all with
            ``normalize`` or all without (the mixture then normalizes the prompt once, as they would).
        gate: ``linear`` (g = θ) or ``softmax`` (g = softmax(θ)).
        gate_init: θ's initial value, one number or one per expert ``[H]``; default 0 (linear gates
            then start at the zero update, softmax gates at equal weights).
    """

    def __init__(
        self,
        experts: Sequence[LinearTransformer],
        gate: GateForm = "linear",
        gate_init: float | Sequence[float] | Tensor = 0.0,
    ) -> None:
        super().__init__()
        if len(experts) < 1:
            raise ValueError("a mixture needs at least one expert")
        if gate not in ("linear", "softmax"):
            raise ValueError(f"gate must be 'linear' or 'softmax', got {gate!r}")
        shapes = {(e.d, e.n, e.depth) for e in experts}
        if len(shapes) > 1:
            raise ValueError(f"experts must share d, n and depth; got (d, n, depth) = {sorted(shapes)}")
        if len({e.normalize for e in experts}) > 1:
            raise ValueError("experts must all normalize their prompts or none (they share the token states)")
        self.experts = nn.ModuleList(experts)
        self.d, self.n, self.depth = experts[0].d, experts[0].n, experts[0].depth
        # one token layout for every expert (their updates are summed): batch-first if any has B free
        batch_first = any(e.batch_first for e in experts)
        for e in experts:
            e.batch_first = batch_first
        self.gate_form: GateForm = gate
        ref = next(experts[0].parameters())
        theta = torch.as_tensor(gate_init, dtype=ref.dtype).to(ref.device)
        if theta.dim() == 0:
            theta = theta.expand(len(experts))
        if theta.shape != (len(experts),):
            raise ValueError(
                f"gate_init needs one value per expert ({len(experts)}), got {tuple(theta.shape)}"
            )
        self.gate_logits = nn.Parameter(theta.clone())

    def gates(self) -> Tensor:
        """g, one weight per expert ``[H]`` (softmax gates sum to one)."""
        if self.gate_form == "softmax":
            return torch.softmax(self.gate_logits, dim=0)
        return self.gate_logits

    def forward(self, inputs: RegressionBatch | Tensor) -> Trajectory:
        """Run the mixture on prompts ``[B, n+1, d+1]``; returns the L + 1 token states."""
        Z = as_tokens(inputs, self.d, self.n)
        if self.experts[0].normalize:  # the experts agree (see __init__)
            Z = normalize_prompt(Z)
        g = self.gates()
        states = [Z]
        batch_first = self.experts[0].batch_first  # the experts share one layout (see __init__)
        Zt = Z if batch_first else Z.permute(1, 2, 0).contiguous()  # batch-last  [n+1, d+1, B]
        memories = [e.init_memory(Zt) for e in self.experts]
        for l in range(self.depth):
            total = torch.zeros_like(Zt)
            for h, expert in enumerate(self.experts):
                T, memories[h] = expert.update(l, Zt, memories[h])
                total = total + g[h] * T
            Zt = Zt + total
            states.append(Zt if batch_first else Zt.permute(2, 0, 1))
        return Trajectory(tuple(states), query_readout)

    def set_adaptable(self, what: AdaptForm) -> list[str]:
        """Freeze everything except the gates (``gates``) or the gates and every expert's Γ.

        Returns the names of the parameters left trainable. Γ is the memory mask of LFOM experts
        (``gamma``); experts without one make ``gates_and_gamma`` an error.
        """
        if what not in ("gates", "gates_and_gamma"):
            raise ValueError(f"adapt must be 'gates' or 'gates_and_gamma', got {what!r}")
        trainable = {"gate_logits"}
        if what == "gates_and_gamma":
            for h, expert in enumerate(self.experts):
                if not isinstance(getattr(expert, "gamma", None), nn.Parameter):
                    raise ValueError(f"expert {h} ({type(expert).__name__}) has no memory coefficients Γ")
                trainable.add(f"experts.{h}.gamma")
        for name, p in self.named_parameters():
            p.requires_grad_(name in trainable)
        return sorted(trainable)
