"""Shared helpers of the benchmark scripts: timing, environment info, tables and atomic JSON output.

Timing protocol (used by every script): each callable is run ``warmup`` times, the last of them timed to
choose ``inner``, the number of calls per repeat that makes a repeat last at least ``min_time`` seconds.
The callables being compared are then timed in alternation (repeat 1 of each, then repeat 2 of each, ...),
so slow drifts of the machine hit both alike.
A repeat's time is its wall-clock time (``time.perf_counter``) divided by ``inner``; the reported figure is
the median over repeats. The load average is recorded too: on a small shared machine, other processes
competing for the cores slow multi-threaded torch ops by large factors, which the JSON should show.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROOT = RESULTS_DIR.parents[1]


def _sources(module: str) -> list[Path]:
    """The source files of a module, or of every module of a package (``unrolled.constrained``); a package's
    own ``__init__.py`` alone as ``unrolled.models.__init__``."""
    import importlib.util

    if module.endswith(".__init__"):
        spec = importlib.util.find_spec(module.removesuffix(".__init__"))
        if spec is None or spec.origin is None:
            raise ValueError(f"no source for measured module {module!r}")
        return [Path(spec.origin)]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"no source for measured module {module!r}")
    origin = Path(spec.origin)
    if origin.name == "__init__.py":
        return sorted(origin.parent.rglob("*.py"))
    return [origin]


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def provenance(script: str, measured: Sequence[str]) -> dict[str, Any]:
    """What a result was measured on: the commit, whether the tree had changes, and the sha256 of every
    source file it measures (the modules in ``measured`` and the script itself), keyed by repository path.

    ``tests/test_benchmark_freshness.py`` compares these hashes with the files as they are now, so a result
    whose measured code changed fails the tests until the benchmark is re-run.
    """
    import subprocess

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    files = {Path(script).resolve()}
    for module in measured:
        files.update(p.resolve() for p in _sources(module))
    hashes = {str(p.relative_to(ROOT)): file_hash(p) for p in sorted(files)}
    return {
        "commit": git("rev-parse", "HEAD") or None,
        "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
        "measured": hashes,
    }


def environment(device: str = "cpu") -> dict[str, Any]:
    """Versions and machine facts recorded with every result."""
    import numpy as np

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "load_average_at_start": load_average(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda_version"] = torch.version.cuda
    return info


def _cpu_model() -> str | None:
    """The CPU model name from /proc/cpuinfo (Linux), else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def synchronizer(device: str) -> Callable[[], None]:
    """A function that waits for queued device work (a no-op on the CPU)."""
    if device.startswith("cuda"):
        dev = torch.device(device)
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


def resolve_device(device: str) -> str:
    """Check that ``device`` can be used; exit with a message if cuda is asked for and missing."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: CUDA is not available in this torch build / on this machine")
    torch.empty(0, device=device)  # fail early on a bad device string
    return device


def measure(
    fns: Mapping[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int,
    min_time: float,
    sync: Callable[[], None],
    budget_s: float | None = None,
    min_repeats: int = 3,
    max_inner: int = 10_000,
) -> dict[str, dict[str, Any]]:
    """Time every callable of ``fns`` in alternation; see the module docstring.

    The last warm-up call (at least one is made) is timed to choose ``inner``. With ``budget_s``, a callable
    whose repeats would take longer than that in total gets fewer repeats, but never fewer than
    ``min_repeats`` (nor more than ``repeats``): this keeps the slow reference forms of big cases affordable.

    Returns, per name: ``median_s`` (seconds per call), ``min_s``, ``max_s``, ``times_s`` (every repeat),
    ``inner`` (calls per repeat), ``repeats`` (actually run) and ``warmup``.
    """
    inner: dict[str, int] = {}
    reps: dict[str, int] = {}
    for name, fn in fns.items():
        for _ in range(max(warmup, 1) - 1):
            fn()
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        one = max(time.perf_counter() - t0, 1e-9)
        inner[name] = int(min(max_inner, max(1, math.ceil(min_time / one))))
        reps[name] = repeats
        if budget_s is not None:
            affordable = math.floor(budget_s / (one * inner[name]))
            reps[name] = max(1, min(repeats, max(min_repeats, affordable)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(max(reps.values())):
        for name, fn in fns.items():
            if r >= reps[name]:
                continue
            k = inner[name]
            sync()
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            sync()
            times[name].append((time.perf_counter() - t0) / k)
    return {
        name: {
            "median_s": statistics.median(ts),
            "min_s": min(ts),
            "max_s": max(ts),
            "times_s": ts,
            "inner": inner[name],
            "repeats": len(ts),
            "warmup": max(warmup, 1),
        }
        for name, ts in times.items()
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none): other work skews timings."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def fmt_seconds(s: float) -> str:
    """A duration with a readable unit."""
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1.0:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.3f} s"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, columns right-aligned except the first."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def saved_bytes(step: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd saves during ``step()`` (activation memory, counted once each)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        except RuntimeError:
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def compare_steps(
    steps: Mapping[str, Callable[[], object]],
    static: Mapping[str, int],
    repeats: int,
    device: str,
    warmup: int = 2,
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, int]]:
    """Time training steps side by side (alternating, so load changes hit every variant alike) and measure
    their memory: on CUDA ``max_memory_allocated``; on the CPU the bytes autograd saves plus ``static`` (the
    parameters, gradients and optimizer state). Returns (median seconds, every time, memory bytes) by name."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    sync = synchronizer(device)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for k, step in steps.items():
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times[k].append(time.perf_counter() - t0)
    memory = {}
    for k, step in steps.items():
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            step()
            memory[k] = torch.cuda.max_memory_allocated()
        else:
            memory[k] = saved_bytes(step) + static[k]
    return {k: statistics.median(v) for k, v in times.items()}, times, memory


def print_ratios(median: Mapping[str, float], memory: Mapping[str, int], base: str = "erm") -> None:
    """One line per variant: step time and memory, and both over the ``base`` variant's."""
    print(f"{'variant':40s} {'step':>10s} {'×ERM':>6s} {'memory MB':>10s} {'×ERM':>6s}")
    for k in median:
        print(
            f"{k:40s} {median[k] * 1e3:8.1f} ms {median[k] / median[base]:6.2f} "
            f"{memory[k] / 2**20:10.1f} {memory[k] / memory[base]:6.2f}"
        )


def write_json(data: Any, path: Path) -> Path:
    """Write ``data`` as JSON atomically: to a temp file in the same folder, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, allow_nan=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
