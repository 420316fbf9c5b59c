"""``unrolled exits`` on a finished in-context run: curves, calibrated exits and CG stopped on its residual."""

from __future__ import annotations

import json

import pytest

from unrolled.cli import main
from unrolled.experiments import run_experiment

from .test_icl_family import tiny

pytest.importorskip("transformers")


def test_exits_of_a_finished_icl_run(tmp_path, capsys):
    run = tmp_path / "run"
    results = run_experiment(tiny(seeds=[0]), run, progress=False, log=lambda _m: None)
    assert main(["exits", str(run), "--samples", "120", "--budget", "0.05"]) == 0  # 120: the run's test split
    out = json.loads((run / "exits.json").read_text())
    assert set(out["methods"]) == {"erm", "con", "ut"}
    for name, m in out["methods"].items():
        # the full model's error on the run's own test prompts is what the run itself measured
        own = results["learners"][name]["splits"]["test"]["last"]["mean"]
        assert m["full"]["mean"] == pytest.approx(own, rel=1e-5)
        assert m["fixed"][-1] == pytest.approx(m["full"]["mean"], rel=1e-6)  # truncated after L: the model
        layers = m["small_step"]["mean_layers"]
        assert all(1.0 <= v <= m["depth"] for v in layers)
        assert layers == sorted(layers, reverse=True)  # a looser tolerance never runs more layers
        assert m["calibrated"]["seeds"] == 1 and m["per_seed"][0]["timing"]["exit_seconds"] > 0
    cg = out["cg"]
    assert cg["error"][cg["tol"].index(1e-8)] < 1e-10  # noiseless, n = 6 > d = 3: CG solves it exactly
    assert max(cg["iterations"]) <= 2 * 3
    assert (run / "exits.md").is_file() and "| learner |" in capsys.readouterr().out


def test_exits_name_what_is_missing(tmp_path, capsys):
    assert main(["exits", str(tmp_path)]) == 2
    assert "no run folder here" in capsys.readouterr().err
