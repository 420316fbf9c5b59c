"""Two gloo processes on CPU: identical multipliers on both ranks, and the same result as one process."""

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from unrolled.constrained import ConstrainedObjective, DescentConstraints, Multipliers
from unrolled.experiments.regression import LearnedMethod, build_model
from unrolled.tasks import RegressionTask
from unrolled.tasks.regression import RegressionConfig
from unrolled.train import train
from unrolled.train.config import TrainConfig
from unrolled.train.loop import RegressionStream

CFG = TrainConfig(protocol="online", steps=12, batch_size=64, lr=0.01, checkpoint_every=100)


def _fit() -> tuple[torch.nn.Module, ConstrainedObjective]:
    torch.set_num_threads(1)
    model = build_model(
        LearnedMethod(name="m", kind="memformer_lfom"), 5, 20, 3, torch.Generator().manual_seed(0)
    )
    objective = ConstrainedObjective(DescentConstraints(0.3), Multipliers(3, lr=1.0), dual_every=1)
    task = RegressionTask(RegressionConfig(), seed=0)
    stream = RegressionStream(task, CFG, torch.Generator().manual_seed(1), dtype=torch.float64)
    train(model, stream, CFG, objective=objective, dtype=torch.float64)
    return model, objective


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, objective = _fit()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        torch.save({"model": state, "multipliers": objective.multipliers.value}, f"{out_dir}/rank{rank}.pt")
        del model, objective
    finally:
        gc.collect()  # train()'s DDP wrapper must go before its process group, as the CLI does
        dist.destroy_process_group()


def test_two_ranks_hold_identical_multipliers_and_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(r0["multipliers"], r1["multipliers"])  # the same dual step on every rank
    assert r0["multipliers"].max() > 0  # and the constraints did bind
    for key in r0["model"]:
        assert torch.equal(r0["model"][key], r1["model"][key])  # DDP keeps the replicas in sync
    model, objective = _fit()  # one process, the same global batches
    torch.testing.assert_close(objective.multipliers.value, r0["multipliers"], rtol=1e-9, atol=1e-12)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, r0["model"][key], rtol=1e-7, atol=1e-10)


def test_torchrun_cli_writes_one_run_folder(tmp_path):
    """`torchrun --nproc_per_node 2 -m unrolled run CONFIG` trains with DDP; rank 0 alone writes the run."""
    cfg = {
        "name": "ddp",
        "seeds": [0],
        "depths": [2],
        "task": {"d": 3, "n": 8, "covariance": "isotropic"},
        "train": {"protocol": "online", "steps": 6, "batch_size": 32},
        "eval": {"batch_size": 64, "validation_size": 32},
        "methods": [
            {"name": "m", "kind": "memformer_cgd", "constraints": {"alpha": 0.2}},
            {"name": "cg", "kind": "cg"},
        ],
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "unrolled", "run", str(path), "--out", str(tmp_path / "run"), "--no-progress",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["distributed_world_size"] == 2
    assert set(results["methods"]) == {"m", "cg"}
    assert Path(tmp_path / "run" / "report.md").exists()
