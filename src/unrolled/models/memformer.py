"""Linear transformers and Memformers for in-context regression (Ahn et al. 2023; Dutta & Sra, arXiv 2410.07263).

Every model maps prompts (tokens ``[B, n+1, d+1]``, query last) to a :class:`~unrolled.trajectory.Trajectory`
of the token states after layers 0..L; the shared readout is ``ŷ_q = −Z[:, n, d]`` (the query's label slot).
Layer l computes ``attn_l(Z_l)`` (see :mod:`unrolled.models.linear_attention`) and the models differ in how
the updates are combined across layers (the memory):

* :class:`LinearTransformer`      Z_{l+1} = Z_l + attn_l(Z_l)
* :class:`CGDMemformer`           R_l = attn_l(Z_l) + γ_l R_{l−1};  Z_{l+1} = Z_l + α_l R_l
* :class:`LFOMMemformer`          Z_{l+1} = Z_l + Σ_{j≤l} Γ_j ⊙ attn_j(Z_j)
  (``include_current=False``:     Z_{l+1} = Z_l + attn_l(Z_l) + Σ_{j<l} Γ_j ⊙ attn_j(Z_j), the GD++/NAG form)
* :class:`RecurrentMemformer`     R ← β_l R + γ_l Σ_h attn_{l,h}(Z);  Z ← Z + α_l R  (A_l = a_l I)

The 1/n of the paper's update is inside attn. Γ_j is a ``[n+1, d+1]`` mask, one per layer, reused by later
layers; with B = 0 only its label column matters (per-token weights on the label update).

**Scale equivariance** (``normalize=True``, every model here). Scaling a prompt's inputs by c multiplies the
curvature of R(w) by c², so a step learned at one input variance overshoots at another. With ``normalize``
the model divides every input (context and query) by the context's RMS entry
r = ((1/(n d)) Σ_{j≤n} ‖x_j‖²)^{1/2}, computed once per prompt in O(n d); layer l then computes attn_l on
x / r, which for B = 0 is the attention scaled by the context's empirical second moment s = r²:
Δy_i = −(1/(n s)) x_iᵀ A Σ_j x_j y_j. The normalised inputs are the same for x and c·x, and every model here
is linear in the labels (the x-part never depends on y, the label updates are linear in y, the memories
are linear combinations with learned constant coefficients), so the prediction of every layer on
(c·x, c′·y) is exactly c′ times its prediction on (x, y): a method learned at one variance is exactly as good
at every other (docs/MODELS.md). It cannot help with a change of shape (another covariance's eigenvalue
spread, a mixture) rather than of scale.

Inside ``forward`` the layers run in a batch-last layout ``[n+1, d+1, B]`` (see
:meth:`LinearAttention.forward_batch_last`) when B = 0, where a layer's work is elementwise over the batch,
and batch-first ``[B, n+1, d+1]`` when B is free (GD++), where it is batched matrix products
(:attr:`LinearTransformer.batch_first`); ``step`` works in that layout, and the trajectory's states are
returned as ``[B, n+1, d+1]`` (views). When every layer has B = 0 only the label column ever changes, so the
layers run on it alone (``[n+1, B]``, :meth:`LinearAttention.label_delta`): 1.3× faster per training step at
L = 4 and 1.7× at L = 16 on a 2-core CPU (tested equal to the full-token path).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from unrolled.models.linear_attention import SMALL_D, AForm, AttentionForm, BForm, LinearAttention
from unrolled.tasks.regression import RegressionBatch
from unrolled.trajectory import Trajectory


def query_readout(Z: Tensor) -> Tensor:
    """The prediction of a token state: ``−Z[:, -1, -1]``, ``[B, n+1, d+1] -> [B]``."""
    return -Z[:, -1, -1]


def as_tokens(inputs: RegressionBatch | Tensor, d: int | None = None, n: int | None = None) -> Tensor:
    """Tokens ``[B, n+1, d+1]`` from a batch or a token tensor (checked against d and n when given)."""
    if isinstance(inputs, RegressionBatch):
        Z = inputs.tokens()
    elif not isinstance(inputs, Tensor) or inputs.dim() != 3:
        got = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"expected a RegressionBatch or tokens [B, n+1, d+1], got {got}")
    else:
        Z = inputs
    if d is not None and n is not None and (Z.shape[1] != n + 1 or Z.shape[2] != d + 1):
        raise ValueError(
            f"model built for n={n}, d={d} (tokens [B, {n + 1}, {d + 1}]), got tokens {tuple(Z.shape)}"
        )
    return Z


def prompt_scale(Z: Tensor) -> Tensor:
    """The context's RMS input entry r = ((1/(n d)) Σ_{j≤n} ‖x_j‖²)^{1/2}: ``[B, n+1, d+1] -> [B]``."""
    return Z[:, :-1, :-1].square().mean(dim=(1, 2)).sqrt()


def normalize_prompt(Z: Tensor) -> Tensor:
    """Tokens with every input divided by :func:`prompt_scale` (labels untouched): ``[B, n+1, d+1]``.

    A prompt whose context inputs are all zero is left as it is (r is clamped away from 0)."""
    r = prompt_scale(Z).clamp_min(torch.finfo(Z.dtype).tiny)
    return torch.cat([Z[..., :-1] / r[:, None, None], Z[..., -1:]], dim=-1)


class LinearTransformer(nn.Module):
    """L layers of linear attention with residual connections (Ahn et al. 2023).

    Args:
        d: input dimension; tokens have d + 1 features.
        n: context size (only :class:`LFOMMemformer` needs it; checked against the inputs).
        layers: depth L >= 1.
        heads, A, B, init_std, fixed_scale, attention: see :class:`LinearAttention`.
        generator: random generator for the initialisation.
        normalize: divide the inputs by the context's RMS entry first (:func:`normalize_prompt`): the model
            becomes equivariant to x → c·x, y → c′·y (module docstring). Off: the model of the papers.
    """

    def __init__(
        self,
        d: int,
        n: int,
        layers: int,
        heads: int = 1,
        A: AForm = "full",
        B: BForm = "zero",
        init_std: float = 0.1,
        fixed_scale: float = 1.0,
        attention: AttentionForm = "reassociated",
        generator: torch.Generator | None = None,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        self.normalize = normalize
        if layers < 1:
            raise ValueError(f"a model needs at least one layer, got layers={layers}")
        self.d, self.n, self.depth = d, n, layers
        self.layers = nn.ModuleList(
            LinearAttention(d, heads, A, B, init_std, fixed_scale, attention, generator)
            for _ in range(layers)
        )
        # the layout of the full-token path: batch-first when a layer has B free (its update is batched
        # matrix products over prompts), batch-last otherwise (B = 0 updates are elementwise over the batch)
        self.batch_first = B == "free" and d >= SMALL_D

    def init_memory(self, Z: Tensor) -> Tensor | None:
        """The memory before layer 0 (None for the memoryless transformer)."""
        return None

    def attn(self, l: int, Z: Tensor, X: Tensor | None = None, labels_batch_first: bool = False) -> Tensor:
        """Layer l's attention output: full tokens in the model's layout (``[B, n+1, d+1]`` when
        :attr:`batch_first`, else ``[n+1, d+1, B]``), or label-only ``[n+1, B]`` when X is given.

        In the label-only form (every layer B = 0) Z is the label column y ``[n+1, B]`` and X the inputs
        ``[n+1, d, B]``, which no layer changes; with ``labels_batch_first`` (compiled models) y is
        ``[B, n+1]`` and X ``[B, n+1, d]``.
        """
        if X is not None:
            if labels_batch_first:
                return self.layers[l].label_delta_batch_first(X, Z)
            return self.layers[l].label_delta(X, Z)
        if self.batch_first:
            return self.layers[l](Z)
        return self.layers[l].forward_batch_last(Z)

    @property
    def label_only(self) -> bool:
        """True when every layer has B = 0 and the re-associated form: only the label column evolves."""
        return all(layer.B_form == "zero" and layer.attention == "reassociated" for layer in self.layers)

    def update(
        self,
        l: int,
        Z: Tensor,
        memory: Tensor | None,
        X: Tensor | None = None,
        labels_batch_first: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Layer l's residual update: ``(Z_l, memory) -> (T_l, memory')`` with Z_{l+1} = Z_l + T_l.

        Z and T are batch-last ``[n+1, d+1, B]``, or the label column ``[n+1, B]`` when X (the inputs
        ``[n+1, d, B]``) is given (``[B, n+1]`` and ``[B, n+1, d]`` with ``labels_batch_first``). A mixture
        of experts combines the T_l of its experts.
        """
        return self.attn(l, Z, X, labels_batch_first), memory

    def step(self, l: int, Z: Tensor, memory: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Layer l: ``(Z_l, memory) -> (Z_{l+1}, memory')``, Z batch-last ``[n+1, d+1, B]``."""
        T, memory = self.update(l, Z, memory)
        return Z + T, memory

    def forward(self, inputs: RegressionBatch | Tensor) -> Trajectory:
        """Run all layers on prompts ``[B, n+1, d+1]`` (or a batch); returns the L + 1 states.

        With B = 0 in every layer only the label column changes, so the layers run on it alone
        (``[n+1, B]``) and the full token states are assembled for the trajectory.
        """
        Z = as_tokens(inputs, self.d, self.n)
        if self.normalize:
            Z = normalize_prompt(Z)
        states = [Z]
        if self.label_only and torch.compiler.is_compiling():
            # compiled: the label column batch-first, by batched products (LinearAttention.label_delta_batch_first)
            X, y = Z[..., : self.d], Z[..., self.d]  # [B, n+1, d], [B, n+1]
            memory = self.init_memory(y)
            for l in range(self.depth):
                T, memory = self.update(l, y, memory, X, labels_batch_first=True)
                y = y + T
                states.append(torch.cat([X, y.unsqueeze(-1)], dim=-1))
            return Trajectory(tuple(states), query_readout)
        Zt = None if self.batch_first else Z.permute(1, 2, 0).contiguous()  # batch-last  [n+1, d+1, B]
        if self.label_only:
            assert Zt is not None
            X, y = Zt[:, : self.d], Zt[:, self.d]  # [n+1, d, B], [n+1, B]
            memory = self.init_memory(y)
            for l in range(self.depth):
                T, memory = self.update(l, y, memory, X)
                y = y + T
                # batch-last copy of contiguous rows (fast), returned as a [B, n+1, d+1] view
                states.append(torch.cat([X, y.unsqueeze(1)], dim=1).permute(2, 0, 1))
            return Trajectory(tuple(states), query_readout)
        if self.batch_first:
            memory = self.init_memory(Z)
            for l in range(self.depth):
                Z, memory = self.step(l, Z, memory)
                states.append(Z)
            return Trajectory(tuple(states), query_readout)
        memory = self.init_memory(Zt)
        for l in range(self.depth):
            Zt, memory = self.step(l, Zt, memory)
            states.append(Zt.permute(2, 0, 1))
        return Trajectory(tuple(states), query_readout)


class CGDMemformer(LinearTransformer):
    """CGD-like dynamic memory (Dutta & Sra, Prop. 1): R_l = attn_l(Z_l) + γ_l R_{l−1}, Z_{l+1} = Z_l + α_l R_l.

    α and γ (``[L]``) are learned scalars shared by all prompts, initialised α = 1, γ = 0 (so the
    untrained model is the linear transformer). With constant α, γ and A = a I this is heavy-ball momentum
    with step α·a and momentum γ on R(w) = (1/2n)‖Xw − y‖².
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.alpha = nn.Parameter(torch.ones(self.depth))
        self.gamma = nn.Parameter(torch.zeros(self.depth))

    def init_memory(self, Z: Tensor) -> Tensor:
        return torch.zeros_like(Z)

    def update(
        self,
        l: int,
        Z: Tensor,
        memory: Tensor | None,
        X: Tensor | None = None,
        labels_batch_first: bool = False,
    ) -> tuple[Tensor, Tensor]:
        assert memory is not None
        R = self.attn(l, Z, X, labels_batch_first) + self.gamma[l] * memory
        return self.alpha[l] * R, R


class LFOMMemformer(LinearTransformer):
    """LFOM memory (Dutta & Sra, Prop. 2): Z_{l+1} = Z_l + Σ_{j≤l} Γ_j ⊙ attn_j(Z_j).

    Γ (``[L, n+1, d+1]``) holds one learned mask per layer, reused by all later layers, initialised to
    ``gamma_init``. With ``include_current=False`` the current update is unmasked and only the memory of
    earlier layers is weighted: Z_{l+1} = Z_l + attn_l(Z_l) + Σ_{j<l} Γ_j ⊙ attn_j(Z_j) (the GD++ / NAG /
    momentum variant).

    The memory carried between layers is the running sum S_l = Σ_{j≤l} Γ_j ⊙ attn_j(Z_j).
    """

    def __init__(
        self, *args: object, gamma_init: float = 0.0, include_current: bool = True, **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.include_current = include_current
        self.gamma = nn.Parameter(torch.full((self.depth, self.n + 1, self.d + 1), float(gamma_init)))

    def init_memory(self, Z: Tensor) -> Tensor:
        return torch.zeros_like(Z)

    def update(
        self,
        l: int,
        Z: Tensor,
        memory: Tensor | None,
        X: Tensor | None = None,
        labels_batch_first: bool = False,
    ) -> tuple[Tensor, Tensor]:
        assert memory is not None
        R = self.attn(l, Z, X, labels_batch_first)
        if X is not None and labels_batch_first:
            mask = self.gamma[l][:, self.d]  # label-only: Γ's label column over [B, n+1]
        elif X is not None:
            mask = self.gamma[l][:, self.d].unsqueeze(-1)  # label-only: Γ's label column over [n+1, B]
        elif self.batch_first:
            mask = self.gamma[l]  # [n+1, d+1] over [B, n+1, d+1]
        else:
            mask = self.gamma[l].unsqueeze(-1)  # over [n+1, d+1, B]
        total = memory + mask * R  # Γ_l ⊙ R_l
        if self.include_current:
            return total, total
        return R + memory, total


class RecurrentMemformer(LinearTransformer):
    """The scalar-preconditioned recurrence: R ← β_l R + γ_l Σ_h attn_{l,h}(Z), Z ← Z + α_l R.

    Every head has A = a_{l,h} I (``A="scalar"``). α, β, γ (``[L]``) are learned; init α = 1, β = 0, γ = 1,
    so the untrained model is the multi-head linear transformer.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if self.layers[0].A_form != "scalar":
            raise ValueError("RecurrentMemformer uses A_l = a_l I: build it with A='scalar'")
        self.alpha = nn.Parameter(torch.ones(self.depth))
        self.beta = nn.Parameter(torch.zeros(self.depth))
        self.gamma = nn.Parameter(torch.ones(self.depth))

    def init_memory(self, Z: Tensor) -> Tensor:
        return torch.zeros_like(Z)

    def update(
        self,
        l: int,
        Z: Tensor,
        memory: Tensor | None,
        X: Tensor | None = None,
        labels_batch_first: bool = False,
    ) -> tuple[Tensor, Tensor]:
        assert memory is not None
        R = self.beta[l] * memory + self.gamma[l] * self.attn(l, Z, X, labels_batch_first)
        return self.alpha[l] * R, R
