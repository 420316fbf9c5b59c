"""The layer-by-layer stepper of a Hugging Face encoder classifier (:class:`~unrolled.models.hf.EncoderSolver`).

For BERT-like encoders (``embeddings`` and ``encoder.layer``: BERT, MiniLM, RoBERTa, ELECTRA): state 0 is the
embedding output, layer l is ``encoder.layer[l − 1]`` with the bidirectional mask transformers builds for the
samples still running, the readout the solver's own. Needs the ``hf`` extra; imported by
:func:`~unrolled.exits.steppers.stepper_for` when it meets such a model.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from transformers.masking_utils import create_bidirectional_mask

from unrolled.exits.steppers import State, Stepper, stepper_for
from unrolled.models.hf import EncoderSolver


@stepper_for.register
def _encoder(solver: EncoderSolver) -> Stepper:
    base = solver.model.base_model
    encoder = getattr(base, "encoder", None)
    if getattr(base, "embeddings", None) is None or not hasattr(encoder, "layer"):
        raise TypeError(
            f"early exit steps BERT-like encoders (embeddings and encoder.layer); {type(base).__name__} has "
            "another layout"
        )
    layers = encoder.layer

    def start(inputs: dict[str, Any]) -> State:
        ids, mask = inputs["input_ids"], inputs.get("attention_mask")
        token_types = inputs.get("token_type_ids")
        extra = {} if token_types is None else {"token_type_ids": token_types}
        h = base.embeddings(input_ids=ids, **extra)
        return State({"h": h} if mask is None else {"h": h, "mask": mask})

    def step(l: int, state: State) -> State:
        h, mask = state.batch["h"], state.batch.get("mask")
        mask4 = create_bidirectional_mask(config=base.config, inputs_embeds=h, attention_mask=mask)
        out = layers[l - 1](h, mask4)
        return State({**state.batch, "h": out[0] if isinstance(out, tuple) else out})

    def readout(state: State) -> Tensor:
        return solver.readout_of(state.batch.get("mask"))(state.batch["h"])

    return Stepper(len(layers), start, step, readout, tuple(layers))
