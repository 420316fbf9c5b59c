"""Worker processes and ranks: how the runner spreads units over processes without knowing what they do.

* ``--workers N``: independent units run in N spawned processes (one torch thread each); a unit's results do
  not depend on which process ran it or in what order.
* ``torchrun``: every rank runs every unit (DDP inside training), rank 0 alone writes files, the ranks meet
  after each unit, and an error on rank 0 while preparing the folder is raised on every rank.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from unrolled.train.checkpoint import CheckpointError
from unrolled.train.loop import rank_and_world

if TYPE_CHECKING:
    from tqdm import tqdm

    from unrolled.experiments.config import ExperimentConfig
    from unrolled.experiments.family import Unit


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked (exists without --resume, holds another config, is damaged)."""


_PROGRESS: Any = None
_REPORT_EVERY = 50  # steps a worker gathers before it reports progress (a queue put per step is too many)


def _worker_init(progress: Any) -> None:
    global _PROGRESS
    _PROGRESS = progress
    torch.set_num_threads(1)


def _worker_run(cfg: ExperimentConfig, out: str, group: list[Unit]) -> str:
    from unrolled.experiments.runner import Runner

    runner = Runner(cfg, out, resume=True, progress=False, log=lambda _: None)
    pending = [0]

    def advance(k: int) -> None:
        pending[0] += k
        if pending[0] >= _REPORT_EVERY:
            _PROGRESS.put(pending[0])
            pending[0] = 0

    data = {
        s: runner.family.seed_data(cfg, s, runner.dtype, runner.device)
        for s in sorted({u.seed for u in group})
    }
    runner.run_group(group, data, advance)
    if pending[0]:
        _PROGRESS.put(pending[0])
    return group[0].key + (f" (+{len(group) - 1})" if len(group) > 1 else "")


def run_in_pool(
    cfg: ExperimentConfig, out: str, groups: Sequence[list[Unit]], workers: int, bar: tqdm
) -> None:
    """Run ``groups`` of units (an ensemble, or one unit) in ``workers`` spawned processes, phase by phase,
    the costliest first.

    A worker's error is raised here (with its original type) as soon as its group fails.
    """
    ctx = mp.get_context("spawn")
    for phase in sorted({g[0].phase for g in groups}):  # e.g. a mixture's experts before the mixture
        todo = sorted((g for g in groups if g[0].phase == phase), key=lambda g: -sum(u.cost for u in g))
        if not todo:
            continue
        progress = ctx.Queue()
        with ctx.Pool(workers, initializer=_worker_init, initargs=(progress,)) as pool:
            pending = [pool.apply_async(_worker_run, (cfg, out, group)) for group in todo]
            while pending:
                try:
                    bar.update(progress.get(timeout=0.2))
                except queue.Empty:
                    pass
                for job in [j for j in pending if j.ready()]:
                    pending.remove(job)
                    bar.set_postfix_str(job.get(), refresh=False)  # re-raises a worker's error here
            while not progress.empty():
                bar.update(progress.get())


def barrier() -> None:
    """Wait for every rank (no-op outside ``torchrun``)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def on_rank0_then_share(fn: Callable[[], None]) -> None:
    """Run ``fn`` on rank 0 only; if it fails, every rank raises the same error (nobody hangs)."""
    rank, world = rank_and_world()
    if world == 1:
        fn()
        return
    message: list[str | None] = [None]
    if rank == 0:
        try:
            fn()
        except (RunFolderError, CheckpointError, OSError) as exc:
            message[0] = str(exc)
    dist.broadcast_object_list(message, src=0)
    if message[0] is not None:
        raise RunFolderError(message[0])
