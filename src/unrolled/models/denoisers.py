"""Video denoisers whose every layer reads out a clip: space-time patch tokens, a backbone, a shared decoder.

A clip ``[B, T, C, H, W]`` is cut into space-time patches of ``(pt, ph, pw)`` frames × rows × columns
(:func:`patchify`): N = (T/pt)(H/ph)(W/pw) tokens, each the pt·C·ph·pw values of one patch. Then

    Φ_0 = patchify(noisy) E + P                         (linear patch embedding E, learned positions P)
    Φ_1, ..., Φ_L = the backbone's layers               (UnrolledTransformer or TransformerEncoder)
    readout(Φ) = unpatchify(LN(Φ) R + r)                (one linear patch decoder, the same for every Φ_l)

and :meth:`VideoDenoiser.forward` returns the :class:`~unrolled.trajectory.Trajectory` of the token states
``[B, N, D]`` with that readout, so ``trajectory.layerwise_losses(clean, loss=clip_mse)`` gives f_0..f_L. The
trajectory's own loss is that MSE, and it describes the readout as affine, so a constrained objective can read
the intermediate layers out in Gram form (:mod:`unrolled.constrained.gram`).

Design choices:

* **Direct prediction of the clean clip.** The readout is a function of the state alone (no closure over the
  noisy input), so f_l measures what state l knows, and f_0 is the loss of the linear patch autoencoder
  E → R on the noisy clip: what the embedding alone achieves, which the layers then improve on. A residual
  readout (noisy + correction) would start every f_l near the noise level and would need the noisy clip
  inside the readout.
* **Learned positional embedding**, one vector per space-time patch, ~N(0, 0.02²): the token grid is fixed
  by the constructor, so nothing is gained from a fixed (extrapolating) sinusoidal code, and a learned one is
  the simplest that lets attention tell patches apart.
* **LayerNorm in the readout** (``readout_norm=True``, default): the states of different layers (and of the
  two backbones: a residual stream vs σ outputs) live at different scales; normalising each token before the
  shared linear decoder lets one decoder serve all of them. It is the ``ln_f`` before nanoGPT's head, applied
  to every state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from unrolled.constrained.gram import AffineReadout
from unrolled.models.unrolled_transformer import (
    Activation,
    Norm,
    TransformerEncoder,
    UnrolledTransformer,
    UTInit,
    check_tokens,
    init_normal,
)
from unrolled.trajectory import Trajectory

Patch = tuple[int, int, int]
BackboneKind = Literal["ut", "vit"]


def clip_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Per-sample mean squared error, ``[B, ...], [B, ...] -> [B]``: the mean over all but the batch dimension."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
    return ((prediction - target) ** 2).reshape(prediction.shape[0], -1).mean(dim=1)


def _check_patch(patch: Patch) -> Patch:
    if len(patch) != 3 or any(not isinstance(p, int) or p < 1 for p in patch):
        raise ValueError(f"patch must be three positive ints (pt, ph, pw), got {patch!r}")
    return tuple(patch)  # type: ignore[return-value]


def _check_divisible(thw: tuple[int, int, int], patch: Patch) -> None:
    for name, size, p in zip(("frames T", "height H", "width W"), thw, patch, strict=True):
        if size % p != 0:
            raise ValueError(f"{name} = {size} is not divisible by the patch size {p} (patch {patch})")


def patchify(clip: Tensor, patch: Patch) -> Tensor:
    """Space-time patch tokens of a clip: ``[B, T, C, H, W] -> [B, N, pt·C·ph·pw]``.

    Tokens are ordered by (frame block, row block, column block), each a flattened ``[pt, C, ph, pw]`` patch;
    N = (T/pt)(H/ph)(W/pw). :func:`unpatchify` is the exact inverse.
    """
    pt, ph, pw = _check_patch(patch)
    if clip.dim() != 5:
        raise ValueError(f"expected a clip [B, T, C, H, W], got shape {tuple(clip.shape)}")
    B, T, C, H, W = clip.shape
    _check_divisible((T, H, W), (pt, ph, pw))
    x = clip.reshape(B, T // pt, pt, C, H // ph, ph, W // pw, pw)
    x = x.permute(0, 1, 4, 6, 2, 3, 5, 7)  # [B, T/pt, H/ph, W/pw, pt, C, ph, pw]
    return x.reshape(B, (T // pt) * (H // ph) * (W // pw), pt * C * ph * pw)


def unpatchify(tokens: Tensor, patch: Patch, clip_shape: tuple[int, int, int, int]) -> Tensor:
    """The clip of patch tokens: ``[B, N, pt·C·ph·pw] -> [B, T, C, H, W]``, ``clip_shape = (T, C, H, W)``."""
    pt, ph, pw = _check_patch(patch)
    T, C, H, W = clip_shape
    _check_divisible((T, H, W), (pt, ph, pw))
    grid = (T // pt, H // ph, W // pw)
    expected = (grid[0] * grid[1] * grid[2], pt * C * ph * pw)
    if tokens.dim() != 3 or tuple(tokens.shape[1:]) != expected:
        raise ValueError(
            f"tokens for a clip {tuple(clip_shape)} with patch {patch} must be "
            f"[B, {expected[0]}, {expected[1]}], got {tuple(tokens.shape)}"
        )
    B = tokens.shape[0]
    x = tokens.reshape(B, *grid, pt, C, ph, pw).permute(0, 1, 4, 5, 2, 6, 3, 7)  # [B, T/pt, pt, C, H/ph, ...]
    return x.reshape(B, T, C, H, W)


class PatchDecoder(nn.Module):
    """The shared readout: token state ``[B, N, D]`` -> clip ``[B, T, C, H, W]`` (LN, linear, unpatchify).

    Args:
        width: D.
        patch: (pt, ph, pw).
        clip_shape: (T, C, H, W).
        norm: LayerNorm each token before the linear decoder.
    """

    def __init__(
        self, width: int, patch: Patch, clip_shape: tuple[int, int, int, int], norm: bool = True
    ) -> None:
        super().__init__()
        self.width, self.patch = width, _check_patch(patch)
        self.clip_shape: tuple[int, int, int, int] = tuple(clip_shape)  # type: ignore[assignment]
        pt, ph, pw = self.patch
        self.norm = nn.LayerNorm(width) if norm else nn.Identity()
        self.linear = nn.Linear(width, pt * clip_shape[1] * ph * pw)

    def forward(self, state: Tensor) -> Tensor:
        check_tokens(state, self.width)
        return unpatchify(self.linear(self.norm(state)), self.patch, self.clip_shape)

    def affine(self) -> AffineReadout:
        """This readout as an :class:`~unrolled.constrained.gram.AffineReadout` (targets patchified)."""
        norm = self.norm if isinstance(self.norm, nn.LayerNorm) else None
        return AffineReadout(
            self.linear.weight,
            self.linear.bias,
            targets=lambda clip: patchify(clip, self.patch),
            norm_eps=None if norm is None else norm.eps,
            norm_weight=None if norm is None else norm.weight,
            norm_bias=None if norm is None else norm.bias,
        )


def mse_loss_of(readout: Callable[[Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """``(state, clean) -> clip_mse(readout(state), clean)`` ``[B]``: a denoiser trajectory's own loss."""
    return lambda state, clean: clip_mse(readout(state), clean)


class VideoDenoiser(nn.Module):
    """Patch embedding + positions → backbone → shared patch decoder (see the module docstring).

    Args:
        backbone: ``ut`` (:class:`UnrolledTransformer`) or ``vit`` (:class:`TransformerEncoder`).
        frames, channels, height, width: the clip size T, C, H, W the model is built for.
        patch: (pt, ph, pw), dividing (T, H, W).
        width_D: token width D.
        depth: L layers; heads: H (must divide D).
        activation, norm, init: UT only (see :class:`~unrolled.models.unrolled_transformer.UnrolledLayer`).
        init_std: std of the small initial weights of either backbone.
        mlp_ratio: ViT only.
        dropout: backbone dropout (both).
        readout_norm: LayerNorm in the shared readout.
        generator: random generator for the initialisation.

    Init: patch embedding, positions and decoder weights ~ N(0, 0.02²), biases 0; the backbone's its own.
    """

    def __init__(
        self,
        backbone: BackboneKind,
        frames: int,
        channels: int,
        height: int,
        width: int,
        patch: Patch,
        width_D: int,
        depth: int,
        heads: int,
        activation: Activation = "relu",
        norm: Norm = "layer",
        init: UTInit = "identity",
        init_std: float = 0.02,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        readout_norm: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.patch = _check_patch(patch)
        if min(frames, channels, height, width) < 1:
            raise ValueError(f"clip sizes must be >= 1, got T={frames}, C={channels}, H={height}, W={width}")
        _check_divisible((frames, height, width), self.patch)
        self.clip_shape = (frames, channels, height, width)
        pt, ph, pw = self.patch
        self.num_tokens = (frames // pt) * (height // ph) * (width // pw)
        self.patch_dim = pt * channels * ph * pw
        self.width_D = width_D

        self.embed = nn.Linear(self.patch_dim, width_D)
        self.pos = nn.Parameter(torch.zeros(self.num_tokens, width_D))
        if backbone == "ut":
            self.backbone: nn.Module = UnrolledTransformer(
                width_D, depth, heads, activation, norm, dropout, init, init_std, generator
            )
        elif backbone == "vit":
            self.backbone = TransformerEncoder(width_D, depth, heads, mlp_ratio, dropout, init_std, generator)
        else:
            raise ValueError(f"backbone must be 'ut' or 'vit', got {backbone!r}")
        self.readout = PatchDecoder(width_D, self.patch, self.clip_shape, readout_norm)
        for p in (self.embed.weight, self.pos, self.readout.linear.weight):
            init_normal(p, 0.02, generator)
        nn.init.zeros_(self.embed.bias)
        nn.init.zeros_(self.readout.linear.bias)

    @property
    def depth(self) -> int:
        """Number of backbone layers L."""
        return self.backbone.depth

    @property
    def layers(self) -> nn.ModuleList:
        """The backbone's L layers (UT layers or ViT blocks), each mapping Φ_{l−1} to Φ_l."""
        backbone = self.backbone
        return backbone.layers if isinstance(backbone, UnrolledTransformer) else backbone.blocks  # type: ignore[return-value]

    def embed_clip(self, noisy: Tensor) -> Tensor:
        """Φ_0 = patchify(noisy) E + P: ``[B, T, C, H, W] -> [B, N, D]``."""
        if noisy.dim() != 5:
            raise ValueError(f"expected a clip [B, T, C, H, W], got shape {tuple(noisy.shape)}")
        T, C, H, W = self.clip_shape
        if noisy.shape[2] != C:
            raise ValueError(
                f"model built for {C} channel(s), got a clip with {noisy.shape[2]}: {tuple(noisy.shape)}"
            )
        if tuple(noisy.shape[1:]) != self.clip_shape:
            raise ValueError(f"model built for clips [B, {T}, {C}, {H}, {W}], got {tuple(noisy.shape)}")
        return self.embed(patchify(noisy, self.patch)) + self.pos

    def forward(self, noisy: Tensor) -> Trajectory:
        """Token states Φ_0..Φ_L ``[B, N, D]`` of a noisy clip ``[B, T, C, H, W]``, the shared readout, its
        MSE as the trajectory's own loss, and the readout described as affine."""
        states = self.backbone(self.embed_clip(noisy))
        return Trajectory(states, self.readout, mse_loss_of(self.readout), self.readout.affine())
