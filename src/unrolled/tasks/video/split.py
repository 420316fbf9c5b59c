"""The split by source video: train and test :class:`ClipDataset` from a :class:`VideoDataConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from unrolled.seeding import derive_seed
from unrolled.tasks.video.carriers import DataNotFoundError
from unrolled.tasks.video.clips import ClipDataset
from unrolled.tasks.video.config import VideoDataConfig
from unrolled.tasks.video.decode import Downsample, auto_downsample
from unrolled.tasks.video.sources import LoadReport, load_videos

__all__ = ["VideoSplit", "source_weights", "split_by_video"]


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


def source_weights(report: LoadReport) -> list[float]:
    """Equal weight per source; the videos of one source share it equally."""
    counts = {source: report.sources.count(source) for source in set(report.sources)}
    return [1.0 / counts[source] for source in report.sources]


def split_by_video(config: VideoDataConfig | None = None, seed: int = 0) -> VideoSplit:
    """Load both source lists once and build the train and test :class:`ClipDataset`.

    The split is by source video: no file (after resolving paths) and no Moving MNIST digit row is on
    both sides. Train clips are drawn with ``derive_seed(seed, "train")``, test clips with
    ``derive_seed(seed, "test")``; each source gets an equal share of the clips.

    Raises:
        ValueError: the same video file is reached from both sides.
        DataNotFoundError, VideoDecodeError: as for :func:`load_videos`.
    """
    cfg = config or VideoDataConfig()
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
            weights=source_weights(report),
        )
    return VideoSplit(datasets["train"], datasets["test"], reports["train"], reports["test"])
