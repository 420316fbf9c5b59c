"""The Python blocks of docs/QUICKSTART.md and README.md run as written (issue 29).

Each block runs alone, in a fresh interpreter, from an empty folder. A comment right above a block,
``<!-- quick: A -> B; C -> D -->``, lists the text replacements that make it quick (step counts; SmolLM2 by a tiny
Llama saved in a folder, ``{tiny_llama}``); nothing else is changed, so a snippet that breaks fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "docs" / "QUICKSTART.md", ROOT / "README.md"]
BLOCK = re.compile(r"(?:<!-- quick: (?P<quick>.*?) -->\n)?```python\n(?P<code>.*?)```", re.S)


def blocks(page: Path) -> list[tuple[str, str, str]]:
    """(id, code, quick replacements) of every Python block of ``page``."""
    out, text = [], page.read_text()
    for m in BLOCK.finditer(text):
        line = text[: m.start("code")].count("\n") + 1
        out.append((f"{page.name}:{line}", m.group("code"), m.group("quick") or ""))
    return out


ALL = [b for page in PAGES for b in blocks(page)]


def quick(code: str, replacements: str, values: dict[str, str]) -> str:
    for rule in filter(None, (r.strip() for r in replacements.split("; "))):
        old, new = (part.strip() for part in rule.split(" -> "))
        assert old in code, f"the quick rule {rule!r} matches nothing in the block"
        code = code.replace(old, new.format(**values))
    return code


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    """A 2-layer Llama and a word-level tokenizer saved as a folder (what ``load_model`` takes by path)."""
    transformers = pytest.importorskip("transformers")
    sys.path.insert(0, str(ROOT / "examples"))
    from _tiny import word_tokenizer

    words = "The capital of France is Paris . Water boils at 100 degrees"
    tokenizer = word_tokenizer([words], {"pad_token": "<pad>", "eos_token": "<eos>", "unk_token": "<unk>"})
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tokenizer),
                                      pad_token_id=0, eos_token_id=1)  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny_llama")
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_the_quickstart_has_a_block_per_section():
    assert len(blocks(PAGES[0])) >= 7


@pytest.mark.slow
@pytest.mark.parametrize(("where", "code", "replacements"), ALL, ids=[b[0] for b in ALL])
def test_a_python_block_of_the_docs_runs(where, code, replacements, tiny_llama, tmp_path):
    script = tmp_path / "block.py"
    script.write_text(quick(code, replacements, {"tiny_llama": tiny_llama}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert out.returncode == 0, f"{where} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
