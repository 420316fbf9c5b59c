"""The config of the real-video data (:class:`VideoDataConfig`), validated on load."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from unrolled.config import Bool, ConfigModel, Int, Str
from unrolled.seeding import derive_seed
from unrolled.tasks.video.mnist import MovingMNISTSpec
from unrolled.tasks.video.sources import _MNIST_SOURCES
from unrolled.validation import check

__all__ = ["VideoDataConfig"]


Positive = Annotated[Int, Field(ge=1)]
Sources = Annotated[tuple[Str, ...], Field(min_length=1)]


class VideoDataConfig(ConfigModel):
    """Real-video data of the video-denoising experiment, split by source video (see docs/DATA_VIDEO.md).

    Sources are registered names (:data:`SOURCES`) or paths (relative ones under ``root``); no source may
    appear on both sides, and Moving MNIST sources on both sides must use disjoint digit rows
    (``moving_mnist:train`` / ``moving_mnist:test``). ``downsample: null`` picks a factor per video with
    :func:`auto_downsample` (short side down to about 4 × ``crop``); an integer applies to every video.
    Train and test sources are weighted equally per source (each source's videos share its weight).
    ``moving_mnist_train_videos`` / ``moving_mnist_test_videos`` are the numbers of videos a Moving MNIST
    source yields on either side.
    """

    kind: Literal["video"] = "video"
    train_sources: Sources = ("bikes", "bigbuckbunny", "moving_mnist:train")
    test_sources: Sources = ("carphone", "moving_mnist:test")
    root: Str | None = None
    frames: Positive = 8
    crop: Positive = 32
    downsample: Positive | None = None
    downsample_mode: Literal["area", "stride"] = "area"
    grayscale: Bool = True
    flip: Bool = False
    train_clips: Positive = 4096
    test_clips: Positive = 512
    max_frames: Int | None = None
    moving_mnist_train_videos: Positive = 256
    moving_mnist_test_videos: Positive = 64
    moving_mnist_frames: Int = 20
    moving_mnist_size: Int = 64
    moving_mnist_digits: Positive = 2
    skip_bad: Bool = False

    MESSAGES: ClassVar[dict[tuple[str, str], str]] = {
        ("train_sources", "too_short"): "must list at least one source",
        ("test_sources", "too_short"): "must list at least one source",
    }

    @model_validator(mode="after")
    def _consistent(self) -> VideoDataConfig:
        if self.max_frames is not None:
            check(
                self.max_frames >= self.frames,
                "max_frames",
                f"must be >= frames ({self.frames}) or null, got {self.max_frames}",
            )
        for side in ("train_sources", "test_sources"):
            sources = getattr(self, side)
            for i, source in enumerate(sources):
                key = f"{side}[{i}]"
                check(bool(source.strip()), key, "must not be empty")
                check(
                    source in _MNIST_SOURCES or not source.startswith("moving_mnist"),
                    key,
                    f"unknown Moving MNIST source {source!r}; one of {', '.join(_MNIST_SOURCES)}",
                )
            check(len(set(sources)) == len(sources), side, f"lists a source twice: {list(sources)}")
        both = sorted(set(self.train_sources) & set(self.test_sources))
        check(not both, "test_sources", f"the split is by source video; {both} also in train_sources")
        train_mnist = {s for s in self.train_sources if s in _MNIST_SOURCES}
        test_mnist = {s for s in self.test_sources if s in _MNIST_SOURCES}
        if train_mnist and test_mnist:
            check(
                "moving_mnist" not in train_mnist | test_mnist,
                "test_sources",
                "'moving_mnist' uses every digit image; with Moving MNIST on both sides use "
                "'moving_mnist:train' and 'moving_mnist:test' (disjoint digit rows)",
            )
        if train_mnist or test_mnist:
            check(
                self.moving_mnist_frames >= self.frames,
                "moving_mnist_frames",
                f"must be >= frames ({self.frames}), got {self.moving_mnist_frames}",
            )
            factor = self.downsample or 1
            check(
                self.moving_mnist_size >= 28 and self.moving_mnist_size // factor >= self.crop,
                "moving_mnist_size",
                f"must be >= 28 and, after downsampling by {factor}, >= crop ({self.crop}); "
                f"got {self.moving_mnist_size}",
            )
        return self

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
