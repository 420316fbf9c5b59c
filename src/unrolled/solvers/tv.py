"""Total-variation video denoising, a classical reference with no training (scikit-image, ``video`` extra).

:func:`tv_denoise` is a thin wrapper of :func:`skimage.restoration.denoise_tv_chambolle` (Chambolle's
projection algorithm for isotropic TV) applied to each clip as one space-time volume ``[T, H, W]`` (channels,
if any, as ``channel_axis``), so the smoothing couples neighbouring frames as well as neighbouring pixels.
Writing TV by hand would only reproduce scikit-image's well-tested solver.

:func:`choose_weight` picks the TV weight for one noise level on validation clips. :class:`TVDenoiser` is
the solver form: its trajectory holds the noisy clip (step 0) and the TV solution (step 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from unrolled.trajectory import Trajectory


def _restoration():  # scikit-image is in the `video` extra: import it only when TV is used
    try:
        from skimage import restoration
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "TV denoising needs scikit-image: pip install 'unrolled[video]' (or make install)"
        ) from exc
    return restoration


def tv_denoise(noisy: Tensor, weight: float) -> Tensor:
    """TV-denoise every clip of ``noisy`` ``[B, T, C, H, W]`` as a space-time volume; same shape and dtype.

    ``weight`` is scikit-image's (larger: smoother); 0 returns the input unchanged.
    """
    if noisy.dim() != 5:
        raise ValueError(f"expected clips [B, T, C, H, W], got shape {tuple(noisy.shape)}")
    if not weight >= 0:
        raise ValueError(f"TV weight must be >= 0, got {weight}")
    if weight == 0:
        return noisy.clone()
    restoration = _restoration()
    volumes = noisy.detach().cpu().double().numpy()
    out = np.empty_like(volumes)
    for i, clip in enumerate(volumes):  # [T, C, H, W]
        if clip.shape[1] == 1:
            out[i, :, 0] = restoration.denoise_tv_chambolle(clip[:, 0], weight=weight)
        else:
            out[i] = restoration.denoise_tv_chambolle(clip, weight=weight, channel_axis=1)
    return torch.from_numpy(out).to(dtype=noisy.dtype, device=noisy.device)


def rmse_255(prediction: Tensor, clean: Tensor) -> float:
    """Root mean squared error on the 0–255 pixel scale, the output clamped to the valid range [0, 1]."""
    return 255.0 * math.sqrt(float(((prediction.clamp(0, 1) - clean) ** 2).mean()))


def choose_weight(
    noisy: Tensor,
    clean: Tensor,
    weights: Sequence[float],
    denoise: Callable[[Tensor, float], Tensor] = tv_denoise,
) -> tuple[float, dict[float, float]]:
    """The weight of ``weights`` with the lowest RMSE on validation clips, and the RMSE of every weight.

    Args:
        noisy, clean: validation clips ``[B, T, C, H, W]`` (never test clips).
        weights: candidate TV weights.

    Returns:
        (best weight, {weight: RMSE on the 0–255 scale}); ties go to the smaller weight.
    """
    if not weights:
        raise ValueError("no TV weights to choose from")
    scores = {float(w): rmse_255(denoise(noisy, float(w)), clean) for w in weights}
    best = min(sorted(scores), key=lambda w: scores[w])
    return best, scores


class TVDenoiser:
    """TV denoising as a solver: ``TVDenoiser(weight)(noisy)`` is the trajectory (noisy clip, TV solution).

    The readout is the identity, so the layerwise losses are the noisy clip's loss and TV's.
    """

    def __init__(self, weight: float) -> None:
        if not weight >= 0:
            raise ValueError(f"TV weight must be >= 0, got {weight}")
        self.weight = float(weight)

    def __call__(self, noisy: Tensor) -> Trajectory:
        return Trajectory((noisy, tv_denoise(noisy, self.weight)), lambda state: state)
