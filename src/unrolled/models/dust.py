"""DUST: a deep-unfolded sparse-coding transformer for video (De Weerdt, Eldar & Deligiannis, IEEE TSP 72, 2024).

Every frame patch y_n (``[p]``, the pixels of one space-time patch, :func:`~unrolled.models.denoisers.patchify`)
is modelled as y_n ≈ D s_n + b with a sparse code s_n ∈ R^K in a learned dictionary D ∈ R^{p×K}, and the
codes of the same place in different frames are correlated. The problem

    min_S  Σ_n ½‖y_n − D s_n − b‖²  +  Σ_n ‖θ ⊙ s_n‖₁  +  Σ_n ½‖√β ⊙ (s_n − Σ_m A_nm s_m)‖²

(A: attention weights across the frames at one location, held fixed within a step) has the proximal-gradient
step that one DUST layer unfolds, with its own step η_l, thresholds θ_l ≥ 0, temporal weight β_l ∈ R^K and
attention A_l(S) = softmax((S W_q,l)(S W_k,l)ᵀ/√d) per head:

    S_l = soft_{θ_l}( S_{l−1} + η_l (Y − S_{l−1} Dᵀ − b) D  +  β_l ⊙ (A_l(S_{l−1}) S_{l−1} − S_{l−1}) )

    soft_θ(v) = sign(v) · max(|v| − θ, 0)                    (the prox of θ|·|: the activation)
    readout(S) = unpatchify(S Dᵀ + b)                        (the dictionary synthesis, shared by all layers)

S_0 = 0, so f_0 is the loss of the mean patch b alone. With θ = 0 and no attention, a layer is one gradient
step on ½‖Y − S Dᵀ − b‖² (``tests/test_dust.py`` checks both this and the soft-threshold's closed form).

Where the published description left a choice (only the abstract was reachable from here; docs/MODELS.md
lists them): the dictionary D is tied across layers (it is the readout), η_l is a scalar, θ_l and β_l are
per code entry; attention runs across frames at each spatial patch location (the "correlated over time" term)
with heads splitting the K code entries and no value projection (its values are the codes themselves, so the
temporal term stays a convex combination of codes); β_l starts at 0 (the model starts as ISTA in D).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from unrolled.constrained.gram import AffineReadout
from unrolled.models.denoisers import (
    Patch,
    _check_divisible,
    _check_patch,
    mse_loss_of,
    patchify,
    unpatchify,
)
from unrolled.trajectory import Trajectory


def soft_threshold(v: Tensor, theta: Tensor | float) -> Tensor:
    """soft_θ(v) = sign(v)·max(|v| − θ, 0), elementwise (θ ≥ 0 broadcasts over ``v``'s last dims)."""
    return torch.sign(v) * F.relu(v.abs() - theta)


class TemporalAttention(nn.Module):
    """Softmax attention across frames at each spatial location: codes ``[B, T', P, K] -> [B, T', P, K]``.

    Head h mixes code entries ``h·K/H .. (h+1)·K/H − 1`` of the frames with weights
    softmax((S W_q,h)(S W_k,h)ᵀ/√d) (queries and keys of ``key_dim`` = d entries per head); the values are
    the codes themselves (see the module docstring). The T' × T' weights are formed directly: with a handful
    of frames per sequence this is faster on the CPU than a fused attention kernel.
    """

    def __init__(
        self, codes: int, heads: int, key_dim: int = 8, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        if codes % heads != 0:
            raise ValueError(f"heads must divide the code size: K={codes} is not a multiple of heads={heads}")
        self.heads, self.key_dim = heads, key_dim
        self.qk = nn.Linear(codes, 2 * heads * key_dim, bias=False)
        with torch.no_grad():
            self.qk.weight.copy_(torch.randn(self.qk.weight.shape, generator=generator) / math.sqrt(codes))

    def weights(self, s: Tensor) -> Tensor:
        """The attention weights ``[B, P, H, T', T']`` (rows sum to 1) of codes ``[B, T', P, K]``."""
        B, T, P, _ = s.shape
        q, k = self.qk(s).reshape(B, T, P, 2, self.heads, self.key_dim).permute(3, 0, 2, 4, 1, 5)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.key_dim)
        # softmax written out: torch.softmax over a last dimension of a few entries is ~6× slower on the CPU
        e = (scores - scores.amax(dim=-1, keepdim=True).detach()).exp()
        return e / e.sum(dim=-1, keepdim=True)

    def forward(self, s: Tensor) -> Tensor:
        B, T, P, K = s.shape
        H = self.heads
        values = s.reshape(B, T, P, H, K // H).permute(0, 2, 3, 1, 4)  # [B, P, H, T', K/H]
        mixed = self.weights(s) @ values
        return mixed.permute(0, 3, 1, 2, 4).reshape(B, T, P, K)


class DUSTLayer(nn.Module):
    """One unfolded proximal-gradient step (the module docstring's S_{l−1} -> S_l), codes ``[B, T', P, K]``.

    Args:
        codes: K; heads: attention heads (dividing K); attention: False drops the temporal term.
        step: the initial η_l; threshold: the initial θ_l (every entry).
    """

    def __init__(
        self,
        codes: int,
        heads: int,
        step: float,
        threshold: float,
        attention: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.step = nn.Parameter(torch.tensor(float(step)))
        self.threshold = nn.Parameter(torch.full((codes,), float(threshold)))
        self.attention = TemporalAttention(codes, heads, generator=generator) if attention else None
        self.beta = nn.Parameter(torch.zeros(codes)) if attention else None

    def forward(self, s: Tensor, y: Tensor, dictionary: nn.Linear) -> Tensor:
        """``s`` ``[B, T', P, K]``, ``y`` ``[B, T', P, p]`` -> the next codes ``[B, T', P, K]``."""
        residual = y - dictionary(s)  # Y − S Dᵀ − b
        v = s + self.step * (residual @ dictionary.weight)  # + η (Y − S Dᵀ − b) D
        if self.attention is not None:
            v = v + self.beta * (self.attention(s) - s)
        return soft_threshold(v, F.relu(self.threshold))


class DUSTDenoiser(nn.Module):
    """DUST for clips ``[B, T, C, H, W]``: patch tokens, L unfolded layers, the dictionary as shared readout.

    Args:
        frames, channels, height, width: the clip size the model is built for.
        patch: (pt, ph, pw); a frame block of pt frames is one "frame" of the temporal attention.
        codes: K, the dictionary size (the model's width).
        depth: L; heads: attention heads (dividing K).
        attention: the temporal term (False: plain learned ISTA, LISTA with a tied dictionary).
        threshold: the initial θ of every layer.
        generator: random generator for the initialisation.

    Init: D has unit-norm Gaussian atoms, b = 0.5 (mid-grey), η_l = 1/‖D‖₂² (the ISTA step), β_l = 0.
    """

    def __init__(
        self,
        frames: int,
        channels: int,
        height: int,
        width: int,
        patch: Patch,
        codes: int,
        depth: int,
        heads: int = 1,
        attention: bool = True,
        threshold: float = 0.01,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.patch = _check_patch(patch)
        if min(frames, channels, height, width, codes, depth, heads) < 1:
            raise ValueError(
                f"sizes must be >= 1: T={frames}, C={channels}, H={height}, W={width}, K={codes}, "
                f"depth={depth}, heads={heads}"
            )
        _check_divisible((frames, height, width), self.patch)
        self.clip_shape = (frames, channels, height, width)
        pt, ph, pw = self.patch
        self.frame_blocks = frames // pt
        self.locations = (height // ph) * (width // pw)
        self.patch_dim = pt * channels * ph * pw
        self.codes = codes
        self.dictionary = nn.Linear(codes, self.patch_dim)  # D (weight [p, K]) and b: the readout
        with torch.no_grad():
            atoms = torch.randn(self.patch_dim, codes, generator=generator)
            self.dictionary.weight.copy_(atoms / atoms.norm(dim=0, keepdim=True))
            self.dictionary.bias.fill_(0.5)
            step = 1.0 / float(torch.linalg.matrix_norm(self.dictionary.weight, ord=2)) ** 2
        self.layers = nn.ModuleList(
            DUSTLayer(codes, heads, step, threshold, attention, generator) for _ in range(depth)
        )

    @property
    def depth(self) -> int:
        return len(self.layers)

    def _grid(self, tokens: Tensor) -> Tensor:
        """``[B, N, d] -> [B, T', P, d]`` (patchify orders tokens frame block first)."""
        return tokens.reshape(tokens.shape[0], self.frame_blocks, self.locations, tokens.shape[-1])

    def readout(self, s: Tensor) -> Tensor:
        """The clip of codes: ``[B, T', P, K] -> [B, T, C, H, W]`` (unpatchify(S Dᵀ + b))."""
        patches = self.dictionary(s).reshape(s.shape[0], -1, self.patch_dim)
        return unpatchify(patches, self.patch, self.clip_shape)

    def forward(self, noisy: Tensor) -> Trajectory:
        """Codes S_0 = 0, S_1..S_L ``[B, T', P, K]`` of a noisy clip ``[B, T, C, H, W]``, the readout, its MSE
        as the trajectory's own loss, and the readout described as affine (the dictionary)."""
        if noisy.dim() != 5 or tuple(noisy.shape[1:]) != self.clip_shape:
            raise ValueError(
                f"model built for clips [B, {', '.join(map(str, self.clip_shape))}], got {tuple(noisy.shape)}"
            )
        y = self._grid(patchify(noisy, self.patch))
        states = [y.new_zeros(*y.shape[:3], self.codes)]
        for layer in self.layers:
            states.append(layer(states[-1], y, self.dictionary))
        affine = AffineReadout(
            self.dictionary.weight,
            self.dictionary.bias,
            targets=lambda clip: patchify(clip, self.patch),
            tokens=lambda s: s.reshape(s.shape[0], -1, s.shape[-1]),
        )
        return Trajectory(tuple(states), self.readout, mse_loss_of(self.readout), affine)
