"""The text family end to end on real posts and the real MiniLM, kept tiny: runs, resume, saved models."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from unrolled.cli import main
from unrolled.config import from_dict
from unrolled.experiments import ExperimentConfig, run_experiment

TINY = {
    "name": "tiny_text",
    "seeds": [0],
    "task": {"kind": "text", "source": "newsgroups", "max_length": 32, "max_examples": 60},
    "train": {"steps": 4, "batch_size": 4, "log_every": 1, "checkpoint_every": 2, "eval_batch_size": 32},
    "perturbation": {"test_gammas": [0.0, 2.1]},
    "methods": [
        {
            "name": "minilm_c",
            "kind": "hf_encoder",
            "model": "minilm",
            "constraints": {"alpha": 0.1, "dual_lr": 1.0},
        },
        {"name": "ut", "kind": "ut", "width": 16, "depth": 2, "heads": 2, "lr": 0.001},
    ],
}


def tiny(**changes) -> ExperimentConfig:
    data = json.loads(json.dumps(TINY))
    data.update(changes)
    return from_dict(ExperimentConfig, data)


@pytest.fixture(scope="module")
def tiny_text_run(tmp_path_factory):
    """One tiny run shared by the tests that only read it (the run itself, and its early exits)."""
    run = tmp_path_factory.mktemp("text") / "run"
    return run, run_experiment(tiny(), run, progress=False, log=lambda _: None)


def test_text_run_reports_accuracy_over_gamma_and_layerwise_losses(tiny_text_run):
    from transformers import AutoModelForSequenceClassification

    run, results = tiny_text_run
    assert results["gammas"] == [0.0, 2.1] and results["data"]["test"] == 12
    for name, depth in (("minilm_c", 6), ("ut", 2)):
        m = results["methods"][name]
        assert all(0.0 <= a <= 1.0 for a in m["accuracy_mean"])
        assert (
            len(m["layer_loss_mean"]["0.0"]) == depth + 1
            and len(m["layer_accuracy_mean"]["2.1"]) == depth + 1
        )
    assert len(results["methods"]["minilm_c"]["multipliers_per_seed"][0]) == 6
    for name in ("report.md", "accuracy_vs_gamma.png", "loss_vs_layer.png", "multipliers.png"):
        assert (run / name).exists(), name
    # the trained classifier is a standard checkpoint, with the label names
    saved = AutoModelForSequenceClassification.from_pretrained(run / "models" / "minilm_c" / "seed0")
    assert set(saved.config.id2label.values()) == {"alt.atheism", "sci.space"}
    assert not (run / "checkpoints" / "minilm_c" / "seed0").exists()  # Trainer checkpoints cleaned


def test_an_interrupted_text_run_resumes_from_the_trainer_checkpoint(tmp_path):
    cfg = tiny(methods=[TINY["methods"][0]])
    ref = run_experiment(cfg, tmp_path / "ref", progress=False, log=lambda _: None)

    def interrupt(unit, step):
        if step == 3:  # after the checkpoint at step 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path / "cut", progress=False, on_step=interrupt, log=lambda _: None)
    assert torch.load(tmp_path / "cut" / "checkpoints" / "minilm_c" / "seed0.pt")["step"] == 2
    resumed = run_experiment(cfg, tmp_path / "cut", resume=True, progress=False, log=lambda _: None)
    a, b = ref["methods"]["minilm_c"], resumed["methods"]["minilm_c"]
    assert a["multipliers_per_seed"][0] == pytest.approx(b["multipliers_per_seed"][0], rel=1e-5)
    assert a["accuracy_mean"] == b["accuracy_mean"]
    for g in ("0.0", "2.1"):
        assert a["layer_loss_mean"][g] == pytest.approx(b["layer_loss_mean"][g], rel=1e-4)


def test_exits_of_a_finished_text_run(tiny_text_run, capsys):
    """``unrolled exits``: the saved classifiers with PABEE, entropy and confidence exits."""
    run, results = tiny_text_run
    assert main(["exits", str(run)]) == 0
    out = json.loads((run / "exits.json").read_text())
    assert set(out["methods"]) == {"minilm_c", "ut"}
    for name, depth in (("minilm_c", 6), ("ut", 2)):
        m = out["methods"][name]
        assert m["depth"] == depth
        # the reloaded model on the clean test texts scores what the run measured at γ = 0
        assert m["full"]["mean"] == pytest.approx(results["methods"][name]["accuracy_mean"][0])
        assert m["fixed"][-1] == pytest.approx(m["full"]["mean"])
        assert set(m["rules"]) == {"patience", "entropy", "confidence"}
        for rule in m["rules"].values():
            assert all(1.0 <= layers <= depth for layers, _ in rule["curve"])
    assert (run / "exit_curves.png").is_file() and "| model |" in capsys.readouterr().out
