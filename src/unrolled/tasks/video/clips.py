"""Clip sampling: random space-time crops of decoded videos, fixed by ``(seed, epoch, index)`` alone."""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from unrolled.seeding import derive_seed
from unrolled.tasks.video.decode import downsample_video
from unrolled.tasks.video.sources import LoadReport

__all__ = ["ClipDataset", "ClipInfo"]


@dataclass(frozen=True)
class ClipInfo:
    """Where item i of a :class:`ClipDataset` comes from.

    Attributes:
        video: index of the video; start, top, left: first frame and top-left corner of the crop;
        flipped: whether the clip is mirrored left–right.
    """

    video: int
    start: int
    top: int
    left: int
    flipped: bool


class ClipDataset(Dataset[Tensor]):
    """Random space-time crops of a fixed list of videos, deterministic per ``(seed, epoch, index)``.

    Item i picks a video (with probability proportional to ``weights``; default uniform over videos), a
    start frame, a crop position and (with ``flip``) a left–right mirror, all from a generator seeded with
    ``derive_seed(seed, "clip", epoch, i)``: the same item always gives the same clip, whatever the worker
    count or order. :meth:`set_epoch` moves to fresh clips.

    Args:
        videos: uint8 ``[F, H, W]`` (grayscale) or ``[F, H, W, 3]`` (RGB) tensors, all of one kind; or
            ``(name, frames)`` pairs, e.g. a :class:`LoadReport`. Kept in memory, not copied unless
            downsampled.
        frames: clip length T.
        crop: clip side S.
        clips: ``len(dataset)``, the clips per epoch.
        seed: the data seed.
        downsample: integer factor applied to every video once, here (not per item), or one per video.
        downsample_mode: ``"area"`` (k×k block means) or ``"stride"`` (every k-th pixel).
        flip: random horizontal flips (augmentation; off by default).
        weights: sampling weight per video (non-negative, not all zero).
        names: names of the videos for error messages (default: from the pairs, else ``video 0``, ...).

    Items are float32 ``[T, C, S, S]`` in [0, 1], C = 1 (grayscale) or 3 (RGB).

    Raises:
        ValueError: bad arguments; a video that is shorter than T frames or smaller than S pixels (after
            downsampling) is named in the message.
    """

    def __init__(
        self,
        videos: Sequence[Tensor] | Sequence[tuple[str, Tensor]] | LoadReport,
        frames: int = 8,
        crop: int = 32,
        clips: int = 4096,
        seed: int = 0,
        *,
        downsample: int | Sequence[int] = 1,
        downsample_mode: Literal["area", "stride"] = "area",
        flip: bool = False,
        weights: Sequence[float] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        items = list(videos)
        if not items:
            raise ValueError("ClipDataset needs at least one video")
        pairs = [item if isinstance(item, tuple) else (None, item) for item in items]
        if names is None:
            names = [n if n is not None else f"video {i}" for i, (n, _) in enumerate(pairs)]
        elif len(names) != len(pairs):
            raise ValueError(f"got {len(names)} names for {len(pairs)} videos")
        for key, value in (("frames", frames), ("crop", crop), ("clips", clips)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
        factors = [downsample] * len(pairs) if isinstance(downsample, int) else list(downsample)
        if len(factors) != len(pairs):
            raise ValueError(f"got {len(factors)} downsample factors for {len(pairs)} videos")
        self.frames, self.crop, self.clips, self.seed, self.flip = frames, crop, clips, seed, flip
        self.epoch = 0
        self.names = list(names)
        self.videos: list[Tensor] = []
        channels: int | None = None
        for name, (_, video), factor in zip(self.names, pairs, factors, strict=True):
            if not isinstance(video, Tensor) or video.dtype != torch.uint8:
                got = video.dtype if isinstance(video, Tensor) else type(video).__name__
                raise ValueError(f"video {name!r}: expected a uint8 tensor, got {got}")
            if not (video.ndim == 3 or (video.ndim == 4 and video.shape[-1] == 3)):
                raise ValueError(
                    f"video {name!r}: expected [F, H, W] or [F, H, W, 3], got {list(video.shape)}"
                )
            c = 1 if video.ndim == 3 else 3
            if channels is not None and c != channels:
                raise ValueError(
                    f"video {name!r} has {c} channel(s) but {self.names[0]!r} has {channels}: "
                    "gray and RGB videos cannot be mixed"
                )
            channels = c
            try:
                video = downsample_video(video, factor, downsample_mode)
            except ValueError as exc:
                raise ValueError(f"video {name!r}: {exc}") from exc
            length, height, width = video.shape[:3]
            after = f" after downsampling by {factor}" if factor > 1 else ""
            if length < frames:
                raise ValueError(
                    f"video {name!r} has {length} frames, fewer than the clip length frames={frames}"
                )
            if height < crop or width < crop:
                raise ValueError(
                    f"video {name!r} is {height}×{width}{after}: the crop {crop}×{crop} does not fit"
                )
            self.videos.append(video.contiguous())
        assert channels is not None
        self.channels = channels
        if weights is None:
            weights = [1.0] * len(self.videos)
        if len(weights) != len(self.videos):
            raise ValueError(f"got {len(weights)} weights for {len(self.videos)} videos")
        w = [float(x) for x in weights]
        if any(not math.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
            raise ValueError("weights must be finite, >= 0 and not all zero")
        total = sum(w)
        self.weights = [x / total for x in w]
        self._cumulative = np.cumsum(self.weights).tolist()

    def __len__(self) -> int:
        return self.clips

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh set of clips (item i depends on ``(seed, epoch, i)``); call before each epoch."""
        self.epoch = epoch

    def clip_info(self, index: int) -> ClipInfo:
        """Video, start frame, crop corner and flip of item ``index``."""
        index = operator.index(index)  # a tensor index would change the seed's text
        if not 0 <= index < self.clips:
            raise IndexError(f"clip index {index} out of range for {self.clips} clips")
        g = torch.Generator().manual_seed(derive_seed(self.seed, "clip", self.epoch, index))
        u = torch.rand(5, generator=g, dtype=torch.float64).tolist()
        v = min(bisect.bisect_right(self._cumulative, u[0]), len(self.videos) - 1)
        while self.weights[v] == 0:  # only reachable through float round-off at a zero-weight boundary
            v -= 1
        F, H, W = self.videos[v].shape[:3]
        start = int(u[1] * (F - self.frames + 1))
        top = int(u[2] * (H - self.crop + 1))
        left = int(u[3] * (W - self.crop + 1))
        return ClipInfo(v, start, top, left, self.flip and u[4] < 0.5)

    def __getitem__(self, index: int) -> Tensor:
        """Float32 ``[T, C, S, S]`` in [0, 1]."""
        info = self.clip_info(index)
        T, S = self.frames, self.crop
        clip = self.videos[info.video][
            info.start : info.start + T, info.top : info.top + S, info.left : info.left + S
        ]
        clip = clip.unsqueeze(1) if clip.ndim == 3 else clip.permute(0, 3, 1, 2)
        if info.flipped:
            clip = clip.flip(-1)
        return clip.to(torch.float32).div_(255.0)

    def memory_bytes(self) -> int:
        """Bytes held by the decoded uint8 videos."""
        return sum(v.numel() for v in self.videos)
