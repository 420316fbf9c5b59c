"""Sources: skipping bad files, unknown sources, discovery of user datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tasks.video.conftest import truncate, write_frames, write_video
from unrolled.tasks.video.carriers import DataNotFoundError
from unrolled.tasks.video.decode import VideoDecodeError
from unrolled.tasks.video.sources import discover_videos, load_videos


def test_skip_bad_reports_every_skipped_file(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    write_video(root / "a.avi", frames=4)
    write_video(root / "c.avi", frames=5)
    (root / "b.mp4").write_text("garbage")
    truncate(write_video(tmp_path / "d.avi", frames=40, h=48, w=48), root / "d.avi")
    with pytest.raises(VideoDecodeError) as info:
        load_videos([str(root)])
    assert str(root / "b.mp4") in str(info.value)  # the first bad file in order
    report = load_videos([str(root)], skip_bad=True)
    assert [Path(n).name for n in report.names] == ["a.avi", "c.avi"]
    assert [tuple(v.shape) for _, v in report] == [(4, 16, 24), (5, 16, 24)]
    assert [Path(p).name for p, _ in report.skipped] == ["b.mp4", "d.avi"]
    assert "truncated" in report.skipped[1][1]
    assert report.summary() == "2 videos, 9 frames, 2 skipped"


def test_unknown_source_is_an_error_even_with_skip_bad(tmp_path):
    with pytest.raises(DataNotFoundError, match="did you mean 'bikes'"):
        load_videos(["bikez"], skip_bad=True)
    with pytest.raises(DataNotFoundError, match="no such file or folder"):
        load_videos(["clips/missing.avi"], root=tmp_path)


def test_discover_avenue_ucsd_shanghaitech(tmp_path):
    avenue = tmp_path / "avenue"
    for sub in ("training_videos", "testing_videos"):
        (avenue / sub).mkdir(parents=True)
        for i in (1, 2, 10):
            write_video(avenue / sub / f"{i:02d}.avi", frames=2)
    (avenue / "ground_truth_demo" / "testing_label_mask").mkdir(parents=True)
    (avenue / "ground_truth_demo" / "testing_label_mask" / "1_label.mat").write_bytes(b"\0")
    found = [p.relative_to(avenue).as_posix() for p in discover_videos(avenue)]
    assert found == [f"{s}/{i:02d}.avi" for s in ("testing_videos", "training_videos") for i in (1, 2, 10)]

    ucsd = tmp_path / "UCSDped2"
    for split, name in (("Train", "Train002"), ("Train", "Train010"), ("Test", "Test001")):
        write_frames(ucsd / split / name, count=2, ext=".tif")
    write_frames(ucsd / "Test" / "Test001_gt", count=2, ext=".png")  # masks: skipped
    (ucsd / "Train" / ".DS_Store").write_bytes(b"\0")
    (ucsd / "Train" / "loop").symlink_to(ucsd, target_is_directory=True)  # a cycle is walked once
    found = [p.relative_to(ucsd).as_posix() for p in discover_videos(ucsd)]
    assert found == ["Test/Test001", "Train/Train002", "Train/Train010"]

    shanghai = tmp_path / "shanghaitech"
    (shanghai / "training" / "videos").mkdir(parents=True)
    write_video(shanghai / "training" / "videos" / "01_001.avi", frames=3)
    write_frames(shanghai / "testing" / "frames" / "01_0014", count=3, ext=".jpg")
    write_frames(shanghai / "testing" / "frames" / "01_0015", count=2, ext=".jpg")
    (shanghai / "testing" / "test_frame_mask").mkdir()
    (shanghai / "testing" / "test_frame_mask" / "01_0014.npy").write_bytes(b"\0")
    found = [p.relative_to(shanghai).as_posix() for p in discover_videos(shanghai)]
    assert found == ["testing/frames/01_0014", "testing/frames/01_0015", "training/videos/01_001.avi"]

    report = load_videos(["training/videos", "testing/frames"], root=shanghai)
    assert [tuple(v.shape) for _, v in report] == [(3, 16, 24), (3, 12, 16), (2, 12, 16)]
    assert report.sources == ("training/videos", "testing/frames", "testing/frames")
    with pytest.raises(DataNotFoundError, match="dataset folder not found"):
        discover_videos(tmp_path / "nope")
