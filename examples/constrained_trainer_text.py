"""``ConstrainedTrainer`` on a text classifier built from your own ``datasets.Dataset``.

A pretrained encoder becomes a solver (``EncoderSolver``: its own classification head reads every layer), and
``ConstrainedTrainer`` (a ``transformers.Trainer``) fine-tunes it with ERM or under descent constraints, with
everything else the Trainer's own: optimizer, schedule, logging, checkpoints, ``accelerate``. The logs carry
every layer's loss, the slacks, the multipliers, the task loss's share of the loss and any infeasible
constraint (docs/CONSTRAINTS.md).

    python examples/constrained_trainer_text.py            # MiniLM on 20 Newsgroups posts; about 2 minutes
    python examples/constrained_trainer_text.py --quick    # a tiny BERT built in-process (CI)
"""

import argparse
from pathlib import Path

from _tiny import save_figure, tiny_bert_classifier
from datasets import Dataset
from transformers import TrainingArguments

from unrolled.constrained import ConstraintConfig
from unrolled.models.hf import EncoderSolver
from unrolled.report import integer_axis, pyplot
from unrolled.train.hf import ConstrainedTrainer


def your_data(quick: bool) -> Dataset:
    """Any ``datasets.Dataset`` with a text and an integer label column."""
    if quick:
        texts = [
            "the rocket reached orbit",
            "god and faith in the church",
            "nasa launched a probe to mars",
            "the bible and belief",
            "the shuttle docked at the station",
            "atheism and religion debates",
        ] * 4
        return Dataset.from_dict({"text": texts, "label": [0, 1] * 12})
    from unrolled.tasks.text import newsgroups  # 200 real posts, offline (gensim's test data)

    posts = newsgroups()
    return Dataset.from_dict({"text": list(posts.texts), "label": list(posts.labels)}).shuffle(seed=0)


def model_and_tokenizer(quick: bool):
    if not quick:
        from unrolled.models.hf import load_model, load_tokenizer

        return load_model("minilm", "classifier", num_labels=2), load_tokenizer("minilm")
    return tiny_bert_classifier(your_data(True)["text"], num_labels=2)


def fine_tune(quick: bool, constraints: ConstraintConfig | None, out: Path) -> ConstrainedTrainer:
    model, tokenizer = model_and_tokenizer(quick)
    data = your_data(quick).map(lambda b: tokenizer(b["text"], truncation=True, max_length=64), batched=True)
    data = data.remove_columns(["text"]).rename_column("label", "labels")
    args = TrainingArguments(
        output_dir=str(out), max_steps=12 if quick else 40, per_device_train_batch_size=8 if quick else 16,
        learning_rate=1e-3 if quick else 1e-4, logging_steps=1 if quick else 10, save_strategy="no",
        report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
    )  # fmt: skip
    collate = lambda rows: tokenizer.pad(rows, return_tensors="pt")  # noqa: E731
    trainer = ConstrainedTrainer(
        model=EncoderSolver(model, readout="model"), args=args, train_dataset=data, data_collator=collate,
        constraints=constraints,
    )  # fmt: skip
    trainer.train()
    return trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model built in-process (CI)")
    parser.add_argument("--out", default="runs/examples", help="where the figure and Trainer folders go")
    args = parser.parse_args()
    out = Path(args.out)
    recipe = ConstraintConfig(alpha=0.1, dual_lr=1.0, multiplier_max=0.5)  # bounded multipliers
    runs = {"ERM": fine_tune(args.quick, None, out / "text_erm"),
            "constrained": fine_tune(args.quick, recipe, out / "text_constrained")}  # fmt: skip
    for name, trainer in runs.items():
        logs = [h for h in trainer.state.log_history if "loss" in h]
        layers = [logs[-1][k] for k in sorted((k for k in logs[-1] if k.startswith("layer_loss/")),
                                             key=lambda k: int(k.split("/")[1]))]  # fmt: skip
        task = f"layer_loss/{len(layers) - 1}"  # the last layer's loss (the constrained "loss" is the Lagrangian)
        print(
            f"{name:12s} task loss {logs[0][task]:.3f} -> {logs[-1][task]:.3f}; loss per layer "
            + " ".join(f"{v:.3f}" for v in layers)
            + f"; task weight {logs[-1]['task_weight']:.2f}"
        )
        assert logs[-1][task] < logs[0][task], f"{name}: the task loss should fall"
    lam = runs["constrained"].objective.multipliers.value
    print("multipliers at the end:", " ".join(f"{v:.2f}" for v in lam))
    assert ((lam >= 0) & (lam <= 0.5)).all(), "bounded multipliers stay in [0, λ_max]"

    plt = pyplot()
    if plt is None:
        print("(no figure: pip install 'unrolled[plot]')")
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, trainer in runs.items():
        logs = [h for h in trainer.state.log_history if "loss" in h]
        last = max((k for k in logs[0] if k.startswith("layer_loss/")), key=lambda k: int(k.split("/")[1]))
        ax.plot([h["step"] for h in logs], [h[last] for h in logs], label=name)
    ax.set(
        xlabel="step",
        ylabel="training loss of the last layer",
        title="ConstrainedTrainer on your own Dataset",
    )
    integer_axis(ax.xaxis)
    ax.legend()
    save_figure(fig, args.out, "constrained_trainer_text.png")


if __name__ == "__main__":
    main()
