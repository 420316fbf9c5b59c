"""Every script under examples/ runs in its quick mode, asserting its own numbers (a loss that must fall, a
result that must match an independent computation), and writes its figure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))
FIGURES = {"constrained_sft.py": None}  # the SFT example prints its logs and draws nothing


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_in_quick_mode(script, tmp_path):
    pytest.importorskip("matplotlib")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, f"{script.name} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    expected = FIGURES.get(script.name, script.with_suffix(".png").name)
    if expected is not None:
        assert (tmp_path / expected).is_file(), f"{script.name} wrote no {expected}"


def test_every_example_is_tested_and_documented():
    assert len(EXAMPLES) >= 6
    readme = (ROOT / "examples" / "README.md").read_text()
    for script in EXAMPLES:
        assert script.name in readme, f"examples/README.md does not list {script.name}"
