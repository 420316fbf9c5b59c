"""A mixture of Memformer experts adapted at test time to a variance shift (Dutta & Sra, Sec. 5).

Three LFOM Memformers are trained on in-context regression prompts of variance σ² = 1, 2 and 3. At test
time the data's variance is 3.5, which none of them saw. The mixture runs the experts side by side and mixes
their layer updates with one gate per expert; adaptation freezes the experts and fits only the three gates on
one batch of shifted prompts. We score on fresh shifted prompts, against each expert alone.

    python examples/moe_adaptation.py            # about 30 s on 2 cores
    python examples/moe_adaptation.py --quick    # seconds (CI)
"""

import argparse
import math

import torch
from _tiny import save_figure

from unrolled.models.memformer import LFOMMemformer
from unrolled.models.mixture import MixtureOfExperts
from unrolled.report import pyplot
from unrolled.tasks.regression import RegressionConfig, RegressionTask
from unrolled.train import train
from unrolled.train.config import TrainConfig
from unrolled.train.loop import RegressionStream

VARIANCES, SHIFT, D, N, LAYERS = (1.0, 2.0, 3.0), 3.5, 5, 20, 4


def task(variance: float) -> RegressionTask:
    return RegressionTask(RegressionConfig(d=D, n=N, covariance="isotropic", variance=variance), seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, for CI")
    parser.add_argument("--out", default="runs/examples", help="where the figure goes")
    args = parser.parse_args()
    torch.manual_seed(0)
    steps, batch = (30, 200) if args.quick else (400, 1000)

    experts = []
    for i, variance in enumerate(VARIANCES):  # each expert learns on its own distribution
        expert = LFOMMemformer(d=D, n=N, layers=LAYERS, generator=torch.Generator().manual_seed(i))
        cfg = TrainConfig(steps=steps, batch_size=batch, lr=0.01)
        train(expert, RegressionStream(task(variance), cfg, torch.Generator().manual_seed(10 + i)), cfg)
        experts.append(expert)

    shifted = task(SHIFT)
    test = shifted.sample(2000, torch.Generator().manual_seed(99))  # fresh shifted prompts, never adapted on
    mixture = MixtureOfExperts(experts, gate="linear", gate_init=1 / len(experts))  # start: the plain average
    with torch.no_grad():
        before = mixture(test).layerwise_losses(test.y_query)[-1]
        alone = [float(e(test).layerwise_losses(test.y_query)[-1]) for e in experts]
    mixture.set_adaptable("gates")  # the experts stay frozen
    adapt = TrainConfig(protocol="fixed_batch", steps=steps, batch_size=batch, lr=0.01)
    train(mixture, RegressionStream(shifted, adapt, torch.Generator().manual_seed(7)), adapt)
    with torch.no_grad():
        after = mixture(test).layerwise_losses(test.y_query)[-1]

    print(f"log test loss at L = {LAYERS} on fresh prompts of variance {SHIFT} (zero predictor: "
          f"{math.log(D * SHIFT**2):.2f}):")  # fmt: skip
    for variance, loss in zip(VARIANCES, alone, strict=True):
        print(f"  expert trained at σ² = {variance:g} alone   {math.log(loss):6.2f}")
    print(f"  mixture, equal gates             {math.log(before):6.2f}")
    print(
        f"  mixture, gates adapted           {math.log(after):6.2f}   gates "
        + " ".join(f"{g:.2f}" for g in mixture.gates().tolist())
    )
    assert after < before, "adapting the gates on shifted prompts should help on fresh shifted prompts"

    plt = pyplot()
    if plt is None:
        print("(no figure: pip install 'unrolled[plot]')")
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    names = [f"expert σ²={v:g}" for v in VARIANCES] + ["mixture", "adapted"]
    ax.bar(names, [math.log(v) for v in [*alone, float(before), float(after)]])
    ax.set(ylabel=f"log test loss, σ² = {SHIFT}", title="test-time adaptation of the gates")
    ax.tick_params(axis="x", labelrotation=20)
    save_figure(fig, args.out, "moe_adaptation.png")


if __name__ == "__main__":
    main()
