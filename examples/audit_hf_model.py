"""The descent audit of a Hugging Face language model from Python: every layer read out by its own head.

``LanguageModelSolver`` wraps any causal LM as a solver: its trajectory holds the residual stream after
every layer, and the logit lens (the model's final norm and LM head) reads any of them out. One call gives
the next-token cross-entropy of every layer, computed chunk by chunk (no ``[layers, batch, tokens, vocab]``
tensor). This is the first step before constraining a pretrained model (docs/CONSTRAINTS.md): which layers
already descend, and which go up?

    python examples/audit_hf_model.py            # SmolLM2-135M-Instruct on chatterbot dialogs (run
                                                 # `unrolled convert smollm2` once first); about a minute
    python examples/audit_hf_model.py --quick    # a tiny Llama built in-process (CI)
"""

import argparse

import torch
from _tiny import save_figure, tiny_llama

from unrolled.models.hf import LanguageModelSolver
from unrolled.report import integer_axis, plain_log_axis, pyplot


def tiny_model_and_texts():
    """A 3-layer Llama with a word-level tokenizer over the texts, built in-process (nothing downloaded)."""
    texts = [
        "the cat sat on the mat",
        "a dog ran in the park",
        "the sun is hot today",
        "we like to read books",
    ]
    return (*tiny_llama(texts), texts)


def smollm2_and_texts(count: int):
    from unrolled.models.hf import load_model, load_tokenizer
    from unrolled.tasks.text import chatterbot_pairs

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    pairs = chatterbot_pairs()[:count]
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p.user},
                                            {"role": "assistant", "content": p.assistant}], tokenize=False)
             for p in pairs]  # fmt: skip
    return load_model("smollm2-135m-instruct", "causal_lm"), tokenizer, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model built in-process (CI)")
    parser.add_argument("--texts", type=int, default=32)
    parser.add_argument("--out", default="runs/examples", help="where the figure goes")
    args = parser.parse_args()
    model, tokenizer, texts = tiny_model_and_texts() if args.quick else smollm2_and_texts(args.texts)
    model.eval()
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)  # padding is not scored

    solver = LanguageModelSolver(model)  # the model's own layers, read out by its own head
    with torch.no_grad():
        trajectory = solver(**batch)
        losses = trajectory.layerwise_losses(labels)  # f_0 (the embeddings) .. f_L
        own = model(**batch, labels=labels).loss  # transformers' own loss of the last layer
    going_up = [l for l in range(1, len(losses)) if losses[l] > losses[l - 1]]
    print(
        f"{len(texts)} texts, {int((labels[:, 1:] != -100).sum())} scored tokens, {trajectory.depth} layers"
    )
    print("logit-lens cross-entropy per layer:", " ".join(f"{v:.2f}" for v in losses))
    print(f"layers whose loss goes up: {going_up or 'none'}")
    print(f"last layer {float(losses[-1]):.4f}, the model's own loss {float(own):.4f}")
    assert abs(float(losses[-1]) - float(own)) < 1e-4 * max(1.0, float(own)), (
        "the lens's last layer is the model"
    )

    plt = pyplot()
    if plt is None:
        print("(no figure: pip install 'unrolled[plot]')")
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(range(len(losses)), losses, "-o", ms=3)
    ax.plot(going_up, [losses[l] for l in going_up], "x", ms=8, label="goes up")
    ax.set(xlabel="layer (0: the embeddings)", ylabel="next-token cross-entropy", yscale="log",
           title=f"descent audit, {type(model).__name__}")  # fmt: skip
    integer_axis(ax.xaxis)
    plain_log_axis(ax.yaxis)
    ax.legend()
    save_figure(fig, args.out, "audit_hf_model.png")


if __name__ == "__main__":
    main()
