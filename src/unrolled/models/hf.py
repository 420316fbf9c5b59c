"""Pretrained Hugging Face models as solvers: every layer a step, one readout for all of them.

* :class:`EncoderSolver`: any ``transformers`` encoder (BERT, DistilBERT, RoBERTa, MiniLM, …). State 0 is the
  embedding output and states 1..L the layers' hidden states ``[B, T, H]`` (``output_hidden_states``). The
  readout is a :class:`~unrolled.models.readouts.PooledClassifier` (``readout="linear"``) or the model's own
  sequence-classification head (``readout="model"``), applied to every layer.
* :class:`LanguageModelSolver`: a causal LM (logit lens: the final norm and LM head on every layer; states are
  the residual stream *before* the final norm, so the last readout is the model's own logits) or a masked LM
  (its MLM head on every layer).

Attention masks go to the model and to pooling, so padding reaches no pooled state and no loss. ``transformers``
is imported here: this module needs the ``hf`` extra (``pip install 'unrolled[hf]'``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from unrolled.models.hub import ModelNotFoundError
from unrolled.models.readouts import LogitLens, PooledClassifier, Pooling, sequence_cross_entropy
from unrolled.trajectory import Trajectory

ModelKind = Literal["encoder", "classifier", "causal_lm", "masked_lm"]


def _auto_class(kind: ModelKind) -> Any:
    import transformers as tf

    return {
        "encoder": tf.AutoModel,
        "classifier": tf.AutoModelForSequenceClassification,
        "causal_lm": tf.AutoModelForCausalLM,
        "masked_lm": tf.AutoModelForMaskedLM,
    }[kind]


def resolve_model(name_or_path: str) -> str:
    """A model reference as ``from_pretrained`` takes it: an alias of a model shipped with the library's data
    carriers (:data:`unrolled.models.hub.ALIASES`), a local folder, or a hub name."""
    from unrolled.models.hub import ALIASES

    if name_or_path in ALIASES:
        return str(ALIASES[name_or_path]())
    return name_or_path


def _not_found(name: str, exc: Exception) -> ModelNotFoundError:
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    why = (
        "HF_HUB_OFFLINE is set and it is not in the cache"
        if offline
        else "the hub is not reachable or has no such model"
    )
    return ModelNotFoundError(
        f"model {name!r}: not a local folder holding a model, and {why} ({type(exc).__name__}: {' '.join(str(exc).split())[:160]}). "
        "Make it available: pass the path of a folder saved with save_pretrained(); or, where there is internet, "
        f"`huggingface-cli download {name}` and set HF_HUB_OFFLINE=1 to use the cache; the aliases that work offline "
        "here are listed by `unrolled models`."
    )


def load_model(name_or_path: str, kind: ModelKind = "encoder", **kwargs: Any) -> PreTrainedModel:
    """``from_pretrained`` of the right Auto class; an unavailable model is a :class:`ModelNotFoundError`.

    Args:
        name_or_path: an alias (``minilm``), a local folder, or a hub name.
        kind: ``encoder`` (AutoModel), ``classifier`` (AutoModelForSequenceClassification; pass ``num_labels``),
            ``causal_lm`` or ``masked_lm``.
        kwargs: passed to ``from_pretrained`` (``num_labels``, ``dtype``, ...).
    """
    ref = resolve_model(name_or_path)
    try:
        return _auto_class(kind).from_pretrained(ref, **kwargs)
    except (OSError, ValueError) as exc:
        if os.path.isdir(ref) and not isinstance(exc, OSError):
            raise
        raise _not_found(name_or_path, exc) from None


def load_tokenizer(name_or_path: str) -> Any:
    """``AutoTokenizer.from_pretrained`` with the same aliases and errors as :func:`load_model`."""
    from transformers import AutoTokenizer

    ref = resolve_model(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(ref)
    except OSError as exc:
        raise _not_found(name_or_path, exc) from None


# -- the model's own sequence-classification head, applied to any layer ---------------------------------------


def _bert_head(model: Any, h: Tensor, mask: Tensor | None) -> Tensor:
    return model.classifier(model.dropout(model.bert.pooler(h)))


def _distilbert_head(model: Any, h: Tensor, mask: Tensor | None) -> Tensor:
    x = torch.relu(model.pre_classifier(h[:, 0]))
    return model.classifier(model.dropout(x))


def _roberta_head(model: Any, h: Tensor, mask: Tensor | None) -> Tensor:
    return model.classifier(h)  # RobertaClassificationHead takes the <s> token itself


def _last_token_head(model: Any, h: Tensor, mask: Tensor | None) -> Tensor:
    """Decoder classifiers (Llama, GPT-2, ...): ``score`` at the last real token (right padding)."""
    logits = model.score(h)
    last = (mask.sum(dim=1) - 1) if mask is not None else torch.full((h.shape[0],), h.shape[1] - 1)
    return logits[torch.arange(h.shape[0], device=h.device), last.to(h.device)]


OWN_HEADS: dict[str, Callable[[Any, Tensor, Tensor | None], Tensor]] = {
    "bert": _bert_head,
    "distilbert": _distilbert_head,
    "roberta": _roberta_head,
    "xlm-roberta": _roberta_head,
    "camembert": _roberta_head,
    "electra": _roberta_head,
    "llama": _last_token_head,
    "mistral": _last_token_head,
    "qwen2": _last_token_head,
}
"""``model_type`` -> its sequence-classification head as a function of one layer's states."""


def own_head(model: PreTrainedModel) -> Callable[[Any, Tensor, Tensor | None], Tensor]:
    """The head of a sequence-classification model as a readout of any layer (see :data:`OWN_HEADS`)."""
    kind = model.config.model_type
    if kind not in OWN_HEADS:
        raise ValueError(
            f"no layerwise readout for the classification head of model type {kind!r} (supported: "
            f"{', '.join(sorted(OWN_HEADS))}); use readout 'linear' (pooling and a new linear head) instead"
        )
    return OWN_HEADS[kind]


class EncoderSolver(nn.Module):
    """An encoder and a readout shared by its layers: ``forward(**batch) -> Trajectory`` of ``[B, T, H]`` states.

    Args:
        model: ``readout="linear"``: an encoder (``AutoModel``); ``readout="model"``: a sequence-classification
            model (``AutoModelForSequenceClassification``) whose own head reads every layer.
        num_labels: the classes of the new linear head (``readout="linear"``).
        readout: ``linear`` or ``model``.
        pooling, dropout, generator: of the linear head (see :class:`PooledClassifier`).

    The readout of state l is ``logits [B, C]``; :attr:`per_sample_loss` is the cross-entropy.
    """

    per_sample_loss = staticmethod(sequence_cross_entropy)

    def __init__(
        self,
        model: PreTrainedModel,
        num_labels: int | None = None,
        readout: Literal["linear", "model"] = "linear",
        pooling: Pooling = "mean",
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.model, self.readout_kind = model, readout
        if readout == "linear":
            if num_labels is None:
                raise ValueError("readout 'linear' needs num_labels")
            self.head: nn.Module | None = PooledClassifier(
                model.config.hidden_size, num_labels, pooling, dropout, generator
            )
            self._own = None
            pooler = getattr(model, "pooler", None)
            if isinstance(pooler, nn.Module):  # BERT's pooler is not on the solver's path: leave it frozen
                pooler.requires_grad_(False)
        elif readout == "model":
            self.head, self._own = None, own_head(model)
        else:
            raise ValueError(f"readout must be 'linear' or 'model', got {readout!r}")

    @property
    def config(self) -> Any:
        return self.model.config

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def readout_of(self, mask: Tensor | None) -> Callable[[Tensor], Tensor]:
        """The readout of any layer's states for a batch with attention ``mask``: ``[B, T, H] -> [B, C]``."""
        if self.head is not None:
            head = self.head
            return lambda h: head(h, mask)
        own = self._own
        assert own is not None
        return lambda h: own(self.model, h, mask)

    def forward(
        self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None, **inputs: Any
    ) -> Trajectory:
        inputs.pop("labels", None)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=True,
            return_dict=True,
            **inputs,
        )
        return Trajectory(tuple(out.hidden_states), self.readout_of(attention_mask))


# -- language models: the logit lens ----------------------------------------------------------------------------

_NORMS = ("norm", "ln_f", "final_layernorm", "final_layer_norm", "norm_f")


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The list of transformer layers of a model (Llama's ``layers``, GPT-2's ``h``, BERT's ``layer``)."""
    n = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the {n} layers of {type(model).__name__}")


def logit_lens(model: PreTrainedModel, chunk_tokens: int = 1024) -> LogitLens:
    """The final norm and LM head of a causal LM, or the MLM head of a masked LM, as a readout of any layer."""
    if getattr(model.config, "is_decoder", False) or model.__class__.__name__.endswith("ForCausalLM"):
        base = model.base_model
        norm = next((getattr(base, a) for a in _NORMS if isinstance(getattr(base, a, None), nn.Module)), None)
        if norm is None:
            raise ValueError(
                f"cannot find the final norm of {type(model).__name__} (looked for {', '.join(_NORMS)})"
            )
        return LogitLens(norm, model.get_output_embeddings(), shift=True, chunk_tokens=chunk_tokens)
    if hasattr(model, "cls"):  # BERT-style masked LM: transform + decoder
        return LogitLens(None, model.cls, shift=False, chunk_tokens=chunk_tokens)
    raise ValueError(
        f"no logit lens for {type(model).__name__}: expected a causal LM or a BERT-style masked LM"
    )


class LanguageModelSolver(nn.Module):
    """A language model whose every layer is read out by its own head (logit lens).

    ``forward(input_ids, attention_mask) -> Trajectory``: states ``[B, T, H]``, readout logits ``[B, T, V]``,
    and a fused ``state_loss(state, labels [B, T])`` that computes the token cross-entropy chunk by chunk
    (labels ``-100`` are ignored; causal LMs shift them). The base model runs without its LM head, so no
    ``[B, T, V]`` tensor is made unless a caller asks for a prediction.
    """

    def __init__(self, model: PreTrainedModel, chunk_tokens: int = 1024) -> None:
        super().__init__()
        self.model = model
        self.lens = logit_lens(model, chunk_tokens)
        self._last = decoder_layers(model)[-1]

    @property
    def config(self) -> Any:
        return self.model.config

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def forward(
        self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None, **inputs: Any
    ) -> Trajectory:
        inputs.pop("labels", None)
        captured: list[Tensor] = []

        def keep(_module: nn.Module, _args: Any, output: Any) -> None:
            captured.append(output[0] if isinstance(output, tuple) else output)

        handle = self._last.register_forward_hook(keep)
        try:
            out = self.model.base_model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                output_hidden_states=True,
                use_cache=False,
                **inputs,
            )
        finally:
            handle.remove()
        states = (*out.hidden_states[:-1], captured[-1])  # the last state before the final norm
        return Trajectory(states, self.lens, state_loss=self.lens.sample_losses)
