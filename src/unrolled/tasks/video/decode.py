"""Decoding with PyAV: a video file or a folder of frame images to a uint8 tensor, and integer downsampling.

PyAV (the ``video`` extra) is imported inside the functions, so that the core install does not need it. A
video is uint8 ``[F, H, W]`` (grayscale, FFmpeg's full-range luma) or ``[F, H, W, 3]`` (RGB). Every failure
is a :class:`VideoDecodeError` that names the file and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "AUTO_SHORT_SIDE_CROPS",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "VideoDecodeError",
    "auto_downsample",
    "downsample_video",
    "read_frame_folder",
    "read_video",
]


class VideoDecodeError(ValueError):
    """A video file or frame image could not be decoded.

    Attributes:
        path: the file (or frame folder) at fault.
        reason: what went wrong, without the path.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across DataLoader workers
        return (type(self), (self.path, self.reason))


VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".avi",
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
)
"""Suffixes (lower case) that :func:`discover_videos` and :func:`load_videos` treat as video files."""

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
"""Suffixes (lower case) of frame images in a frame folder."""

AUTO_SHORT_SIDE_CROPS = 4
"""Automatic downsampling brings a video's short side down to about this many crop sizes (never below)."""


def _import_av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise ImportError(
            "decoding video needs PyAV: pip install 'unrolled[video]' (or pip install av==18.1.0)"
        ) from exc
    return av


def _natural_key(text: str) -> tuple[Any, ...]:
    """Sort key that orders digit runs by value: ``frame2`` before ``frame10``."""
    parts = re.split(r"(\d+)", text)
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts))


def _path_key(path: Path, root: Path) -> tuple[Any, ...]:
    rel = path.relative_to(root) if path != root else Path()
    return tuple(_natural_key(part) for part in rel.parts)


def auto_downsample(height: int, width: int, crop: int, short_side_crops: int = AUTO_SHORT_SIDE_CROPS) -> int:
    """The integer factor that brings the short side down to about ``short_side_crops × crop`` (never below).

    ``max(1, min(H, W) // (short_side_crops · crop))``: with crop 32, bikes (272×640) gets 2 (136×320),
    bigbuckbunny (720×1280) 5 (144×256), carphone (144×176) and 64×64 Moving MNIST 1.
    """
    if crop < 1 or short_side_crops < 1:
        raise ValueError(f"crop and short_side_crops must be >= 1, got {crop} and {short_side_crops}")
    return max(1, min(height, width) // (short_side_crops * crop))


def downsample_video(frames: Tensor, factor: int, mode: Literal["area", "stride"] = "area") -> Tensor:
    """Shrink every frame by an integer ``factor`` (uint8 in, uint8 out).

    Args:
        frames: uint8 ``[F, H, W]`` or ``[F, H, W, 3]``.
        factor: k >= 1; the output is ``[F, H // k, W // k(, 3)]`` (a remainder of rows / columns is dropped).
        mode: ``"area"`` averages k×k blocks (rounded to the nearest integer, halves up); ``"stride"``
            keeps every k-th pixel (aliases, but keeps original pixel values).

    Returns:
        A new contiguous uint8 tensor (``frames`` itself when ``factor`` is 1).
    """
    if factor < 1:
        raise ValueError(f"downsample factor must be >= 1, got {factor}")
    if frames.dtype != torch.uint8 or frames.ndim not in (3, 4):
        raise ValueError(f"expected uint8 [F, H, W] or [F, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    if factor == 1:
        return frames
    F, H, W = frames.shape[:3]
    h, w = H // factor, W // factor
    if h < 1 or w < 1:
        raise ValueError(f"a {H}×{W} frame is too small to downsample by {factor}")
    if mode == "stride":
        return frames[:, : h * factor : factor, : w * factor : factor].contiguous()
    if mode != "area":
        raise ValueError(f"downsample mode must be 'area' or 'stride', got {mode!r}")
    # numpy on purpose: torch's parallel reductions can stall for milliseconds per call on small VMs
    c = frames.shape[3] if frames.ndim == 4 else 1
    src = frames.cpu().numpy()
    out = np.empty((F, h, w, *frames.shape[3:]), dtype=np.uint8)
    k2 = factor * factor
    acc_type = np.uint16 if 255 * k2 + k2 // 2 <= np.iinfo(np.uint16).max else np.uint32
    chunk = max(1, (1 << 22) // (H * W * c))  # ~4M values at a time keeps the buffers small
    for s in range(0, F, chunk):
        x = src[s : s + chunk, : h * factor, : w * factor]
        n = x.shape[0]
        x = x.reshape(n, h, factor, w * factor * c)
        rows = x[:, :, 0].astype(acc_type)  # sum k rows, then k columns, by strided adds
        for j in range(1, factor):
            rows += x[:, :, j]
        rows = rows.reshape(n, h, w, factor * c)
        total = rows[..., :c].copy()
        for j in range(1, factor):
            total += rows[..., j * c : (j + 1) * c]
        total += k2 // 2
        total //= k2
        out[s : s + chunk] = total.reshape(out[s : s + chunk].shape)
    return torch.from_numpy(out)


Downsample = int | Callable[[int, int], int]
"""A fixed factor, or a function of the frame size ``(H, W)`` returning one (see :func:`auto_downsample`)."""


def _resolve_factor(downsample: Downsample, height: int, width: int, where: str | Path) -> int:
    factor = downsample(height, width) if callable(downsample) else downsample
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"{where}: downsample factor must be an integer >= 1, got {factor!r}")
    if height // factor < 1 or width // factor < 1:
        raise ValueError(f"{where}: a {height}×{width} frame is too small to downsample by {factor}")
    return factor


def _check_max_frames(max_frames: int | None) -> None:
    if max_frames is not None and (isinstance(max_frames, bool) or max_frames < 1):
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames!r}")


def _declared_frames(stream: Any, container: Any) -> int | None:
    """The frame count the file's header promises, if it promises one (frames, else duration × rate)."""
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        return None
    if stream.duration and stream.time_base:
        return round(float(stream.duration * stream.time_base * rate))
    if container.duration:  # in AV_TIME_BASE (microseconds)
        return round(container.duration / 1_000_000 * float(rate))
    return None


def read_video(
    path: str | Path,
    grayscale: bool = True,
    max_frames: int | None = None,
    downsample: Downsample = 1,
    downsample_mode: Literal["area", "stride"] = "area",
) -> Tensor:
    """Decode the first video stream of a file with PyAV.

    Args:
        path: a video file (anything FFmpeg reads: mp4, avi, mkv, ...).
        grayscale: luma only (FFmpeg's ``gray``: full range 0–255) instead of RGB.
        max_frames: stop after this many frames (``None``: all).
        downsample: shrink each frame as it is decoded (see :func:`downsample_video`), so a large video never
            sits in memory at full size; a callable gets the first frame's ``(H, W)`` and returns the factor.
        downsample_mode: ``"area"`` or ``"stride"``.

    Returns:
        uint8 ``[F, H, W]`` (grayscale) or ``[F, H, W, 3]`` (RGB).

    Raises:
        VideoDecodeError: the file is missing, not a video, has no video stream or no frames, fails to
            decode, changes frame size, or is truncated: it yields fewer frames than its header declares
            (frame count, else duration × frame rate), by more than one frame and 2%; not checked when
            ``max_frames`` stops the decoding early. The message names the file and the reason.
        ImportError: PyAV is not installed.
    """
    av = _import_av()
    _check_max_frames(max_frames)
    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(path, "file not found" if not path.exists() else "not a file")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(path, f"cannot be opened as a video ({type(exc).__name__}: {exc})") from exc
    out: list[Tensor] = []
    try:
        if not container.streams.video:
            raise VideoDecodeError(path, "has no video stream (not a video, or truncated before its header)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fmt = "gray" if grayscale else "rgb24"
        size: tuple[int, int] | None = None
        factor = 1
        stopped_early = False
        try:
            for frame in container.decode(stream):
                if size is None:
                    size = (frame.height, frame.width)
                    factor = _resolve_factor(downsample, frame.height, frame.width, path)
                elif (frame.height, frame.width) != size:
                    raise VideoDecodeError(
                        path,
                        f"frame size changes from {size[0]}×{size[1]} to {frame.height}×{frame.width} "
                        f"at frame {len(out)}",
                    )
                image = torch.from_numpy(frame.to_ndarray(format=fmt))
                out.append(downsample_video(image.unsqueeze(0), factor, downsample_mode)[0])
                if max_frames is not None and len(out) >= max_frames:
                    stopped_early = True
                    break
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(
                path,
                f"decoding failed after {len(out)} frames, the file may be truncated or corrupt "
                f"({type(exc).__name__}: {exc})",
            ) from exc
        if not out:
            raise VideoDecodeError(
                path, "contains no video frames (empty, or truncated before the first one)"
            )
        declared = _declared_frames(stream, container)
        if not stopped_early and declared is not None and declared - len(out) > max(1, declared // 50):
            raise VideoDecodeError(
                path, f"truncated: decoded {len(out)} frames of the {declared} its header declares"
            )
    finally:
        container.close()
    return torch.stack(out)


def _decode_image(av: Any, path: Path, fmt: str) -> np.ndarray:
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "not an image (no video stream)")
            for frame in container.decode(video=0):
                return frame.to_ndarray(format=fmt)
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(path, f"cannot be decoded as an image ({type(exc).__name__}: {exc})") from exc
    raise VideoDecodeError(path, "image file holds no picture (empty or truncated)")


def _frame_files(folder: Path) -> list[Path]:
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return sorted(files, key=lambda p: _natural_key(p.name))


def read_frame_folder(
    folder: str | Path,
    grayscale: bool = True,
    max_frames: int | None = None,
    downsample: Downsample = 1,
    downsample_mode: Literal["area", "stride"] = "area",
) -> Tensor:
    """Decode a folder of frame images (one video), in natural name order (``frame2`` before ``frame10``).

    Images are the files with a suffix in :data:`IMAGE_EXTENSIONS` directly inside ``folder`` (hidden
    files are ignored); each is decoded with PyAV, so no Pillow is needed.

    Args:
        folder: the frame folder.
        grayscale, max_frames, downsample, downsample_mode: as for :func:`read_video`.

    Returns:
        uint8 ``[F, H, W]`` (grayscale) or ``[F, H, W, 3]`` (RGB).

    Raises:
        VideoDecodeError: the folder is missing or has no images (names the folder), or an image does not
            decode or differs in size from the first (names the image).
    """
    av = _import_av()
    _check_max_frames(max_frames)
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoDecodeError(folder, "frame folder not found")
    files = _frame_files(folder)
    if not files:
        raise VideoDecodeError(folder, f"no frame images ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
    if max_frames is not None:
        files = files[:max_frames]
    fmt = "gray" if grayscale else "rgb24"
    out: list[Tensor] = []
    size: tuple[int, int] | None = None
    factor = 1
    for file in files:
        image = _decode_image(av, file, fmt)
        if size is None:
            size = image.shape[:2]
            factor = _resolve_factor(downsample, size[0], size[1], folder)
        elif image.shape[:2] != size:
            raise VideoDecodeError(
                file, f"is {image.shape[0]}×{image.shape[1]}, the folder's first frame {size[0]}×{size[1]}"
            )
        out.append(downsample_video(torch.from_numpy(image).unsqueeze(0), factor, downsample_mode)[0])
    return torch.stack(out)
