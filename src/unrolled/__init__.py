"""unrolled: transformers as optimization algorithms.

Every model and classical method maps a batch of problems to a :class:`Trajectory` (the states after steps
0..L and a shared readout), so learned and classical solvers are evaluated and plotted the same way.

The names a user types first are here (docs/QUICKSTART.md). They are imported when first used, so
``import unrolled`` stays light: the Hugging Face stack loads only with ``unrolled.ConstrainedTrainer`` and
its kin, never with the package.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from unrolled.trajectory import Trajectory, layerwise_losses, squared_error

__version__ = "0.1.0"

_LAZY = {
    # tasks and solvers
    "RegressionConfig": "unrolled.tasks.regression",
    "RegressionTask": "unrolled.tasks.regression",
    "LinearTransformer": "unrolled.models.memformer",
    "LFOMMemformer": "unrolled.models.memformer",
    "CGDMemformer": "unrolled.models.memformer",
    "MixtureOfExperts": "unrolled.models.mixture",
    "GPT2Learner": "unrolled.models.icl",
    "UTLearner": "unrolled.models.icl",
    "Prompts": "unrolled.models.icl",
    "ConjugateGradient": "unrolled.solvers.classical",
    "GradientDescent": "unrolled.solvers.classical",
    "HeavyBall": "unrolled.solvers.classical",
    "Nesterov": "unrolled.solvers.classical",
    "LFOM": "unrolled.solvers.classical",
    "UnrolledLFOM": "unrolled.solvers.classical",
    # objectives
    "Objective": "unrolled.constrained",
    "ConstrainedObjective": "unrolled.constrained",
    "EarlyExitObjective": "unrolled.constrained",
    "DescentConstraints": "unrolled.constrained",
    "Multipliers": "unrolled.constrained",
    "ConstraintConfig": "unrolled.constrained",
    "CalibrationConfig": "unrolled.constrained",
    "EarlyExitConfig": "unrolled.constrained",
    "objective_from_config": "unrolled.constrained",
    # training (the loop itself: ``from unrolled.train import train``)
    "TrainConfig": "unrolled.train.config",
    "RegressionStream": "unrolled.train.loop",
    # the Hugging Face stack (pip install 'unrolled[hf]')
    "EncoderSolver": "unrolled.models.hf",
    "LanguageModelSolver": "unrolled.models.hf",
    "ConstrainedTrainer": "unrolled.train.hf",
    "ConstrainedSFTConfig": "unrolled.train.sft",
    "ConstrainedSFTTrainer": "unrolled.train.sft",
    # experiments
    "load_config": "unrolled.experiments.config",
    "run_experiment": "unrolled.experiments",
}

__all__ = ["Trajectory", "__version__", "layerwise_losses", "squared_error", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'unrolled' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
