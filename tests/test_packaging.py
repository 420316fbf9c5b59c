"""The package as users install it: a wheel built from this tree, installed into a fresh environment, run
from a folder outside the repository, with the configs it ships and nothing of the source tree.

The fresh environment takes its dependencies (torch, numpy, pydantic, ...) from this test's own interpreter
through a path file, so nothing is downloaded; ``unrolled`` itself comes only from the wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw)
    assert out.returncode == 0, f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel of this tree installed; returns its bin folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
          "-w", str(tmp / "dist")], cwd=tmp)  # fmt: skip
    wheel = next((tmp / "dist").glob("unrolled-*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=tmp).stdout.strip())  # fmt: skip
    # the dependencies, from this interpreter's site-packages (its editable unrolled is a .pth file there,
    # which a path added this way does not run, so the source tree stays out of the fresh environment)
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        cwd=tmp,
    )
    return venv / "bin"


def test_the_wheel_ships_its_configs_and_runs_outside_the_repository(installed, tmp_path):
    where = _run([str(installed / "python"), "-c", "import unrolled; print(unrolled.__file__)"], cwd=tmp_path)
    assert str(installed.parent) in where.stdout and str(ROOT / "src") not in where.stdout
    listed = _run([str(installed / "unrolled"), "configs"], cwd=tmp_path).stdout
    assert "shipped with unrolled" in listed
    for name in ("demo", "sft_recipes", "text_recipes", "denoise_constrained_vs_erm"):
        assert f"\n{name} " in listed
    version = _run([str(installed / "unrolled"), "--version"], cwd=tmp_path).stdout
    assert version.strip() == "unrolled 0.1.0"
    short = ["--set", "seeds=[0]", "--set", "depths=[1]", "--set", "train.steps=3", "--set", "train.batch_size=64",
             "--set", "eval.batch_size=64", "--no-progress"]  # fmt: skip
    _run([str(installed / "unrolled"), "run", "demo", "--out", "run", *short], cwd=tmp_path)
    assert (tmp_path / "run" / "results.json").is_file() and (tmp_path / "run" / "report.md").is_file()
    # a user's own ./configs comes first
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.yaml").write_text(
        (ROOT / "configs" / "demo.yaml").read_text().replace("name: demo", "name: my_demo")
    )
    shown = _run([str(installed / "unrolled"), "config", "show", "demo"], cwd=tmp_path).stdout
    assert "name: my_demo" in shown


def test_import_unrolled_stays_light():
    """The Hugging Face and video stacks load only when used."""
    code = (
        "import sys, unrolled, unrolled.constrained, unrolled.train; "
        "heavy = [m for m in ('transformers', 'trl', 'peft', 'datasets', 'accelerate', 'av', 'skimage', "
        "'matplotlib') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_top_level_names_resolve():
    import unrolled

    for name in unrolled.__all__:
        assert getattr(unrolled, name) is not None, name
    assert unrolled.ConstrainedSFTTrainer.__module__ == "unrolled.train.sft"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        unrolled.nope  # noqa: B018
