"""tuner: hyperparameter search for Keras MLPs on Optuna, persisted in SQL.

The Python API is what the ``tuner`` commands call; each returns a result object and raises the
``TunerError`` hierarchy (tuner.errors)::

    import tuner

    config = tuner.resolve_run_config(study_file="studies/mnist_mlp.toml", n_trials=20)
    result = tuner.run_study(config=config)
    export = tuner.export_best(storage_url=config.storage_url, study_name=config.study_name)
    print(tuner.predict_digits(model=export.out, inputs=["digit.png"]).predictions[0].label)

Names are imported on first use, so that ``import tuner`` (and ``tuner --help``) stays fast and
TensorFlow loads only when a model is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuner.config import RunConfig, resolve_run_config
    from tuner.dashboard import Dashboard, prepare_dashboard
    from tuner.errors import (
        ConfigError,
        DataError,
        ExportError,
        InputImageError,
        ModelError,
        StorageError,
        StudyNotFoundError,
        TrialError,
        TunerError,
    )
    from tuner.export import EpochProgress, ExportResult, ExportStart, export_best
    from tuner.exportmeta import ExportMetadata
    from tuner.pareto import ParetoPoint, best_within_budget, pareto_front
    from tuner.predict import Prediction, PredictResult, load_exported_model, predict_digits
    from tuner.report import ReportResult, build_report
    from tuner.results import RunResult, RunStart, TrialEnded, TrialOutcome
    from tuner.runner import run_study
    from tuner.storage import StudyInfo, list_studies, load_study
    from tuner.storageurl import DEFAULT_STORAGE
    from tuner.studyfile import StudySpec, load_study_file, parse_study
    from tuner.workers import WorkersProgress, run_workers

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # errors
    "TunerError",
    "ConfigError",
    "DataError",
    "StorageError",
    "StudyNotFoundError",
    "TrialError",
    "ExportError",
    "ModelError",
    "InputImageError",
    # study files and run settings
    "StudySpec",
    "load_study_file",
    "parse_study",
    "RunConfig",
    "resolve_run_config",
    "DEFAULT_STORAGE",
    # run
    "run_study",
    "run_workers",
    "RunStart",
    "RunResult",
    "TrialOutcome",
    "TrialEnded",
    "WorkersProgress",
    # studies
    "load_study",
    "list_studies",
    "StudyInfo",
    # export
    "export_best",
    "ExportStart",
    "EpochProgress",
    "ExportResult",
    "ExportMetadata",
    # predict
    "predict_digits",
    "load_exported_model",
    "PredictResult",
    "Prediction",
    # trade-offs
    "pareto_front",
    "best_within_budget",
    "ParetoPoint",
    # report and dashboard
    "build_report",
    "ReportResult",
    "prepare_dashboard",
    "Dashboard",
]

# Where each public name lives (the same names as the TYPE_CHECKING imports above; tests/test_api.py checks both agree).
_MODULE_OF = {
    **dict.fromkeys(
        [
            "TunerError",
            "ConfigError",
            "DataError",
            "StorageError",
            "StudyNotFoundError",
            "TrialError",
            "ExportError",
            "ModelError",
            "InputImageError",
        ],
        "tuner.errors",
    ),
    **dict.fromkeys(["StudySpec", "load_study_file", "parse_study"], "tuner.studyfile"),
    **dict.fromkeys(["RunConfig", "resolve_run_config"], "tuner.config"),
    "DEFAULT_STORAGE": "tuner.storageurl",
    "run_study": "tuner.runner",
    **dict.fromkeys(["run_workers", "WorkersProgress"], "tuner.workers"),
    **dict.fromkeys(["RunStart", "RunResult", "TrialOutcome", "TrialEnded"], "tuner.results"),
    **dict.fromkeys(["load_study", "list_studies", "StudyInfo"], "tuner.storage"),
    **dict.fromkeys(["export_best", "ExportStart", "EpochProgress", "ExportResult"], "tuner.export"),
    "ExportMetadata": "tuner.exportmeta",
    **dict.fromkeys(["predict_digits", "load_exported_model", "PredictResult", "Prediction"], "tuner.predict"),
    **dict.fromkeys(["pareto_front", "best_within_budget", "ParetoPoint"], "tuner.pareto"),
    **dict.fromkeys(["build_report", "ReportResult"], "tuner.report"),
    **dict.fromkeys(["prepare_dashboard", "Dashboard"], "tuner.dashboard"),
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'tuner' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
