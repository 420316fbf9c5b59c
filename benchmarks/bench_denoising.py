"""Constrained vs unconstrained training step of the UT video denoiser, and the clip loader's throughput.

What is measured, in one process, on the default config (``configs/denoise_constrained_vs_erm.yaml``: the
UT method, its clip size and batch size):

1. One training step (zero_grad, forward, objective, backward, Adam step) on the *same* noisy batch:
   * ``erm``: the last layer's MSE;
   * ``constrained, λ = 0``: the Lagrangian f_L + Σ λ_l s_l at the start of training (every multiplier 0:
     the other layers are read out for the slacks without a graph);
   * ``constrained, λ > 0``: every multiplier positive, so every layer's readout is back-propagated (the
     most expensive case), intermediate readouts in Gram form (``unrolled.constrained.gram``, the default);
   * ``… layer by layer``: the same with one checkpointed direct readout per layer (the general path, and
     this library's path for the denoisers before the Gram form);
   * ``… 0.5 / 0.25 of samples``: the unbiased subsampled estimator of the intermediate readouts.
   Also on that batch: the largest relative difference between the Gram form's and the direct readout's
   layerwise losses and parameter gradients, and the time of the objective's bookkeeping (Lagrangian from
   given losses, slacks, logs, dual step) against a step.
   Time: median over repeats, the variants alternating. Memory: the bytes autograd saves for the backward
   pass (``torch.autograd.graph.saved_tensors_hooks``, counted once per storage) plus parameters, gradients
   and Adam state: the CPU analogue of peak training memory (on CUDA, ``max_memory_allocated`` is used).
2. Loader throughput: clips per second from :class:`unrolled.experiments.denoising.ClipStream` (sampling, cropping,
   stacking and noising a batch) against the clips per second one ERM training step consumes.
3. Architectures at equal width and depth: the ERM and constrained (λ > 0) steps of the config's UT, ViT and
   DUST (64 wide, 6 layers, 4 heads; DUST with its configured (1, 8, 8) patches), side by side on the same
   batch, as ratios to the UT's ERM step.

4. Compiled steps (``train.compile``, ``benchmarks/_compiled.py``): for the UT, ViT and DUST of 3., eager
   ERM, compiled ERM, eager constrained (λ > 0, Gram form) and compiled constrained on the same batch (for
   the UT also the constrained step reading the intermediate layers on half of the samples), with
   the one-time compile cost, the steps after which compiling pays off and each step's share of the
   machine's float32 matmul peak.

Targets (issue 12): constrained (λ > 0, exact) ≤ 1.20× the ERM step time at ≤ 1.10× its memory; the loader
≥ 5× what training consumes. Issue 19: the compiled constrained UT step ≤ 1.15× the compiled ERM step, and
no compiled step slower than its eager one. Writes ``benchmarks/results/bench_denoising.json``.

    python benchmarks/bench_denoising.py [--repeats 15] [--threads 1] [--compile default|reduce-overhead|off]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from _compiled import compiled_comparison, matmul_peak_gflops, print_comparison
from _harness import compare_steps, print_ratios, provenance
from unrolled.constrained import ConstrainedObjective, DescentConstraints, Multipliers, Objective
from unrolled.experiments import load_config
from unrolled.experiments.denoising import ClipStream, DenoiserMethod, build_denoiser, load_split
from unrolled.models.denoisers import clip_mse
from unrolled.perturb import Perturbation
from unrolled.tasks.video import VideoDataConfig
from unrolled.train.checkpoint import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "denoise_constrained_vs_erm.yaml"
#: The code whose speed this benchmark measures (recorded as hashes; see _harness.provenance).
MEASURED = (
    "unrolled.models.denoisers", "unrolled.models.dust", "unrolled.models.unrolled_transformer",
    "unrolled.constrained", "unrolled.trajectory", "unrolled.perturb", "unrolled.experiments.denoising.data",
    "unrolled.tasks.video.clips", "unrolled.train.compiled",
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="clips per step (default: the config's)")
    parser.add_argument(
        "--data", choices=["videos", "random"], default="videos",
        help="the config's real clips (needs the video extra and data), or random clips of their size "
        "(step times only; no loader measurement)",
    )  # fmt: skip
    parser.add_argument(
        "--compile", default="default",
        help="torch.compile mode of the compiled rows (default, reduce-overhead, max-autotune), or off",
    )  # fmt: skip
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_denoising.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(CONFIG)
    if args.batch_size is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"batch_size": args.batch_size})})
    assert isinstance(cfg.task, VideoDataConfig)
    method = next(
        m for m in cfg.methods if isinstance(m, DenoiserMethod) and m.kind == "ut" and m.constraints
    )
    stream = None
    if args.data == "videos":
        split = load_split(cfg.task, 0)
        sigma = float(torch.stack([split.train[i] for i in range(256)]).std())
        noise = Perturbation("gaussian", cfg.perturbation.train_gamma, 0.0, sigma)
        stream = ClipStream(split.train, cfg.train.batch_size, noise, torch.Generator().manual_seed(0))
        noisy, clean = stream.next()
    else:  # clips of the config's size, uniform values: step times depend on shapes, not on pixel values
        g = torch.Generator().manual_seed(0)
        shape = build_denoiser(method, cfg.task, torch.Generator().manual_seed(0)).clip_shape  # (T, C, H, W)
        clean = torch.rand(cfg.train.batch_size, *shape, generator=g)
        noisy = clean + cfg.perturbation.train_gamma * float(clean.std()) * torch.randn(
            clean.shape, generator=g
        )
    noisy, clean = noisy.to(args.device), clean.to(args.device)

    def objective_for(kind: str, method: DenoiserMethod, fraction: float = 1.0) -> Objective:
        if kind == "erm":
            return Objective(None)  # the denoiser's own loss: the clip MSE of its readout
        loss = clip_mse if kind.endswith("layer by layer") else None  # None: Gram form
        objective = ConstrainedObjective(
            DescentConstraints(method.constraints.alpha), Multipliers(method.depth, 1.0), loss,
            readout_fraction=fraction,
        )  # fmt: skip
        if kind.startswith("constrained, λ > 0"):
            objective.multipliers.value = torch.full((method.depth,), 0.5, dtype=torch.float64)
        return objective

    def variant(kind: str, method: DenoiserMethod = method, fraction: float = 1.0):
        model = build_denoiser(method, cfg.task, torch.Generator().manual_seed(0)).to(args.device)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
        objective = objective_for(kind, method, fraction)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss, _ = objective.loss(model(noisy), clean)
            loss.backward()
            opt.step()

        static = sum(p.numel() * p.element_size() for p in model.parameters()) * 4  # params, grads, Adam m, v
        return step, static

    kinds = ["erm", "constrained, λ = 0", "constrained, λ > 0", "constrained, λ > 0, layer by layer"]
    steps, static = {}, {}
    for k in kinds:
        steps[k], static[k] = variant(k)
    for fraction in (0.5, 0.25):  # the unbiased subsampled estimator of the intermediate readouts
        k = f"constrained, λ > 0, {fraction:g} of samples"
        steps[k], static[k] = variant("constrained, λ > 0", fraction=fraction)
    kinds = list(steps)
    median, times, memory = compare_steps(steps, static, args.repeats, args.device, warmup=3)
    agreement = gram_agreement(method, cfg, noisy, clean, objective_for, args.device)
    bookkeeping = bookkeeping_seconds(objective_for("constrained, λ > 0", method), method.depth, args.repeats)

    # loader: clips/s of the stream vs clips/s a training step consumes
    loader_cps = train_cps = None
    loader_times = [] if stream is not None else None
    if stream is not None:
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            stream.next()
            loader_times.append(time.perf_counter() - t0)
        loader_cps = cfg.train.batch_size / statistics.median(loader_times)
        train_cps = cfg.train.batch_size / median["erm"]

    # architectures at equal width and depth: the config's ERM/constrained pairs of each kind
    arch_steps, arch_static = {}, {}
    for kind in ("ut", "vit", "dust"):
        erm = next(m for m in cfg.methods if m.kind == kind and m.constraints is None)
        con = next(m for m in cfg.methods if m.kind == kind and m.constraints is not None)
        assert (erm.width, erm.depth) == (method.width, method.depth), (
            "architectures at equal width and depth"
        )
        arch_steps[f"{kind} erm"], arch_static[f"{kind} erm"] = variant("erm", erm)
        arch_steps[f"{kind} constrained"], arch_static[f"{kind} constrained"] = variant(
            "constrained, λ > 0", con
        )
    arch_median, _, arch_memory = compare_steps(arch_steps, arch_static, args.repeats, args.device, warmup=3)

    compiled: dict[str, dict] = {}
    if args.compile != "off":
        peak = matmul_peak_gflops(args.device)
        for kind in ("ut", "vit", "dust"):
            con = next(m for m in cfg.methods if m.kind == kind and m.constraints is not None)
            objectives = {
                "erm": lambda con=con: objective_for("erm", con),
                "constrained": lambda con=con: objective_for("constrained, λ > 0", con),
            }
            if kind == "ut":  # the subsampled readouts of issue 12, compiled
                objectives["constrained, 0.5 of the samples"] = lambda con=con: objective_for(
                    "constrained, λ > 0", con, 0.5
                )
            compiled[kind] = compiled_comparison(
                lambda con=con: build_denoiser(con, cfg.task, torch.Generator().manual_seed(0)),
                objectives,
                noisy, clean, lr=cfg.train.lr, repeats=args.repeats, device=args.device, mode=args.compile,
                peak_gflops=peak,
            )  # fmt: skip

    print(f"UT denoiser {method.width}×{method.depth}, heads {method.heads}, patch {method.patch}, clips "
          f"{cfg.task.frames}×{cfg.task.crop}×{cfg.task.crop}, batch {cfg.train.batch_size}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), median of {args.repeats}")  # fmt: skip
    print_ratios(median, memory)
    if loader_cps is not None:
        print(f"loader {loader_cps:,.0f} clips/s vs training {train_cps:,.0f} clips/s: "
              f"{loader_cps / train_cps:.0f}×")  # fmt: skip
    print(
        f"Gram form vs direct readouts on this batch: losses within {agreement['losses']:.1e}, gradients "
        f"within {agreement['gradients']:.1e} (relative); bookkeeping {bookkeeping * 1e3:.2f} ms per step "
        f"({bookkeeping / median['constrained, λ > 0']:.1%} of the constrained step)"
    )
    print(f"\narchitectures, width {method.width}, depth {method.depth} (ratios to the UT's ERM step):")
    print_ratios(arch_median, arch_memory, base="ut erm")
    for kind, result in compiled.items():
        print_comparison(f"{kind} denoiser, eager vs compiled", result)
    targets = {
        "compiled_constrained_over_compiled_erm_max": 1.15,
        "constrained_time_ratio_max": 1.20,
        "constrained_memory_ratio_max": 1.10,
        "loader_over_training_min": 5.0,
    }
    ratios = {k: {"time": median[k] / median["erm"], "memory": memory[k] / memory["erm"]} for k in kinds}
    passed = {
        k: ratios[k]["time"] <= targets["constrained_time_ratio_max"]
        and ratios[k]["memory"] <= targets["constrained_memory_ratio_max"]
        for k in kinds[1:]
    }
    record = {
        "config": str(CONFIG.relative_to(ROOT)),
        "method": method.name,
        "batch_size": cfg.train.batch_size,
        "median_step_seconds": median,
        "step_seconds": times,
        "memory_bytes": memory,
        "memory_measure": "cuda max_memory_allocated"
        if args.device.startswith("cuda")
        else "autograd saved tensors + params, grads, Adam state",
        "ratios_to_erm": ratios,
        "gram_vs_direct_max_relative_difference": agreement,
        "bookkeeping_seconds": bookkeeping,
        "bookkeeping_share_of_constrained_step": bookkeeping / median["constrained, λ > 0"],
        "loader_clips_per_second": loader_cps,
        "training_clips_per_second": train_cps,
        "loader_over_training": None if loader_cps is None else loader_cps / train_cps,
        "data": args.data,
        "architectures": {
            "width": method.width,
            "depth": method.depth,
            "median_step_seconds": arch_median,
            "memory_bytes": arch_memory,
            "time_ratio_to_ut_erm": {k: v / arch_median["ut erm"] for k, v in arch_median.items()},
        },
        "compiled": compiled,
        "targets": targets,
        "passed": {
            **passed,
            **(
                {
                    "compiled_constrained_ut": compiled["ut"]["over_erm"]["compiled"]["constrained"]
                    <= targets["compiled_constrained_over_compiled_erm_max"],
                    "compiled_no_slower": all(
                        r <= 1.0 for c in compiled.values() for r in c["compiled_over_eager"].values()
                    ),
                }
                if compiled
                else {}
            ),
            "loader": None
            if loader_cps is None
            else loader_cps / train_cps >= targets["loader_over_training_min"],
        },
        "provenance": provenance(__file__, MEASURED),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
    }
    atomic_write_json(args.out, record)
    print(f"passed: {record['passed']}")
    print(f"wrote {args.out}")


def gram_agreement(method, cfg, noisy, clean, objective_for, device: str) -> dict[str, float]:
    """Largest relative difference, Gram form vs one direct readout per layer, of the layerwise losses and of
    every parameter's gradient of the Lagrangian (λ > 0), on one batch from the same initial model."""
    out = []
    for kind in ("constrained, λ > 0", "constrained, λ > 0, layer by layer"):
        model = build_denoiser(method, cfg.task, torch.Generator().manual_seed(0)).to(device)
        objective = objective_for(kind, method)
        losses = objective.layer_losses(model(noisy), clean)
        objective.lagrangian(losses)[0].backward()
        out.append((losses.detach(), [p.grad for p in model.parameters()]))
    (la, ga), (lb, gb) = out

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().max() / b.abs().max())

    return {"losses": rel(la, lb), "gradients": max(rel(a, b) for a, b in zip(ga, gb, strict=True))}


def bookkeeping_seconds(objective: ConstrainedObjective, depth: int, repeats: int) -> float:
    """Median time of the Lagrangian from given losses (slacks, running sums, logs) plus a dual step."""
    losses = torch.rand(depth + 1, requires_grad=True)
    times = []
    for step in range(1, 3 * repeats + 1):
        t0 = time.perf_counter()
        objective.lagrangian(losses)
        objective.after_step(step)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    main()
