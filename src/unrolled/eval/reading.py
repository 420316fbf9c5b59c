"""Reading a learner's layers as iterations of an optimizer (Fu, Chen, Jia & Sharan 2023).

Two readings of layer l of an in-context learner (:mod:`unrolled.models.icl`):

* the **shared readout**: the model's own final norm and read-out applied to the state (the logit lens);
* a **linear probe**: an affine map from the layer's raw state at the x tokens to y, fitted per layer by least
  squares on held-out prompts (Fu et al. train a read-out on the first l layers of a frozen model,
  ``probing.py``; the least-squares fit is that read-out's optimum).

Then, for each layer and each iteration count k of a classical method, the **similarity of residuals**
(Fu et al.'s ``eval_similarity.py``): per prompt, the cosine between the layer's residuals ŷ_i − y_i and the
method's over the prompt's N predictions, averaged over prompts. The best-matching k of each layer says how
many iterations of that method the layer is "worth".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def probe_features(state: Tensor) -> Tensor:
    """The x-token states of a learner's state ``[B, 2N, D]`` with a constant feature: ``[B, N, D + 1]``."""
    x_tokens = state[:, 0::2].to(torch.float64)
    return torch.cat([x_tokens, torch.ones_like(x_tokens[..., :1])], dim=-1)


def fit_probes(states: Sequence[Tensor], ys: Tensor, ridge: float = 1e-6) -> list[Tensor]:
    """One affine probe per state, fitted on every prediction of held-out prompts.

    Args:
        states: L + 1 states, each ``[B, 2N, D]`` (a learner's trajectory on the fitting prompts).
        ys: the labels ``[B, N]``.
        ridge: λ of the normal equations (FᵀF + λ·tr(FᵀF)/(D + 1) I) c = Fᵀy, for a stable solve.

    Returns:
        L + 1 coefficient vectors ``[D + 1]`` (float64; the last entry the bias).
    """
    y = ys.to(torch.float64).reshape(-1)
    probes = []
    for state in states:
        F = probe_features(state).reshape(-1, state.shape[-1] + 1)
        G = F.T @ F
        G = G + ridge * torch.trace(G) / G.shape[0] * torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
        probes.append(torch.linalg.solve(G, F.T @ y))
    return probes


def probe_predictions(probes: Sequence[Tensor], states: Sequence[Tensor]) -> Tensor:
    """Each probe on its state: ``[L + 1, B, N]`` (float64)."""
    if len(probes) != len(states):
        raise ValueError(f"{len(probes)} probes for {len(states)} states")
    return torch.stack([probe_features(s) @ c for c, s in zip(probes, states, strict=True)])


def residual_similarity(model_residuals: Tensor, method_residuals: Tensor) -> Tensor:
    """Mean over prompts of the cosine between residual vectors: ``[L, B, N]``, ``[K, B, N] -> [L, K]``.

    Row l, column k: (1/B) Σ_b cos(r^model_{l,b}, r^method_{k,b}), the cosine taken over the N predictions of
    prompt b (Fu et al.'s ``get_average_resid_similarity``). A zero residual vector has cosine 0.
    """
    if model_residuals.shape[1:] != method_residuals.shape[1:]:
        raise ValueError(
            f"residuals of different prompts: {list(model_residuals.shape)} and {list(method_residuals.shape)}"
        )
    a = torch.nn.functional.normalize(model_residuals.to(torch.float64), dim=-1)
    b = torch.nn.functional.normalize(method_residuals.to(torch.float64), dim=-1)
    return torch.einsum("lbn,kbn->lk", a, b) / a.shape[1]


def best_matching(similarity: Tensor, counts: Sequence[int]) -> list[int]:
    """For every layer (row of ``similarity [L, K]``), the iteration count whose residuals match it best."""
    if similarity.shape[1] != len(counts):
        raise ValueError(f"{similarity.shape[1]} columns for {len(counts)} iteration counts")
    return [int(counts[j]) for j in similarity.argmax(dim=1).tolist()]
