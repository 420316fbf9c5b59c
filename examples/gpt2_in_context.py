"""Garg et al.'s GPT-2 in-context learner against least squares, and its layers read as Newton iterations.

A small GPT-2 (64 wide, 3 layers; Garg et al.'s "tiny") learns linear regression in context: prompts of 11
pairs (x_i, y_i = <x_i, w*>), d = 5, every y_i predicted from the pairs before it. It is a solver that returns
a trajectory, so its error at every prompt length sits beside least squares and iterative Newton computed on
every prefix of the same prompts, and each layer can be read (Fu et al. 2023): which number of Newton
iterations do its residuals match best?

    python examples/gpt2_in_context.py            # about 2 minutes on 2 cores
    python examples/gpt2_in_context.py --quick    # seconds (CI)
"""

import argparse

import numpy as np
import torch
from _tiny import save_figure

from unrolled.eval.reading import best_matching, fit_probes, probe_predictions, residual_similarity
from unrolled.models.icl import GPT2Learner, Prompts, prompt_mse
from unrolled.report import integer_axis, pyplot
from unrolled.solvers.prefix import IterativeNewton, least_squares
from unrolled.tasks.regression import RegressionConfig, RegressionTask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, for CI")
    parser.add_argument("--out", default="runs/examples", help="where the figure goes")
    args = parser.parse_args()
    torch.manual_seed(0)
    d, points = 5, 11
    task = RegressionTask(RegressionConfig(d=d, n=points - 1, covariance="isotropic"), seed=0)

    def prompts(size: int, seed: int) -> Prompts:
        return Prompts.from_batch(task.sample(size, torch.Generator().manual_seed(seed)))

    test, probe_fit = prompts(2000, 1), prompts(2000, 2)
    model = GPT2Learner(d, points, width=64, depth=3, heads=2, seed=0)
    steps = 40 if args.quick else 2500
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    stream = torch.Generator().manual_seed(3)

    def error_curve() -> torch.Tensor:  # squared error / d at every number of examples n = 0..10
        with torch.no_grad():
            return (model(test).prediction() - test.ys).square().mean(0) / d

    before = error_curve()
    for step in range(steps):  # fresh prompts every step (Garg et al.'s training)
        batch = Prompts.from_batch(task.sample(64, stream))
        loss = prompt_mse(model(batch).prediction(), batch.ys).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 500 == 0:
            print(f"step {step + 1}: training loss {float(loss):.3f}")
    after = error_curve()
    ls = (least_squares(test).prediction() - test.ys).square().mean(0) / d

    print("squared error / d at n = 0..10 examples:")
    for name, curve in (("GPT-2, untrained", before), ("GPT-2, trained", after), ("least squares", ls)):
        print(f"  {name:18s}" + " ".join(f"{float(v):5.2f}" for v in curve))

    # Fu et al.'s reading: a probe per layer, residuals against Newton's at k = 0..12 iterations
    with torch.no_grad():
        probes = fit_probes(model(probe_fit).states, probe_fit.ys)
        states = model(test).states
    resid = probe_predictions(probes, states) - test.ys.double()
    newton = IterativeNewton()(test.to(dtype=torch.float64), 12)
    newton_resid = torch.stack([newton.readout(s) - test.ys.double() for s in newton.states])
    best = best_matching(residual_similarity(resid, newton_resid), list(range(13)))
    print("best-matching Newton iterations of layers 1..3:", best[1:])

    # checks: training lowered the error with many examples; least squares is numpy's on every prefix
    assert after[-1] < before[-1], "training should lower the error at n = 10"
    xs, ys = test.xs.double().numpy(), test.ys.double().numpy()
    for b, i in ((0, 3), (1, 7), (2, 10)):
        w = np.linalg.lstsq(xs[b, :i], ys[b, :i], rcond=None)[0]
        ours = float(least_squares(test.to(dtype=torch.float64)).prediction()[b, i])
        assert abs(ours - xs[b, i] @ w) < 1e-8, "least squares on a prefix should be numpy's lstsq"

    plt = pyplot()
    if plt is None:
        print("(no figure: pip install 'unrolled[plot]')")
        return
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax.plot(range(points), after, "-o", ms=3, label="GPT-2 (trained)")
    ax.plot(range(points), before, ":", label="GPT-2 (untrained)")
    ax.plot(range(points), ls, "k--", label="least squares")
    ax.set(xlabel="in-context examples n", ylabel="squared error / d", title="held-out prompts, d = 5")
    ax.legend(fontsize=8)
    ax2.plot(range(1, len(best)), best[1:], "-o")
    ax2.set(xlabel="layer", ylabel="best-matching Newton iterations", title="Fu et al.'s reading (probes)")
    for axis in (ax.xaxis, ax2.xaxis, ax2.yaxis):
        integer_axis(axis)
    save_figure(fig, args.out, "gpt2_in_context.png")


if __name__ == "__main__":
    main()
