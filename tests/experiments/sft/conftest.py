"""A tiny Llama chat model and tokenizer saved to disk, and a small instruction file: the SFT family's inputs."""

from __future__ import annotations

import json

import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("trl")

from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402

TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} <end> {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)
PAIRS = [
    ("what is the capital of france", "paris it is a city"),
    ("tell me a joke", "no thanks i am shy"),
    ("hello", "hi there friend"),
    ("what do you like", "i like music and books"),
    ("where do you live", "in a city by the sea"),
    ("are you a robot", "yes i am a robot"),
    ("what is music", "music is sound in time"),
    ("do you read books", "yes i read many books"),
    ("good morning", "good morning to you"),
    ("what is a city", "a city is a big town"),
    ("who are you", "i am a small model"),
    ("is it sunny", "it is sunny by the sea"),
]


def make_tokenizer():
    words = " ".join(p + " " + c for p, c in PAIRS).split()
    special = ["<pad>", "<eos>", "<unk>", "<end>", "<user>", "<assistant>", "<system>", "m", "M"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(special + words))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<end>", unk_token="<unk>"
    )
    tok.chat_template = TEMPLATE
    return tok


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory):
    """A folder with a 3-layer Llama and its tokenizer (``task.model`` takes the path)."""
    import torch

    folder = tmp_path_factory.mktemp("tiny_llama")
    tok = make_tokenizer()
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def instruction_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    rows = [{"instruction": p, "input": "", "output": c} for p, c in PAIRS]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path
