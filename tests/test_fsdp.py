"""FSDP2 (``torch.distributed.fsdp.fully_shard``) on CPU with gloo, two processes: the constrained trainers'
losses on a sharded model equal one process's on the same micro-batches, every rank holds the same
multipliers, and a checkpoint written under FSDP (``torch.distributed.checkpoint``) resumes to the same step.

Why not the Trainer's own ``fsdp`` settings: accelerate (1.15) turns FSDP on only for GPU-like distributed
types; on CPU a Trainer given ``fsdp=...`` silently trains with DDP instead (checked: its wrapped model is a
``DistributedDataParallel``). So the ranks here shard the model themselves and call the trainers'
``compute_loss`` in their own loop (tests/fsdp_ranks.py); what this cannot reach is accelerate's FSDP
``prepare`` and its state-dict handling, which only run on GPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
SCRIPT = Path(__file__).with_name("fsdp_ranks.py")


def _run(args: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sft", "classifier"])
def test_fsdp2_ranks_match_one_process_and_resume(tmp_path, kind):
    _run(
        [
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(SCRIPT),
            str(tmp_path),
            kind,
        ]
    )
    _run([str(SCRIPT), str(tmp_path), kind, "--single"])
    r0, r1, one = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("rank0", "rank1", "single"))
    assert r0["sharded"].startswith("FSDP")  # the model really is sharded
    assert r0["multipliers"] == r1["multipliers"]  # every rank takes the same dual steps
    assert max(r0["multipliers"][-1]) > 0  # and the constraints bind
    for a, b, ref in zip(r0["loss"], r1["loss"], one["loss"], strict=True):
        assert (a + b) / 2 == pytest.approx(ref, rel=1e-5)  # the ranks' mean is one process's loss
    for lam, ref in zip(r0["multipliers"], one["multipliers"], strict=True):
        assert lam == pytest.approx(ref, rel=1e-5)
    for r in (r0, r1):  # resumed from the checkpoint written after step 2: step 3 again, exactly
        assert r["resumed_loss"] == pytest.approx(r["loss"][-1], rel=1e-6)
        assert r["resumed_multipliers"] == pytest.approx(r["multipliers"][-1], rel=1e-9)
