"""The SFT family end to end on a tiny Llama saved to disk, and its parts against TRL and transformers."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.experiments.sft.conftest import make_tokenizer
from unrolled.config import from_dict
from unrolled.experiments import ExperimentConfig, run_experiment


def tiny_config(model, data, **changes) -> ExperimentConfig:
    cfg = {
        "name": "tiny_sft",
        "seeds": [0],
        "task": {"kind": "sft", "source": str(data), "model": str(model), "max_length": 64,
                 "eval_instructions": 3, "winrate_prompts": 3},
        "train": {"steps": 4, "batch_size": 4, "lr": 0.01, "log_every": 1, "checkpoint_every": 2,
                  "eval_batch_size": 4, "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
        "perturbation": {"train_gamma": 0.5, "test_gammas": [0.0, 1.5]},
        "winrate": {"gammas": [0.0, 1.5], "max_new_tokens": 6, "batch_size": 2, "judges": [{"kind": "reference"}]},
        "methods": [
            {"name": "erm"},
            {"name": "con", "constraints": {"alpha": 0.1, "dual_lr": 1.0}, "readout_token_fraction": 0.5},
        ],
    }  # fmt: skip
    cfg.update(changes)
    return from_dict(ExperimentConfig, cfg)


def test_sft_run_trains_tests_generates_and_judges(
    tmp_path, tiny_chat_model, instruction_file, capsys, monkeypatch
):
    from unrolled.carriers import minilm_path

    try:
        minilm_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "run"
    results = run_experiment(
        tiny_config(tiny_chat_model, instruction_file), out, progress=False, log=lambda _: None
    )
    assert results["data"] == {"train": 6, "eval": 3, "winrate": 3}
    assert results["truncated"]["train"]["truncated"] == 0
    for name in ("erm", "con"):
        m = results["methods"][name]
        assert all(0.0 <= a <= 1.0 for a in m["token_accuracy_mean"])
        assert len(m["layer_loss_mean"]["0.0"]) == 4 and all(
            math.isfinite(v) for v in m["layer_loss_mean"]["1.5"]
        )
        assert (out / "models" / name / "seed0" / "adapter_config.json").exists()  # a PEFT adapter
        saved = json.loads((out / "generations" / name / "seed0.json").read_text())
        assert set(saved["gammas"]) == {"0.0", "1.5"} and len(saved["gammas"]["0.0"]) == 3
        export = json.loads((out / "alpaca_eval" / "seed0" / f"{name}_gamma1.5.json").read_text())
        assert [set(r) for r in export] == [{"instruction", "output", "generator", "dataset"}] * 3
    assert len(results["methods"]["con"]["multipliers_per_seed"][0]) == 3
    assert "multipliers_per_seed" not in results["methods"]["erm"]
    rows = results["winrates"]
    assert [(w["method"], w["baseline"], w["gamma"]) for w in rows] == [
        ("con", "erm", 0.0),
        ("con", "erm", 1.5),
    ]
    for w in rows:
        assert w["judge"] == "reference:all-MiniLM-L6-v2" and w["n"] == 3 and w["failures"] == 0
        assert 0.0 <= w["rate_mean"] <= 1.0 and w["wins"] + w["ties"] + w["losses"] == 3
    report = (out / "report.md").read_text()
    assert "Win rate against the baseline" in report and "reference:all-MiniLM-L6-v2" in report
    assert not (out / "checkpoints" / "con" / "seed0").exists()
    # another judge on the saved responses: `unrolled judge` adds its rows and rebuilds the report
    from unrolled.cli import main

    assert main(["judge", str(out), "--judge", f"local:{tiny_chat_model}"]) == 0
    after = json.loads((out / "results.json").read_text())["winrates"]
    judges = sorted({w["judge"] for w in after})
    assert judges == [f"local:{tiny_chat_model}", "reference:all-MiniLM-L6-v2"] and len(after) == 4
    assert f"local:{tiny_chat_model}" in (out / "report.md").read_text()
    assert main(["judge", str(out), "--judge", "openai:gpt"]) == 2  # no --base-url: a config error
    # an endpoint where nothing listens: every judgment fails; the command says where and why, exits 1, and
    # leaves results.json as it was
    before = (out / "results.json").read_text()
    capsys.readouterr()
    dead = [
        "judge",
        str(out),
        "--judge",
        "openai:gpt",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--max-retries",
        "0",
    ]
    assert main(dead) == 1
    err = capsys.readouterr().err
    assert "every judgment failed" in err and "openai:gpt@http://127.0.0.1:9/v1" in err
    assert "refused" in err.lower() or "urlerror" in err.lower()
    assert (out / "results.json").read_text() == before
    # `unrolled exits`: self-speculative decoding of the saved models (adapters merged) drafting with 1 and 2 of
    # their 3 layers is lossless, and the outright-exit accuracy is the one the run recorded
    assert main(["exits", str(out), "--samples", "2", "--layers", "1", "2"]) == 0
    exits = json.loads((out / "exits.json").read_text())
    assert set(exits["methods"]) == {"erm", "con"}
    for name, m in exits["methods"].items():
        recorded = json.loads((out / "units" / name / "seed0.json").read_text())["eval"]["0.0"]
        assert m["layer_token_accuracy"] == recorded["layer_token_accuracy"]
        for k in (1, 2):
            e = m["exits"][str(k)]
            assert e["identical"], (name, k)
            assert 0.0 <= e["acceptance"]["mean"] <= 1.0
            assert e["exit_token_accuracy"]["mean"] == pytest.approx(recorded["layer_token_accuracy"][k])
            assert (
                0.0 <= e["exit_win_rate"]["mean"] <= 1.0
            )  # the cut model's responses judged against its own
    assert (out / "exit_curves.png").is_file() and "| model |" in capsys.readouterr().out
    # each model's record was kept: the same call again decodes nothing and writes the same results
    import unrolled.experiments.sft.exits as sft_exits

    def no_model(*args, **kwargs):
        raise AssertionError("a model measured before was loaded again")

    monkeypatch.setattr(sft_exits, "load_language_model", no_model)
    assert main(["exits", str(out), "--samples", "2", "--layers", "1", "2"]) == 0
    assert json.loads((out / "exits.json").read_text()) == exits
    assert main(["exits", str(out), "--samples", "2", "--layers", "2"]) == 0  # a depth measured before
    again = json.loads((out / "exits.json").read_text())
    assert again["methods"]["erm"]["exits"] == {"2": exits["methods"]["erm"]["exits"]["2"]}
    with pytest.raises(AssertionError, match="loaded again"):  # other prompts are measured anew
        main(["exits", str(out), "--samples", "1", "--layers", "1"])
    monkeypatch.undo()
    # a new depth decodes that depth only and keeps the others: a record of depth 2 alone, then depth 1 added
    record_file = out / "exits" / "erm" / "seed0.json"
    saved = json.loads(record_file.read_text())
    saved["record"]["exits"] = [row for row in saved["record"]["exits"] if row["exit_layer"] == 2]
    record_file.write_text(json.dumps(saved))
    assert main(["exits", str(out), "--samples", "2", "--layers", "1", "2"]) == 0
    rows = json.loads(record_file.read_text())["record"]["exits"]
    assert [row["exit_layer"] for row in rows] == [1, 2] and rows[1] == saved["record"]["exits"][0]
    assert main(["exits", str(out), "--layers", "3"]) == 2  # a draft of all 3 layers is not a draft


def test_an_interrupted_sft_run_resumes_with_its_multipliers(tmp_path, tiny_chat_model, instruction_file):
    cfg = tiny_config(tiny_chat_model, instruction_file, winrate=None, methods=[
        {"name": "con", "constraints": {"alpha": 0.1, "dual_lr": 1.0}}])  # fmt: skip
    ref = run_experiment(cfg, tmp_path / "ref", progress=False, log=lambda _: None)

    def interrupt(unit, step):
        if step == 3:  # after the checkpoint at step 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path / "cut", progress=False, on_step=interrupt, log=lambda _: None)
    assert torch.load(tmp_path / "cut" / "checkpoints" / "con" / "seed0.pt")["step"] == 2
    resumed = run_experiment(cfg, tmp_path / "cut", resume=True, progress=False, log=lambda _: None)
    a, b = ref["methods"]["con"], resumed["methods"]["con"]
    assert b["multipliers_per_seed"][0] == pytest.approx(a["multipliers_per_seed"][0], rel=1e-4, abs=1e-6)
    assert b["token_accuracy_mean"] == pytest.approx(a["token_accuracy_mean"], abs=1e-6)


def _trainer(tmp_path, model_dir, data, **kw):
    from transformers import AutoModelForCausalLM

    from unrolled.tasks.instruct import read_instruction_file, to_dataset
    from unrolled.train.sft import ConstrainedSFTConfig, ConstrainedSFTTrainer

    examples = read_instruction_file(data)
    args = ConstrainedSFTConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, per_device_eval_batch_size=3,
        max_steps=kw.pop("max_steps", 1), report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
        gradient_checkpointing=None, **kw,
    )  # fmt: skip
    return ConstrainedSFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir), args=args, train_dataset=to_dataset(examples),
        eval_dataset=to_dataset(examples[:7]), processing_class=make_tokenizer(),
    )  # fmt: skip


def test_eval_token_accuracy_and_last_layer_loss_equal_trls(tmp_path, tiny_chat_model, instruction_file):
    from unrolled.experiments.sft.evaluate import evaluate_tokens
    from unrolled.perturb import Perturbation

    trainer = _trainer(tmp_path, tiny_chat_model, instruction_file)
    ours = evaluate_tokens(trainer, Perturbation("gaussian", 0.0, 0.0, 1.0), (0.0, 1.0), seed=0)
    theirs = trainer.evaluate()
    assert ours["0.0"]["token_accuracy"] == pytest.approx(theirs["eval_mean_token_accuracy"], abs=1e-6)
    # the last layer's loss: the model's own mean token cross-entropy, weighted by each batch's trained tokens
    # (Trainer's eval_loss is the unweighted mean of the batch means)
    total = count = 0.0
    with torch.no_grad():
        for batch in trainer.get_eval_dataloader():
            n = float((batch["labels"][:, 1:] != -100).sum())
            out = trainer.model(
                input_ids=batch["input_ids"],
                attention_mask=batch.get("attention_mask"),
                labels=batch["labels"],
            )
            total, count = total + float(out.loss) * n, count + n
    assert ours["0.0"]["layer_loss"][-1] == pytest.approx(total / count, rel=1e-4)  # float32 sums
    assert len(ours["0.0"]["layer_loss"]) == 4 and ours["1.0"]["layer_loss"] != ours["0.0"]["layer_loss"]
    assert ours["0.0"]["layer_token_accuracy"][-1] == pytest.approx(ours["0.0"]["token_accuracy"], abs=1e-12)


def test_outright_exit_accuracy_is_that_of_the_model_cut_after_layer_l(
    tmp_path, tiny_chat_model, instruction_file
):
    """``layer_token_accuracy[l]`` (the logit lens) equals HF's own forward of the model cut to l layers."""
    from unrolled.experiments.sft.evaluate import evaluate_tokens
    from unrolled.perturb import Perturbation

    trainer = _trainer(tmp_path, tiny_chat_model, instruction_file, max_steps=40, learning_rate=0.01)
    trainer.train()  # a random model predicts no token right: train it until layers differ
    accuracy = evaluate_tokens(trainer, Perturbation("gaussian", 0.0, 0.0, 1.0), (0.0,), seed=0)["0.0"][
        "layer_token_accuracy"
    ]
    layers = trainer.model.model.layers
    cut = []
    for depth in (1, 2, 3):
        trainer.model.model.layers = layers[:depth]
        hits = count = 0
        with torch.no_grad():
            for batch in trainer.get_eval_dataloader():
                batch = trainer._prepare_inputs(batch)
                logits = trainer.model(
                    input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")
                ).logits
                labels = batch["labels"][:, 1:]
                mask = labels != -100
                hits += int(((logits[:, :-1].argmax(-1) == labels) & mask).sum())
                count += int(mask.sum())
        cut.append(hits / count)
    trainer.model.model.layers = layers
    assert accuracy[1:] == pytest.approx(cut, abs=1e-12)
    assert accuracy[-1] > 0.1 and len(set(accuracy[1:])) > 1, accuracy  # not a vacuous comparison


def test_batched_greedy_generation_equals_one_at_a_time(tiny_chat_model):
    from transformers import AutoModelForCausalLM

    from tests.experiments.sft.conftest import PAIRS
    from unrolled.eval import generate_responses

    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    tok = make_tokenizer()
    prompts = [[{"role": "user", "content": p}] for p, _ in PAIRS[:5]]
    batched = generate_responses(model, tok, prompts, max_new_tokens=8, batch_size=5)
    single = generate_responses(model, tok, prompts, max_new_tokens=8, batch_size=1)
    assert batched.texts == single.texts and batched.new_tokens == single.new_tokens
    assert tok.padding_side == "right"  # restored
    # the reference: transformers' generate on one unpadded prompt, greedy
    ids = tok(tok.apply_chat_template(prompts[0], add_generation_prompt=True, tokenize=False), return_tensors="pt",
              add_special_tokens=False)["input_ids"]  # fmt: skip
    ref = model.generate(ids, do_sample=False, max_new_tokens=8, pad_token_id=tok.pad_token_id)[
        0, ids.shape[1] :
    ]
    end = (ref == tok.eos_token_id).nonzero()
    ref = ref[: int(end[0])] if len(end) else ref
    assert single.texts[0] == tok.decode(ref, skip_special_tokens=True).strip()


def test_a_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, tiny_chat_model, instruction_file
):
    from transformers import TrainerCallback

    from unrolled.train.hf import NonFiniteLossError

    trainer = _trainer(tmp_path, tiny_chat_model, instruction_file, max_steps=4, save_strategy="steps", save_steps=2,
                       constraint_alpha=0.1)  # fmt: skip

    class Poison(TrainerCallback):
        def on_save(self, args, state, control, model=None, **kw):
            with torch.no_grad():
                model.get_input_embeddings().weight[:] = float("nan")

    trainer.add_callback(Poison())
    with pytest.raises(NonFiniteLossError, match=r"at step 3 .*checkpoint-2"):
        trainer.train()
    good = tmp_path / "out" / "checkpoint-2"
    from safetensors.torch import load_file

    weights = load_file(good / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert (good / "constraints.pt").exists()


def test_a_recipe_study_base_model_early_exit_calibration_and_seeds_per_method(
    tmp_path, tiny_chat_model, instruction_file
):
    """The rows of an issue-17 study: the base model without fine-tuning, ERM, the early-exit loss and
    calibrated constraints; methods on some seeds only; every layer read out at γ = 0 alone."""
    from unrolled.experiments.registry import get_family

    cfg = tiny_config(
        tiny_chat_model, instruction_file, seeds=[0, 1], winrate=None,
        perturbation={"train_gamma": 0.5, "test_gammas": [0.0, 1.5], "layer_gammas": [0.0]},
        methods=[
            {"name": "base", "finetune": False, "seeds": [0]},
            {"name": "erm"},
            {"name": "ee", "early_exit": {"scale_type": "l", "curriculum": "gradual"}, "seeds": [0]},
            {"name": "cal", "constraints": {"alpha": 0.1, "calibrate": {"batches": 1}}, "seeds": [1]},
        ],
    )  # fmt: skip
    plan = [u.key for u in get_family("sft").plan(cfg)]
    assert plan == ["base/seed0", "erm/seed0", "ee/seed0", "erm/seed1", "cal/seed1"]
    results = run_experiment(cfg, tmp_path / "run", progress=False, log=lambda _: None)
    methods = results["methods"]
    assert [methods[n]["seeds"] for n in ("base", "erm", "ee", "cal")] == [[0], [0, 1], [0], [1]]
    assert methods["base"]["objective"] == "base" and "step_seconds" not in methods["base"]
    assert methods["ee"]["objective"] == "early_exit" and methods["cal"]["objective"] == "constrained"
    assert methods["ee"]["task_weight_per_seed"][0] == pytest.approx(3 / 6)  # l-scaled, all 3 exits on
    assert set(methods["erm"]["layer_loss_mean"]) == {"0.0"}  # layers read at γ = 0 only
    cal = methods["cal"]["calibration_per_seed"][0]
    assert len(cal["alphas"]) == 3 and all(a <= 0.1 for a in cal["alphas"])
    assert not (tmp_path / "run" / "models" / "base").exists()  # nothing trained, nothing saved
    report = (tmp_path / "run" / "report.md").read_text()
    assert "The recipes side by side" in report and "The layerwise objective at the end of training" in report


def test_a_model_cut_after_layer_l_reads_out_layer_l(tiny_chat_model):
    """``cut_after(model, l)`` runs the first l layers, then the final norm and head: HF's hidden state l read
    out by the logit lens; and the model is whole again afterwards."""
    from transformers import AutoModelForCausalLM

    from unrolled.experiments.sft.exits import cut_after

    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model).eval()
    ids = torch.randint(3, 60, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = model(ids, output_hidden_states=True)
        for layer in (1, 2):
            with cut_after(model, layer):
                cut = model(ids).logits
            lens = model.lm_head(model.model.norm(whole.hidden_states[layer]))
            assert torch.allclose(cut, lens, atol=1e-5), layer
        assert torch.allclose(model(ids).logits, whole.logits)
    with pytest.raises(ValueError, match="after layer 4"), cut_after(model, 4):
        pass


@pytest.mark.parametrize("gammas", [[0.0], [0.0, 1.5]])
def test_the_recipe_table_has_stress_columns_only_when_a_perturbed_gamma_was_tested(gammas):
    """A run tested at γ = 0 alone shows each accuracy and win rate once, not twice under the same heading."""
    from unrolled.experiments.sft.report import recipe_table

    def method(label, acc):
        return {"label": label, "token_accuracy_mean": [acc] * len(gammas), "token_accuracy_std": [0.0] * len(gammas),
                "seeds": [0], "violation_share": {"0.0": 0.5}, "layers": 4}  # fmt: skip

    results = {"gammas": gammas, "seeds": [0], "methods": {"erm": method("ERM", 0.6), "ee": method("EE", 0.5)},
               "winrates": [{"method": "ee", "baseline": "erm", "gamma": 0.0, "judge": "j", "rate_mean": 0.25}]}  # fmt: skip
    text = recipe_table(results)
    head = text.splitlines()[0]
    assert head.count("accuracy γ=") == len(gammas) and head.count("win rate γ=") == len(gammas)
    ee = next(line for line in text.splitlines() if line.startswith("| EE"))
    assert ee.count("0.500 (-0.100)") == len(gammas) and "25.0%" in ee and "2 of 4" in ee
