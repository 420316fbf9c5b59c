"""``unrolled exits`` on a finished text run: the saved classifiers with PABEE, entropy and confidence exits."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from unrolled.cli import main
from unrolled.experiments import run_experiment

from .test_text import tiny


def test_exits_of_a_finished_text_run(tmp_path, capsys):
    run = tmp_path / "run"
    results = run_experiment(tiny(), run, progress=False, log=lambda _: None)
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
