"""Self-speculative decoding through transformers' assistant_early_exit: lossless, and acceptance read right."""

from __future__ import annotations

import pytest
import torch

from unrolled.eval.speculative import self_speculative

transformers = pytest.importorskip("transformers")


def _llama(layers: int = 4) -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=50,
                                   pad_token_id=0, eos_token_id=1, bos_token_id=1)  # fmt: skip
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # a sharper random model, so greedy continuations are not all one token
        model.lm_head.weight.mul_(20)
    return model


def _prompts() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(2, 50, (1, n), generator=g) for n in (5, 9)]


def test_self_speculative_decoding_is_lossless_and_counts_drafts():
    model = _llama()
    results = self_speculative(model, _prompts(), [1, 3], max_new_tokens=12)
    for r in results:
        assert r.identical, r.exit_layer  # lossless: the same tokens as plain greedy decoding
        assert r.new_tokens == 24 and r.drafts.drafted > 0 and 0 <= r.drafts.accepted <= r.drafts.drafted
        assert r.as_dict()["speedup"] > 0


def test_a_draft_that_is_the_full_model_is_always_accepted():
    model = _llama()
    with torch.no_grad():  # layers 3 and 4 add nothing: the first 2 layers compute what all 4 compute
        for layer in model.model.layers[2:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    full, partial = self_speculative(model, _prompts(), [2, 1], max_new_tokens=12)
    assert full.identical and full.drafts.acceptance == 1.0
    assert partial.identical and partial.drafts.acceptance < 1.0  # one layer is not the model


def test_exit_layers_are_checked():
    with pytest.raises(ValueError, match=r"exit layers must be in 1\.\.3"):
        self_speculative(_llama(), _prompts(), [4])
