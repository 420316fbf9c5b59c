"""A tiny in-context regression experiment shared by the runner's and the regression family's tests."""

import json

from unrolled.config import from_dict
from unrolled.experiments import ExperimentConfig

TINY = {
    "name": "tiny",
    "description": "a tiny run for tests",
    "seeds": [0, 1],
    "depths": [1, 2],
    "task": {"d": 3, "n": 8, "covariance": "isotropic"},
    "train": {
        "protocol": "fixed_batch",
        "steps": 40,
        "batch_size": 64,
        "checkpoint_every": 10,
        "log_every": 5,
    },
    "eval": {"batch_size": 200, "validation_size": 100},
    "methods": [
        {"name": "lfom", "kind": "memformer_lfom", "A": "full"},
        {"name": "lt", "kind": "linear_transformer", "A": "scalar"},
        {"name": "cg", "kind": "cg"},
        {"name": "nag", "kind": "nesterov", "tune": True, "momentum_grid": [0.0, 0.5]},
    ],
    "published": {"lt": [0.5, 0.2]},
}


def tiny(**overrides) -> ExperimentConfig:
    data = json.loads(json.dumps(TINY))
    for key, value in overrides.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return from_dict(ExperimentConfig, data)
