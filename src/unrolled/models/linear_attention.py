"""Linear self-attention for in-context regression (Ahn et al. 2023), tokens as rows.

In the paper's column layout Z ∈ R^{(d+1)×(n+1)} and Attn_{P,Q}(Z) = P Z M (Zᵀ Q Z) with
P = [[B, 0], [0, 1]], Q = −[[A, 0], [0, 0]] and M = diag(1, …, 1, 0) (the query is never a source).
Here tokens are rows, Z ∈ R^{[B, n+1, d+1]}, and one head computes

    attn(Z) = (1/n) · S M V,   S = Z W Zᵀ,   W = −[[A, 0], [0, 0]],   V = Z [[Bᵀ, 0], [0, 1]],

which is the transpose of the paper's Attn with A stored so that **a layer with B = 0 is preconditioned
gradient descent with preconditioner A** (w ← w − A ∇R(w), R(w) = (1/2n)‖Xw − y‖²). The paper's
Q_l = −[[A_l, 0], [0, 0]] acts on the query through A_lᵀ, so our A is the transpose of the paper's A_l;
for symmetric A (and for A = a I) the two agree.

Two evaluation orders give the same result (tested):
  * ``direct``: build the ``[B, n+1, n+1]`` score matrix S, O(n² d) time and memory;
  * ``reassociated`` (default): S M V = Z W (Zᵀ M Z) P̃, where Zᵀ M Z is ``[B, d+1, d+1]``, O(n d²).
Heads are summed; in the re-associated order with B free (GD++) the sum collapses into one per-prompt
``[d+1, d+1]`` matrix G (:meth:`LinearAttention._free_batch_first`), formed and applied by batched matrix
products in a batch-first layout: at (d, n) = (20, 200) and (50, 2000) a training step is 8–40× faster than
the direct form's (``benchmarks/bench_attention.py``), close to the ratio of their operation counts. Below
d = ``SMALL_D`` tiny per-prompt products cost more than elementwise work over a batch-last layout, which
:meth:`LinearAttention._free_elementwise` does instead. With B = 0 only the label column changes and the heads
collapse further, into one preconditioner Σ_h A_h: Δy_i = −(1/n) x_iᵀ (Σ_h A_h) Σ_{j≤n} x_j y_j, computed
with O(n d) elementwise work in a batch-last layout and one shared ``[d, d]`` product (per-prompt tiny
matrix products are slow on CPUs).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AForm = Literal["full", "scalar", "fixed"]
BForm = Literal["zero", "free"]
AttentionForm = Literal["reassociated", "direct"]

SMALL_D = 4
"""Below this d a B-free layer runs elementwise over a batch-last layout; from it on, by batched matrix
products batch-first (measured on CPUs, ``benchmarks/bench_attention.py`` and the d = 1 mixture suite)."""


class LinearAttention(nn.Module):
    """One layer of ``heads`` linear-attention heads, summed.

    Args:
        d: input dimension (tokens have d + 1 features).
        heads: number of heads H.
        A: ``full`` (A_h ∈ R^{d×d} learned), ``scalar`` (A_h = a_h I, a_h learned) or ``fixed``
            (A_h = ``fixed_scale`` · I, not learned).
        B: ``zero`` (no update of the x-part: preconditioned GD) or ``free`` (B_h learned: GD++).
        init_std: std of the i.i.d. Gaussian initialisation of learned entries.
        fixed_scale: the scale of A when ``A="fixed"``.
        attention: ``reassociated`` (O(n d²)) or ``direct`` (O(n² d), kept as a reference).
        generator: random generator for the initialisation.
    """

    def __init__(
        self,
        d: int,
        heads: int = 1,
        A: AForm = "full",
        B: BForm = "zero",
        init_std: float = 0.1,
        fixed_scale: float = 1.0,
        attention: AttentionForm = "reassociated",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if d < 1 or heads < 1:
            raise ValueError(f"need d >= 1 and heads >= 1, got d={d}, heads={heads}")
        if attention not in ("reassociated", "direct"):
            raise ValueError(f"attention must be 'reassociated' or 'direct', got {attention!r}")
        self.d, self.heads, self.A_form, self.B_form, self.attention = d, heads, A, B, attention

        def normal(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=generator) * init_std)

        if A == "full":
            self.A = normal(heads, d, d)
        elif A == "scalar":
            self.a = normal(heads)
        elif A == "fixed":
            self.register_buffer("a", torch.full((heads,), float(fixed_scale)))
        else:
            raise ValueError(f"A must be 'full', 'scalar' or 'fixed', got {A!r}")
        if B == "free":
            self.B = normal(heads, d, d)
        elif B != "zero":
            raise ValueError(f"B must be 'zero' or 'free', got {B!r}")

    def preconditioners(self) -> Tensor:
        """A_h for every head: ``[H, d, d]``."""
        if self.A_form == "full":
            return self.A
        eye = torch.eye(self.d, dtype=self.a.dtype, device=self.a.device)
        return self.a[:, None, None] * eye

    def key_query(self) -> Tensor:
        """W_h = −[[A_h, 0], [0, 0]]: ``[H, d+1, d+1]``."""
        return F.pad(-self.preconditioners(), (0, 1, 0, 1))

    def value(self) -> Tensor:
        """P̃_h = [[B_hᵀ, 0], [0, 1]]: ``[H, d+1, d+1]``."""
        ref = self.A if self.A_form == "full" else self.a
        D = self.d + 1
        P = torch.zeros(self.heads, D, D, dtype=ref.dtype, device=ref.device)
        P[:, -1, -1] = 1.0
        if self.B_form == "free":
            P = P + F.pad(self.B.transpose(1, 2), (0, 1, 0, 1))
        return P

    def forward(self, Z: Tensor) -> Tensor:
        """attn(Z), summed over heads, scaled by 1/n.

        Args:
            Z: tokens ``[B, n+1, d+1]``, the query last.

        Returns:
            ``[B, n+1, d+1]``, the update a residual layer adds to Z.
        """
        self._check(Z.shape, batch_last=False)
        if self.attention == "direct":
            return self._direct(Z)
        if self.B_form == "free":
            if self.d < SMALL_D:
                return self._free_elementwise(Z.permute(1, 2, 0).contiguous()).permute(2, 0, 1)
            return self._free_batch_first(Z)
        return self._label_update(Z.permute(1, 2, 0).contiguous()).permute(2, 0, 1)

    def forward_batch_last(self, Zt: Tensor) -> Tensor:
        """attn in the batch-last layout the models use internally: ``[n+1, d+1, B] -> [n+1, d+1, B]``."""
        self._check(Zt.shape, batch_last=True)
        if self.attention == "direct":
            return self._direct(Zt.permute(2, 0, 1)).permute(1, 2, 0)
        if self.B_form == "free":
            return self._free_batch_last(Zt)
        return self._label_update(Zt)

    def _free_batch_last(self, Zt: Tensor) -> Tensor:
        """General B, batch-last ``[n+1, d+1, B]``: elementwise for small d, else :meth:`_free_batch_first` on
        the batch-first view."""
        if self.d < SMALL_D:
            return self._free_elementwise(Zt)
        return self._free_batch_first(Zt.permute(2, 0, 1)).permute(1, 2, 0)

    def _free_elementwise(self, Zt: Tensor) -> Tensor:
        """General B for small d, batch-last ``[n+1, d+1, B]``, using the block structure of W and P̃.

        Z W C P̃ has a zero label row in W, so with u_i = A_hᵀ x_i (one shared product) the update of token
        i is −(1/n) [B_h C_xx u_i, c_xyᵀ u_i], C_xx = Σ_j x_j x_jᵀ ``[d, d, B]`` and c_xy = Σ_j x_j y_j. The
        only per-prompt contraction is d×d (not (d+1)×(d+1) twice), done elementwise over a contiguous batch:
        below d = ``SMALL_D`` faster on CPUs than per-prompt products of tiny matrices; above it the
        ``[n+1, d, d, B]`` elementwise work grows as d² and :meth:`_free_batch_first` wins.
        """
        n1, d, batch = Zt.shape[0], self.d, Zt.shape[2]
        n = n1 - 1
        X = Zt[:, :d]  # [n+1, d, B]
        context = X[:n]
        Cxx = (context.unsqueeze(2) * context.unsqueeze(1)).sum(dim=0)  # [d, d, B]
        cxy = (context * Zt[:n, d:]).sum(dim=0)  # [d, B]
        Xf = X.transpose(0, 1).reshape(d, n1 * batch)  # [d, (n+1) B]
        out_x = torch.zeros(n1, d, batch, dtype=Zt.dtype, device=Zt.device)
        out_y = torch.zeros(n1, batch, dtype=Zt.dtype, device=Zt.device)
        A = self.preconditioners()
        for h in range(self.heads):
            U = (A[h].T @ Xf).reshape(d, n1, batch).transpose(0, 1)  # u_i = A_hᵀ x_i  [n+1, d, B]
            V = (U.unsqueeze(2) * Cxx.unsqueeze(0)).sum(dim=1)  # C_xx u_i  [n+1, d, B]
            Vf = V.transpose(0, 1).reshape(d, n1 * batch)
            out_x = out_x + (self.B[h] @ Vf).reshape(d, n1, batch).transpose(0, 1)
            out_y = out_y + (U * cxy).sum(dim=1)
        return torch.cat([out_x, out_y.unsqueeze(1)], dim=1) / -n

    def _free_batch_first(self, Z: Tensor) -> Tensor:
        """General B, batch-first ``[B, n+1, d+1]``, using the block structure of W and P̃.

        Z W C P̃ has a zero label row in W, so the update of token i is −(1/n) [B_h C u_h,i, cᵀ u_h,i] summed
        over heads, with u_h,i = A_hᵀ x_i, C = Σ_{j≤n} x_j x_jᵀ and c = Σ_{j≤n} x_j y_j. Re-associated once
        more, every token goes through one per-prompt matrix

            G = −(1/n) [Σ_h A_h C B_hᵀ | (Σ_h A_h) c],      update_i = x_iᵀ G,

        so a layer is two ``(n+1) × (d+1) × (d+1)`` batched products per prompt (forming Zᵀ M Z, applying G)
        plus O(H d³) on ``[d, d]`` matrices, against the direct form's O(n² d). Implementation notes, each
        measured on CPUs (``benchmarks/bench_attention.py``): the matmul operands are contiguous (bmm on
        strided views loops over the batch); Zᵀ M Z is Zᵀ Z minus the query's outer product, so no slice of
        the token tensor enters autograd (its backward would zero-fill a token-sized gradient); and the
        −1/n and the zero label row are folded into the small G, not applied to the ``[B, n+1, d+1]`` output.
        """
        n, d, H = Z.shape[1] - 1, self.d, self.heads
        Z = Z.contiguous()
        query = Z[:, n]  # [B, d+1]
        CC = Z.transpose(1, 2) @ Z - query.unsqueeze(2) * query.unsqueeze(1)  # Zᵀ M Z = [[C, c], [cᵀ, ·]]
        C, c = CC[:, :d, :d], CC[:, :d, d:]
        A = self.preconditioners()
        # Mᵀ = Σ_h B_h C A_hᵀ with products by the shared matrices on the right, which matmul folds into one
        # [B·d, ·] product (a shared matrix on the left would be expanded over the batch): C [B_1ᵀ … B_Hᵀ]
        # gives (C B_hᵀ)[k, l] = (B_h C)[l, k]; regrouped as [B, l, (h, k)] it meets A stacked as [(h, k), i].
        CB = C @ self.B.transpose(1, 2).permute(1, 0, 2).reshape(d, H * d)  # [B, k, (h, l)]
        BC = CB.reshape(-1, d, H, d).permute(0, 3, 2, 1).reshape(-1, d, H * d)  # [B, l, (h, k)]
        Mt = BC @ A.transpose(1, 2).reshape(H * d, d)  # Mᵀ  [B, l, i]
        g = c.transpose(1, 2) @ A.sum(dim=0).T  # ((Σ_h A_h) c)ᵀ  [B, 1, d]
        Gt = torch.cat([Mt, g], dim=1) * (-1.0 / n)  # Gᵀ  [B, d+1, d]
        return Z @ F.pad(Gt.transpose(1, 2), (0, 0, 0, 1))  # the label feature's row of G is zero

    def _label_update(self, Zt: Tensor) -> Tensor:
        """B = 0, batch-last ``[n+1, d+1, B]``: only the label row changes (see :meth:`label_delta`)."""
        d = self.d
        dy = self.label_delta(Zt[:, :d], Zt[:, d])
        return F.pad(dy.unsqueeze(1), (0, 0, d, 0))

    def label_delta(self, X: Tensor, y: Tensor) -> Tensor:
        """B = 0 in the label-only form: Δy_i = −(1/n) x_iᵀ (Σ_h A_h) Σ_{j≤n} x_j y_j.

        Args:
            X: inputs of every token, batch-last ``[n+1, d, B]`` (the query last).
            y: label slots ``[n+1, B]``.

        Returns:
            Δy ``[n+1, B]``. With the batch innermost this is vectorised elementwise work over B, several
            times faster on CPUs than batched tiny matrix products.
        """
        if self.B_form != "zero":
            raise ValueError("label_delta is the B = 0 update; this layer has B free")
        n = X.shape[0] - 1
        xy = (X[:n] * y[:n].unsqueeze(1)).sum(dim=0)  # Σ_j x_j y_j  [d, B] (M drops the query as a source)
        v = self.preconditioners().sum(dim=0) @ xy  # (Σ_h A_h) Σ_j x_j y_j  [d, B]
        return -(X * v).sum(dim=1) / n

    def label_delta_batch_first(self, X: Tensor, y: Tensor) -> Tensor:
        """:meth:`label_delta` in the batch-first layout: X ``[B, n+1, d]``, y ``[B, n+1]`` -> Δy ``[B, n+1]``.

        What a compiled model runs (:meth:`LinearTransformer.forward`): two batched matrix-vector products
        and one shared ``[d, d]`` product. Eager, the batch-last form is faster at small d; compiled, Inductor
        folds the batch-last copy of the prompt into every layer's loops, which then read the batch-first
        prompt with strides it cannot vectorise (``docs/PERFORMANCE.md``), while this form's products go to the
        BLAS.
        """
        if self.B_form != "zero":
            raise ValueError("label_delta is the B = 0 update; this layer has B free")
        n = X.shape[1] - 1
        xy = X[:, :n].transpose(1, 2) @ y[:, :n].unsqueeze(-1)  # Σ_j x_j y_j  [B, d, 1]
        v = self.preconditioners().sum(dim=0) @ xy  # (Σ_h A_h) Σ_j x_j y_j  [B, d, 1]
        return (X @ v).squeeze(-1) / -n

    def _direct(self, Z: Tensor) -> Tensor:
        """The O(n² d) reference: build the ``[B, H, n+1, n]`` scores, then apply them to the values."""
        n = Z.shape[1] - 1
        context = Z[:, :n]
        W, P = self.key_query(), self.value()
        S = torch.einsum("bid,hde,bje->bhij", Z, W, context)  # scores to sources  [B, H, n+1, n]
        V = torch.einsum("bjd,hde->bhje", context, P)  # values  [B, H, n, D]
        return (S @ V).sum(dim=1) / n

    def _check(self, shape: torch.Size, batch_last: bool) -> None:
        feat = shape[1] if batch_last else shape[-1]
        tokens = shape[0] if batch_last else shape[1]
        layout = "[n+1, d+1, B]" if batch_last else "[B, n+1, d+1]"
        if len(shape) != 3 or feat != self.d + 1:
            raise ValueError(f"expected tokens {layout} with d+1 = {self.d + 1}, got {tuple(shape)}")
        if tokens < 2:
            raise ValueError("a prompt needs at least one context token and the query")
