"""Experiments: a runner that knows no task, and experiment families registered by ``task.kind``.

* :mod:`~unrolled.experiments.runner`: config -> run folder (units, resume, workers, ranks, results, report).
* :mod:`~unrolled.experiments.family`: the protocol a family implements (:class:`ExperimentFamily`), and the
  :class:`Unit` and :class:`UnitContext` it shares with the runner.
* :mod:`~unrolled.experiments.registry`: the families by kind (built-ins import on first use).
* :mod:`~unrolled.experiments.config`: :class:`ExperimentConfig` and loading, dumping, JSON Schema.
* families: :mod:`~unrolled.experiments.regression` (``regression``), :mod:`~unrolled.experiments.denoising`
  (``video``).
"""

from unrolled.experiments.config import ExperimentConfig, dump_config, json_schema, load_config, parse_config
from unrolled.experiments.family import ExperimentFamily, Unit, UnitContext
from unrolled.experiments.registry import get_family, known_kinds, register_family, unregister_family
from unrolled.experiments.reporting import overlay, write_report
from unrolled.experiments.runner import RunFolderError, Runner, run_experiment

__all__ = [
    "ExperimentConfig",
    "ExperimentFamily",
    "RunFolderError",
    "Runner",
    "Unit",
    "UnitContext",
    "dump_config",
    "get_family",
    "json_schema",
    "known_kinds",
    "load_config",
    "overlay",
    "parse_config",
    "register_family",
    "run_experiment",
    "unregister_family",
    "write_report",
]
