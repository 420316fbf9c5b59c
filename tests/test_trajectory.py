import pytest
import torch

from unrolled.trajectory import Trajectory, squared_error


def test_layerwise_losses_match_hand_computation():
    states = tuple(torch.full((3, 2), float(l)) for l in range(4))
    traj = Trajectory(states, readout=lambda s: s.sum(-1))  # prediction 2l for every sample
    target = torch.tensor([0.0, 1.0, 2.0])
    losses = traj.layerwise_losses(target)
    expected = torch.tensor([sum((2 * l - t) ** 2 for t in (0.0, 1.0, 2.0)) / 3 for l in range(4)])
    torch.testing.assert_close(losses, expected)
    assert traj.layerwise_losses(target, reduction="none").shape == (4, 3)
    assert traj.depth == 3
    assert traj.predictions().shape == (4, 3)


def test_trajectory_rejects_bad_input():
    with pytest.raises(ValueError, match="at least the initial state"):
        Trajectory((), readout=lambda s: s)
    with pytest.raises(ValueError, match="batch size"):
        Trajectory((torch.zeros(3, 2), torch.zeros(4, 2)), readout=lambda s: s)
    traj = Trajectory((torch.zeros(3),), readout=lambda s: s)
    with pytest.raises(ValueError, match="reduction"):
        traj.layerwise_losses(torch.zeros(3), reduction="sum")
    with pytest.raises(ValueError, match="shape"):
        squared_error(torch.zeros(3), torch.zeros(4))
