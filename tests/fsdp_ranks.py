"""The ranks of tests/test_fsdp.py: a constrained trainer's loss on a model sharded by FSDP2 (``fully_shard``),
on CPU with gloo, against one process computing the same two micro-batches.

``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/fsdp_ranks.py OUT KIND`` (KIND:
``sft`` or ``classifier``) writes ``OUT/rank<r>.json``; ``python tests/fsdp_ranks.py OUT KIND --single`` writes
``OUT/single.json``. Each trains 3 steps under the constrained objective, then resumes a fourth time from a
``torch.distributed.checkpoint`` written after step 2 and checks it retraces step 3.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build(kind: str, out: Path):
    """The trainer (never ``train()``-ed: the loop is ours, so the Trainer adds no DDP wrapper), its model
    and the two micro-batches of every step."""
    if kind == "sft":
        from tests.test_sft import PAPER_FORM, common, dataset, tiny_llama, tokenizer
        from unrolled.train.sft import ConstrainedSFTConfig, ConstrainedSFTTrainer

        tok = tokenizer()
        args = ConstrainedSFTConfig(**common(out), **PAPER_FORM, constraint_alpha=0.3, dual_lr=1.0)
        trainer = ConstrainedSFTTrainer(model=tiny_llama(len(tok)), args=args, train_dataset=dataset(),
                                        processing_class=tok)  # fmt: skip
        rows = [trainer.train_dataset[i] for i in range(4)]
        halves = [trainer.data_collator(rows[:2]), trainer.data_collator(rows[2:])]
        return trainer, trainer.model, halves, "layers"
    from tests.test_hf_trainer import Examples, args, solver
    from unrolled.constrained import ConstraintConfig
    from unrolled.train.hf import ConstrainedTrainer

    data = Examples(n=4)
    trainer = ConstrainedTrainer(model=solver(), args=args(out), train_dataset=data,
                                 constraints=ConstraintConfig(alpha=0.5, dual_lr=2.0))  # fmt: skip
    rows = [data[i] for i in range(4)]
    stack = lambda part: {k: torch.stack([r[k] for r in part]) for k in part[0]}  # noqa: E731
    return trainer, trainer.model, [stack(rows[:2]), stack(rows[2:])], "model.encoder.layer"


def shard(model: torch.nn.Module, path: str) -> None:
    """FSDP2: every transformer block its own unit, then the root (norm, heads, embeddings)."""
    from torch.distributed.fsdp import fully_shard

    blocks = (
        model.get_base_model().model.layers if path == "layers" and hasattr(model, "get_base_model") else None
    )
    if blocks is None:
        node = model
        for part in ("model." + path if path == "layers" else path).split("."):
            node = getattr(node, part)
        blocks = node
    for block in blocks:
        fully_shard(block)
    fully_shard(model)


def step(trainer, model, batches, optimizer, number: int) -> float:
    trainer.state.global_step = number - 1
    trainer.current_gradient_accumulation_steps = 1
    model.train()
    optimizer.zero_grad(set_to_none=True)
    losses = [trainer.compute_loss(model, dict(b)) for b in batches]
    loss = sum(losses) / len(losses)
    loss.backward()
    optimizer.step()
    trainer.objective.after_step(number)
    return float(loss.detach())


def main() -> None:
    out, kind, single = Path(sys.argv[1]), sys.argv[2], "--single" in sys.argv
    out.mkdir(parents=True, exist_ok=True)
    if not single:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if not single else 0
    torch.manual_seed(0)
    trainer, model, halves, path = build(kind, out / f"trainer{rank}")
    if not single:
        shard(model, path)
    batches = halves if single else [halves[rank]]  # one process: both micro-batches; a rank: its own
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    record = {"loss": [], "multipliers": []}
    for n in (1, 2, 3):
        record["loss"].append(step(trainer, model, batches, optimizer, n))
        record["multipliers"].append(trainer.objective.multipliers.value.tolist())
        if n == 2 and not single:  # a checkpoint written under FSDP: sharded model and optimizer, the duals
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict

            msd, osd = get_state_dict(model, optimizer)
            dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(out / "ckpt"))
            torch.save(trainer.objective.state_dict(), out / f"objective{rank}.pt")
    if not single:  # resume from the checkpoint in a fresh trainer and retrace step 3
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        torch.manual_seed(1)  # other initial weights: the checkpoint must overwrite them
        fresh, fresh_model, _, _ = build(kind, out / f"fresh{rank}")
        shard(fresh_model, path)
        fresh_opt = torch.optim.SGD(fresh_model.parameters(), lr=0.05)
        msd, osd = get_state_dict(fresh_model, fresh_opt)
        state = {"model": msd, "optim": osd}
        dcp.load(state, checkpoint_id=str(out / "ckpt"))
        set_state_dict(
            fresh_model, fresh_opt, model_state_dict=state["model"], optim_state_dict=state["optim"]
        )
        fresh.objective.load_state_dict(torch.load(out / f"objective{rank}.pt", weights_only=False))
        record["resumed_loss"] = step(fresh, fresh_model, batches, fresh_opt, 3)
        record["resumed_multipliers"] = fresh.objective.multipliers.value.tolist()
        record["sharded"] = type(model).__name__
    (out / ("single.json" if single else f"rank{rank}.json")).write_text(json.dumps(record))
    if not single:
        import gc

        del trainer, model
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
