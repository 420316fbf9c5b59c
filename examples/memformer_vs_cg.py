"""A Memformer against conjugate gradient, layer by layer, from the Python API.

A 4-layer LFOM Memformer (Dutta & Sra) learns, in context, a linear first-order method for least squares on
non-isotropic prompts (d = 5, n = 20). Conjugate gradient is the classical method it competes with. Both are
solvers that return a trajectory, so one call gives the loss after every layer or every CG step, on the
same held-out prompts.

    python examples/memformer_vs_cg.py            # about 25 s on 2 cores
    python examples/memformer_vs_cg.py --quick    # seconds (CI)
"""

import argparse
import math

import torch
from _tiny import save_figure

from unrolled.models.memformer import LFOMMemformer
from unrolled.report import integer_axis, pyplot
from unrolled.solvers.classical import ConjugateGradient
from unrolled.tasks.regression import RegressionConfig, RegressionTask
from unrolled.train import train
from unrolled.train.config import TrainConfig
from unrolled.train.loop import RegressionStream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, for CI")
    parser.add_argument("--out", default="runs/examples", help="where the figure goes")
    args = parser.parse_args()
    torch.manual_seed(0)

    task = RegressionTask(RegressionConfig(d=5, n=20, covariance="rotated"), seed=0)
    test = task.sample(2000, torch.Generator().manual_seed(1))  # held-out prompts
    model = LFOMMemformer(d=5, n=20, layers=4, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(steps=40 if args.quick else 1000, batch_size=200 if args.quick else 1000, lr=0.01)

    with torch.no_grad():
        untrained = model(test).layerwise_losses(test.y_query)  # f_0..f_4 before training
    train(model, RegressionStream(task, cfg, torch.Generator().manual_seed(2)), cfg)  # online: fresh prompts
    with torch.no_grad():
        memformer = model(test).layerwise_losses(test.y_query)
    cg_run = ConjugateGradient()(test, steps=5)  # 5 steps: exact on d = 5
    cg = cg_run.layerwise_losses(test.y_query)

    print("log test loss after step 0, 1, 2, ... (layers for the Memformer, iterations for CG):")
    rows = [
        ("Memformer, untrained", untrained),
        ("Memformer, trained", memformer),
        ("conjugate gradient", cg),
    ]
    for name, losses in rows:
        print(f"  {name:22s}" + " ".join(f"{math.log(v):6.2f}" for v in losses))

    # checks: training helped at every layer; CG's 5th iterate predicts what least squares does (float64 lstsq)
    assert (memformer[1:] < untrained[1:]).all(), "training should lower the loss at every layer"
    w_ls = torch.linalg.lstsq(test.X.double(), test.y.double().unsqueeze(-1)).solution.squeeze(-1)
    least_squares = (test.x_query.double() * w_ls).sum(-1)
    gap = (cg_run.prediction().double() - least_squares).pow(2).mean()
    assert gap < 1e-6, f"CG after d steps should match least squares; mean squared gap {float(gap):.2e}"

    plt = pyplot()
    if plt is None:
        print("(no figure: pip install 'unrolled[plot]')")
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(range(5), memformer.log(), "-o", label="LFOM Memformer (trained)")
    ax.plot(range(5), untrained.log(), ":", label="LFOM Memformer (untrained)")
    ax.plot(range(5), cg[:5].log(), "-s", label="conjugate gradient (exact at step d = 5, off the axis)")
    ax.set(xlabel="layer / CG step", ylabel="log test loss", title="held-out prompts, d = 5, n = 20")
    integer_axis(ax.xaxis)
    ax.legend()
    save_figure(fig, args.out, "memformer_vs_cg.png")


if __name__ == "__main__":
    main()
