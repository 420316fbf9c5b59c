"""The offline reference judge: the output closer to the reference answer in MiniLM's embedding space wins."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from unrolled.eval.judges import Judge, Verdict, _check_lengths

__all__ = ["ReferenceJudge"]


class ReferenceJudge(Judge):
    """The offline judge: the output closer to the reference answer wins.

    Sentences are embedded with all-MiniLM-L6-v2 exactly as ``sentence-transformers`` does for it (``AutoModel``,
    mean of the last hidden states over the attention mask, L2 normalisation, 256 tokens at most). With
    ``s = cos(output, reference)``, ``p_first = sigmoid((s1 - s2) / temperature)``, and exactly 0.5 when
    ``|s1 - s2| <= tie_margin``. Swapping the outputs gives exactly ``1 - p_first`` (embeddings do not depend on
    the order: the distinct texts are embedded in sorted order).

    Args:
        encoder_path: a sentence-transformers folder with the ``transformers`` files; default the local carrier
            (:func:`unrolled.carriers.minilm_path`).
        tie_margin, temperature: of the verdict above.
        batch_size: sentences per forward pass.
    """

    def __init__(
        self,
        encoder_path: str | Path | None = None,
        tie_margin: float = 1e-3,
        temperature: float = 0.05,
        batch_size: int = 32,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        from unrolled.carriers import minilm_path

        if temperature <= 0 or tie_margin < 0:
            raise ValueError(f"temperature must be > 0 and tie_margin >= 0, got {temperature}, {tie_margin}")
        path = Path(encoder_path) if encoder_path is not None else minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()
        st_config = path / "sentence_bert_config.json"
        settings = json.loads(st_config.read_text()) if st_config.exists() else {}
        self.max_length = int(settings.get("max_seq_length", self.tokenizer.model_max_length))
        self.tie_margin, self.temperature, self.batch_size = tie_margin, temperature, batch_size
        self.name = "reference:" + ("all-MiniLM-L6-v2" if encoder_path is None else path.name)

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> Tensor:
        """Unit-norm sentence embeddings ``[N, H]`` (float32, CPU)."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            hidden = self.model(**batch).last_hidden_state  # [B, T, H]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(mean, p=2, dim=1))
        return torch.cat(out) if out else torch.empty(0, self.model.config.hidden_size)

    def similarities(self, outputs: Sequence[str], references: Sequence[str]) -> list[float]:
        """``cos(outputs[i], references[i])`` for each ``i``."""
        texts = sorted(set(outputs) | set(references))
        vectors = dict(zip(texts, self.embed(texts), strict=True))
        return [
            float(vectors[o].double() @ vectors[r].double()) for o, r in zip(outputs, references, strict=True)
        ]

    def judge(
        self,
        instructions: Sequence[str],
        first: Sequence[str],
        second: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[Verdict]:
        if references is None:
            raise ValueError("ReferenceJudge needs references: one reference answer per instruction")
        n = _check_lengths(instructions, first, second, references)
        sims = self.similarities([*first, *second], [*references, *references])
        verdicts = []
        for s1, s2 in zip(sims[:n], sims[n:], strict=True):
            diff = s1 - s2  # swapping the outputs negates it exactly
            if abs(diff) <= self.tie_margin:
                verdicts.append(Verdict(0.5))
                continue
            winner = 1.0 / (1.0 + math.exp(-abs(diff) / self.temperature))  # in [0.5, 1]: 1 - winner is exact
            verdicts.append(Verdict(winner if diff > 0 else 1.0 - winner))
        return verdicts
