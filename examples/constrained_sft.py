"""``ConstrainedSFTTrainer`` as a drop-in for TRL's ``SFTTrainer``: change two names in your SFT script.

The constrained trainer is ``SFTTrainer`` with one method overridden: its loss is TRL's own (masks, chat
template, completion-only loss, PEFT) plus the layerwise objective, read out by the logit lens on the
layers the objective needs. With every multiplier at zero its gradient is ``SFTTrainer``'s bit for bit; this
script checks exactly that on one batch, then fine-tunes with both and prints what each logged.

    python examples/constrained_sft.py            # SmolLM2-135M-Instruct, LoRA, chatterbot pairs (run
                                                  # `unrolled convert smollm2` once first); ~3 minutes
    python examples/constrained_sft.py --quick    # a tiny Llama built in-process (CI)
"""

import argparse
import copy
from pathlib import Path

import torch
from _tiny import save_figure, tiny_llama
from datasets import Dataset
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer

from unrolled.report import integer_axis, plain_log_axis, pyplot
from unrolled.train.sft import ConstrainedSFTConfig, ConstrainedSFTTrainer  # was: from trl import ...


def model_tokenizer_data(quick: bool):
    if not quick:
        from unrolled.models.hf import load_model, load_tokenizer
        from unrolled.tasks.text import chatterbot_pairs

        pairs = chatterbot_pairs()[:64]
        data = Dataset.from_list([{"prompt": [{"role": "user", "content": p.user}],
                                   "completion": [{"role": "assistant", "content": p.assistant}]} for p in pairs])  # fmt: skip
        return load_model("smollm2-135m-instruct", "causal_lm"), load_tokenizer("smollm2-135m-instruct"), data
    pairs = [("what is the capital of france", " paris"), ("tell me a joke", " no thanks"),
             ("hello", " hi there"), ("hi", " hello there")]  # fmt: skip
    model, tokenizer = tiny_llama([p + c for p, c in pairs])
    data = Dataset.from_list([{"prompt": p, "completion": c} for p, c in pairs] * 4)
    return model, tokenizer, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model built in-process (CI)")
    parser.add_argument("--out", default="runs/examples", help="where the Trainer folders go")
    args = parser.parse_args()
    model, tokenizer, data = model_tokenizer_data(args.quick)
    lora = (
        None
        if args.quick
        else LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    # TRL's SFTConfig turns on bf16 and activation checkpointing by default: on a CPU without bf16 matrix units
    # both only cost time, so they are off here
    common = dict(max_steps=4 if args.quick else 8, per_device_train_batch_size=4 if args.quick else 8,
                  learning_rate=1e-3 if args.quick else 3e-4, logging_steps=1, save_strategy="no", report_to="none",
                  use_cpu=True, bf16=False, activation_checkpointing=False, seed=0, disable_tqdm=True)  # fmt: skip

    plain = SFTTrainer(model=copy.deepcopy(model), args=SFTConfig(output_dir=str(Path(args.out) / "sft"), **common),
                       train_dataset=data, processing_class=tokenizer, peft_config=lora)  # fmt: skip
    ours = ConstrainedSFTTrainer(
        model=copy.deepcopy(model), train_dataset=data, processing_class=tokenizer, peft_config=lora,
        # the default recipe (α = 0.01, f_(l-1) attached, relative slacks, λ ≤ 1, η_λ = 2), with a dual step
        # every 2 optimizer steps instead of 5 so that this short run takes several
        args=ConstrainedSFTConfig(output_dir=str(Path(args.out) / "constrained_sft"), **common, dual_every=2),
    )  # fmt: skip

    # with every multiplier at zero (as at the start) the gradient is SFTTrainer's, bit for bit
    batch = next(iter(plain.get_train_dataloader()))
    grads = []
    for trainer in (plain, ours):
        trainer.model.train()
        trainer.model.zero_grad()
        trainer.current_gradient_accumulation_steps = 1
        trainer.compute_loss(trainer.model, dict(batch)).backward()
        grads.append([p.grad.clone() for p in trainer.model.parameters() if p.grad is not None])
        trainer.model.zero_grad()
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True)), (
        "λ = 0 must give SFTTrainer's gradient"
    )
    print(f"one batch, every λ = 0: the gradients of {len(grads[0])} tensors equal SFTTrainer's bit for bit")

    for name, trainer in (("SFTTrainer", plain), ("ConstrainedSFTTrainer", ours)):
        trainer.train()
        logs = [h for h in trainer.state.log_history if "loss" in h]
        layers = sorted(
            (k for k in logs[-1] if k.startswith("layer_loss/")), key=lambda k: int(k.split("/")[1])
        )
        extra = f"; {len(layers)} layers logged, task weight {logs[-1]['task_weight']:.2f}" if layers else ""
        print(
            f"{name:22s} loss {logs[0]['loss']:.3f} -> {logs[-1]['loss']:.3f}, token accuracy "
            f"{logs[-1]['mean_token_accuracy']:.3f}{extra}"
        )
    assert any(k.startswith("multiplier/") for k in ours.state.log_history[-2]), "the multipliers are logged"

    plt = pyplot()
    if plt is None:
        print("(no figure: pip install 'unrolled[plot]')")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.6), layout="constrained")
    for name, trainer in (("SFTTrainer", plain), ("ConstrainedSFTTrainer", ours)):
        logs = [h for h in trainer.state.log_history if "loss" in h]
        left.plot([h["step"] for h in logs], [h["mean_token_accuracy"] for h in logs], marker="o", label=name)
    logged = [h for h in ours.state.log_history if any(k.startswith("layer_loss/") for k in h)]
    for h, style in ((logged[0], ":"), (logged[-1], "-")):
        layers = sorted((int(k.split("/")[1]), v) for k, v in h.items() if k.startswith("layer_loss/"))
        right.plot(*zip(*layers, strict=True), style, marker=".", label=f"step {h['step']}")
    left.set(xlabel="step", ylabel="token accuracy (training batch)", title="drop-in for SFTTrainer")
    right.set(
        xlabel="layer (logit lens)",
        ylabel="next-token loss",
        yscale="log",
        title="ConstrainedSFTTrainer, every layer",
    )
    for ax in (left, right):
        integer_axis(ax.xaxis)
    plain_log_axis(right.yaxis)
    left.legend(), right.legend()
    save_figure(fig, args.out, "constrained_sft.png")


if __name__ == "__main__":
    main()
