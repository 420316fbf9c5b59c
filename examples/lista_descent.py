"""Your own unrolled network under descent constraints, in a plain PyTorch loop: LISTA for sparse recovery.

LISTA (Gregor & LeCun 2010) unrolls ISTA, x_{t+1} = soft(W y + S x_t, θ_t), and learns W, S and the
thresholds. Written as a solver that returns a :class:`~unrolled.Trajectory` (the estimate after every
layer, read out as it is), it takes the library's objectives unchanged: ERM on the last layer, or the
descent constraints ‖x_t − x*‖² ≤ (1 − α) ‖x_{t−1} − x*‖² learned by primal-dual training. Both are compared
layer by layer with ISTA's own iterates on held-out problems.

    python examples/lista_descent.py            # about 25 s on 2 cores
    python examples/lista_descent.py --quick    # seconds (CI)
"""

import argparse
import math

import torch
from _tiny import save_figure
from torch import nn

from unrolled import Trajectory, squared_error
from unrolled.constrained import ConstrainedObjective, DescentConstraints, Multipliers, Objective
from unrolled.report import integer_axis, pyplot

M, N, K, NOISE, LAM = 20, 40, 3, 0.01, 0.05  # measurements, unknowns, non-zeros, noise std, lasso weight


def problems(A: torch.Tensor, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse x* ``[B, N]`` (K non-zeros, N(0, 1)) and y = A x* + noise ``[B, M]``."""
    support = torch.rand(batch, N, generator=gen).argsort(dim=1)[:, :K]
    x = torch.zeros(batch, N).scatter_(1, support, torch.randn(batch, K, generator=gen))
    return x, x @ A.T + NOISE * torch.randn(batch, M, generator=gen)


def soft(v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    return torch.sign(v) * torch.relu(v.abs() - theta)


class LISTA(nn.Module):
    """T layers x_{t+1} = soft(W y + S x_t, θ_t), W and S shared, initialised as ISTA with step 1/‖A‖²."""

    def __init__(self, A: torch.Tensor, layers: int) -> None:
        super().__init__()
        step = 1.0 / torch.linalg.matrix_norm(A, ord=2) ** 2
        self.W = nn.Parameter(step * A.T.clone())  # [N, M]
        self.S = nn.Parameter(torch.eye(N) - step * A.T @ A)  # [N, N]
        self.theta = nn.Parameter(torch.full((layers,), float(LAM * step)))
        self.depth = layers

    def forward(self, y: torch.Tensor) -> Trajectory:
        x, states, b = torch.zeros(y.shape[0], N), [], y @ self.W.T
        states.append(x)
        for t in range(self.depth):
            x = soft(b + x @ self.S.T, self.theta[t])
            states.append(x)
        return Trajectory(tuple(states), readout=lambda state: state)  # the estimate is the prediction


def ista(A: torch.Tensor, y: torch.Tensor, steps: int) -> Trajectory:
    """ISTA's own iterates (fixed step 1/‖A‖², threshold λ/‖A‖²), written directly from the lasso gradient."""
    step = 1.0 / torch.linalg.matrix_norm(A, ord=2) ** 2
    x, states = torch.zeros(y.shape[0], N), []
    states.append(x)
    for _ in range(steps):
        x = soft(x - step * (x @ A.T - y) @ A, LAM * step)
        states.append(x)
    return Trajectory(tuple(states), readout=lambda state: state)


def fit(model: LISTA, objective: Objective, A: torch.Tensor, steps: int) -> list[float]:
    """A plain training loop: the objective turns the trajectory into a loss, then takes its dual step."""
    opt, gen, curve = torch.optim.Adam(model.parameters(), lr=1e-3), torch.Generator().manual_seed(1), []
    for step in range(1, steps + 1):
        x, y = problems(A, 256, gen)
        loss, info = objective.loss(model(y), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        objective.after_step(step)  # the constrained objective's dual step; nothing for ERM
        curve.append(info["layer_losses"][-1] if "layer_losses" in info else float(loss.detach()))
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, for CI")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--out", default="runs/examples", help="where the figure goes")
    args = parser.parse_args()
    T, steps = args.layers, 60 if args.quick else 1000
    torch.manual_seed(0)
    A = torch.randn(M, N, generator=torch.Generator().manual_seed(0))
    A = A / A.norm(dim=0)  # unit-norm columns
    x_test, y_test = problems(A, 2000, torch.Generator().manual_seed(2))

    def nmse_db(traj: Trajectory) -> list[float]:  # per layer, on the held-out problems
        with torch.no_grad():
            return [
                10 * math.log10(v)
                for v in traj.layerwise_losses(x_test) / squared_error(x_test, 0 * x_test).mean()
            ]

    classical = nmse_db(ista(A, y_test, T))
    untrained = LISTA(A, T)
    assert max(abs(a - b) for a, b in zip(nmse_db(untrained(y_test)), classical, strict=True)) < 1e-4, (
        "LISTA at init is ISTA"
    )
    erm, constrained = LISTA(A, T), LISTA(A, T)
    erm_curve = fit(erm, Objective(squared_error), A, steps)
    objective = ConstrainedObjective(DescentConstraints(alpha=0.3), Multipliers(T, lr=0.05), squared_error)
    con_curve = fit(constrained, objective, A, steps)

    rows = [("ISTA (its own iterates)", classical), ("LISTA, ERM", nmse_db(erm(y_test))),
            ("LISTA, constrained α = 0.3", nmse_db(constrained(y_test)))]  # fmt: skip
    print(f"NMSE (dB) on held-out problems after layer / iteration 0..{T}:")
    for name, values in rows:
        print(f"  {name:27s}" + " ".join(f"{v:6.1f}" for v in values))
    print("final multipliers λ_1..λ_T:", " ".join(f"{v:.2f}" for v in objective.multipliers.value))
    assert erm_curve[-1] < erm_curve[0] and con_curve[-1] < con_curve[0], "training should lower the loss"
    if not args.quick:
        assert rows[1][1][-1] < classical[-1], "learned LISTA should beat ISTA at equal depth"

    plt = pyplot()
    if plt is None:
        print("(no figure: pip install 'unrolled[plot]')")
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for (name, values), style in zip(rows, [":s", "--o", "-o"], strict=True):
        ax.plot(range(T + 1), values, style, label=name)
    ax.set(
        xlabel="layer / iteration",
        ylabel="NMSE (dB), held-out",
        title=f"sparse recovery, {M}×{N}, {K}-sparse",
    )
    integer_axis(ax.xaxis)
    ax.legend()
    save_figure(fig, args.out, "lista_descent.png")


if __name__ == "__main__":
    main()
