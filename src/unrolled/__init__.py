"""unrolled: transformers as optimization algorithms.

Every model and classical method maps a batch of problems to a :class:`Trajectory` (the states after steps
0..L and a shared readout), so learned and classical solvers are evaluated and plotted the same way.
"""

from unrolled.trajectory import Trajectory, layerwise_losses, squared_error

__version__ = "0.1.0"
__all__ = ["Trajectory", "__version__", "layerwise_losses", "squared_error"]
