"""The runner end to end: run folders, resume after interruption, workers, NaN runs, reports, CLI errors."""

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.experiments.tiny import TINY, tiny
from unrolled.cli import main
from unrolled.experiments import RunFolderError, run_experiment, write_report
from unrolled.report import load_run
from unrolled.train.checkpoint import atomic_write_text


def test_run_folder_has_everything_and_numbers_make_sense(tmp_path):
    results = run_experiment(tiny(), tmp_path / "run", progress=False, log=lambda _: None)
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "results.json",
        "report.md",
        "loss_vs_layer.png",
        "training.png",
    ):
        assert (run / name).is_file(), name
    assert len(list((run / "checkpoints").rglob("*.pt"))) == 2 * 2 * 2  # learned methods × seeds × depths
    assert len(list((run / "units").rglob("*.json"))) == 2 * 2 * 2 + 2 * 2
    zero = results["zero_predictor_log_loss"]
    for name, m in results["methods"].items():
        mean = m["test"]["log_loss_mean"]
        assert all(v < zero for v in mean), name  # every method beats predicting 0
        assert mean[1] < mean[0], name  # and improves with depth
        assert "train" in m  # fixed_batch: the in-sample numbers are reported beside
    assert results["headline_split"] == "test" and results["evaluation"] == "held-out prompts"
    assert "tuned" in results["methods"]["nag"]
    report = (run / "report.md").read_text()
    assert "held-out" in report and "— paper" in report and "Tuned step sizes" in report
    # CG on d = 3 with exact arithmetic would be exact at L = 3; at L = 2 it is already far below GD-type methods
    assert (
        results["methods"]["cg"]["test"]["log_loss_mean"][1]
        < results["methods"]["lt"]["test"]["log_loss_mean"][1]
    )
    cfg_saved = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg_saved["task"]["d"] == 3


def test_interrupted_run_resumes_to_identical_results(tmp_path):
    cfg = tiny(**{"train.protocol": "online"})
    ref = run_experiment(cfg, tmp_path / "ref", progress=False)

    def interrupt(unit, step):
        if unit.key == "lt/seed1_L1" and step == 27:  # logged step 25, checkpoint 20
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path / "cut", progress=False, on_step=interrupt)
    assert not (tmp_path / "cut" / "results.json").exists()
    with pytest.raises(RunFolderError, match="pass --resume"):
        run_experiment(cfg, tmp_path / "cut", progress=False)
    messages = []
    resumed = run_experiment(cfg, tmp_path / "cut", resume=True, progress=False, log=messages.append)
    assert any("already done" in m for m in messages)
    assert resumed["methods"] == ref["methods"]

    # metrics hold each logged step exactly once
    def lines(run):
        return sorted((run / "metrics.jsonl").read_text().splitlines())

    assert lines(tmp_path / "cut") == lines(tmp_path / "ref")


def test_resume_refuses_a_different_config(tmp_path):
    run_experiment(tiny(seeds=[0]), tmp_path / "r", progress=False)
    with pytest.raises(RunFolderError, match="differs from the config given"):
        run_experiment(tiny(seeds=[0], **{"train.lr": 0.02}), tmp_path / "r", resume=True, progress=False)


def test_resume_accepts_a_run_written_before_a_field_was_added(tmp_path):
    """A config.yaml without a field added since (here train.report_to, at its default) is the same config."""
    cfg = tiny(seeds=[0], **{"train.steps": 20})
    run_experiment(cfg, tmp_path / "r", progress=False)
    path = tmp_path / "r" / "config.yaml"
    old = yaml.safe_load(path.read_text())
    del old["train"]["report_to"]
    atomic_write_text(path, yaml.safe_dump(old, sort_keys=False))
    (tmp_path / "r" / "results.json").unlink()
    messages = []
    run_experiment(cfg, tmp_path / "r", resume=True, progress=False, log=messages.append)
    assert any("already done" in m for m in messages)
    old["train"]["lr"] = 0.5  # but not one that differs in a value
    atomic_write_text(path, yaml.safe_dump(old, sort_keys=False))
    with pytest.raises(RunFolderError, match="differs from the config given"):
        run_experiment(cfg, tmp_path / "r", resume=True, progress=False)


def test_parallel_workers_give_the_same_results(tmp_path):
    cfg = tiny(seeds=[0], **{"train.steps": 20})
    one = run_experiment(cfg, tmp_path / "one", progress=False)
    two = run_experiment(cfg, tmp_path / "two", progress=False, workers=2)
    assert one["methods"] == two["methods"]


def test_report_rebuilds_from_files_and_overlays(tmp_path, capsys):
    run_experiment(tiny(seeds=[0]), tmp_path / "a", progress=False)
    run_experiment(tiny(seeds=[1], name="other"), tmp_path / "b", progress=False)
    (tmp_path / "a" / "report.md").unlink()
    (tmp_path / "a" / "loss_vs_layer.png").unlink()
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "ov")]) == 0
    assert (tmp_path / "a" / "report.md").exists() and (tmp_path / "a" / "loss_vs_layer.png").exists()
    overlay = (tmp_path / "ov" / "overlay.md").read_text()
    assert "tiny" in overlay and "other" in overlay
    assert (tmp_path / "ov" / "overlay.png").stat().st_size > 1000


def test_report_of_a_broken_folder_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        load_run(tmp_path / "nope")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text("{ truncated")
    with pytest.raises(ValueError, match=r"results\.json: malformed JSON"):
        write_report(tmp_path / "r")
    assert main(["report", str(tmp_path / "r")]) == 2


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_cli_run_and_resume_and_errors(tmp_path, capsys):
    data = json.loads(json.dumps(TINY))
    data["seeds"] = [0]
    cfg = _write(tmp_path, data)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress", "--set", "train.steps=10"]) == 0
    printed = capsys.readouterr().out
    assert "log loss at the query" in printed and str(out) in printed
    assert main(["run", str(cfg), "--out", str(out), "--no-progress", "--set", "train.steps=10"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert (
        main(["run", "--resume", "--out", str(out), "--no-progress", "--workers", "1"]) == 0
    )  # saved config
    assert main(["run", str(cfg), "--set", "task.d=0", "--out", str(tmp_path / "x")]) == 2
    assert "task.d: must be >= 1" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_cli_nan_run_stops_and_names_the_step(tmp_path, capsys):
    data = json.loads(json.dumps(TINY))
    data["seeds"] = [0]
    data["methods"] = [{"name": "lt", "kind": "linear_transformer", "init_std": 1.0}]
    data.pop("published")
    data["train"].update({"optimizer": "sgd", "lr": 1.0e8, "checkpoint_every": 1})
    cfg = _write(tmp_path, data)
    assert main(["run", str(cfg), "--out", str(tmp_path / "nan"), "--no-progress", "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "at step" in err and "method lt, seed 0, depth 1" in err


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("old")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary left behind


def test_cli_lists_configs(capsys):
    assert main(["configs"]) == 0
    assert "demo" in capsys.readouterr().out


def test_cli_refuses_zero_workers(tmp_path, capsys):
    cfg = _write(tmp_path, {**json.loads(json.dumps(TINY)), "seeds": [0]})
    for bad in ("0", "-2", "two"):
        with pytest.raises(SystemExit) as info:
            main(["run", str(cfg), "--out", str(tmp_path / "w"), "--workers", bad])
        assert info.value.code == 2
        assert "--workers" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_a_truncated_checkpoint_on_resume_is_a_clear_error_and_loses_nothing(tmp_path, capsys):
    data = json.loads(json.dumps(TINY))
    data["seeds"] = [0]
    cfg = _write(tmp_path, data)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress", "--workers", "1"]) == 0
    capsys.readouterr()
    (out / "units" / "lt" / "seed0_L2.json").unlink()  # as if killed while writing the unit's checkpoint
    ckpt = out / "checkpoints" / "lt" / "seed0_L2.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code = main(["run", "--resume", "--out", str(out), "--no-progress", "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and f"checkpoint {ckpt} could not be read" in err and "delete it" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing written or lost
    ckpt.unlink()  # what the message says to do: the unit trains again from the start
    assert main(["run", "--resume", "--out", str(out), "--no-progress", "--workers", "1"]) == 0


def test_one_seed_shows_no_spread(tmp_path, capsys):
    data = json.loads(json.dumps(TINY))
    data["seeds"] = [0]
    data["train"]["steps"] = 5
    cfg = _write(tmp_path, data)
    assert main(["run", str(cfg), "--out", str(tmp_path / "one"), "--no-progress", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    tables = [ln for ln in printed.splitlines() if ln.startswith("| ")]
    assert tables and not any("±" in ln for ln in tables)
    report = (tmp_path / "one" / "report.md").read_text()
    assert "± 0.0" not in report and "one seed" in printed


def test_config_names_resolve_from_any_folder(tmp_path, monkeypatch, capsys):
    from unrolled.cli import main
    from unrolled.experiments.config import load_config

    monkeypatch.chdir(tmp_path)  # no ./configs here: the shipped configs answer
    assert load_config("demo", ["seeds=[0]"]).seeds == (0,)
    assert main(["run", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no such config file or config name" in err and "demo" in err
