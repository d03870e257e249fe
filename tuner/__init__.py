"""tuner: hyperparameter search for Keras MLPs on Optuna, persisted in SQL.

Public names are imported lazily so that ``import tuner`` (and ``tuner --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "TunerError": "tuner.errors",
    "ConfigError": "tuner.errors",
    "DataError": "tuner.errors",
    "StorageError": "tuner.errors",
    "StudyNotFoundError": "tuner.errors",
    "TrialError": "tuner.errors",
    "ExportError": "tuner.errors",
    "ModelError": "tuner.errors",
    "InputImageError": "tuner.errors",
    "StudySpec": "tuner.studyfile",
    "load_study_file": "tuner.studyfile",
    "RunConfig": "tuner.config",
    "resolve_run_config": "tuner.config",
    "run_study": "tuner.runner",
    "RunResult": "tuner.runner",
    "TrialOutcome": "tuner.runner",
    "Objective": "tuner.objective",
    "build_model": "tuner.model",
    "suggest_hyperparameters": "tuner.model",
    "load_tuning_data": "tuner.data",
    "load_final_data": "tuner.data",
    "open_storage": "tuner.storage",
    "load_study": "tuner.storage",
    "list_studies": "tuner.storage",
    "mask_url": "tuner.storage",
    "run_workers": "tuner.workers",
    "WorkersProgress": "tuner.workers",
    "export_best": "tuner.export",
    "ExportResult": "tuner.export",
    "ExportMetadata": "tuner.exportmeta",
    "StudyProvenance": "tuner.provenance",
    "predict_digits": "tuner.predict",
    "PredictResult": "tuner.predict",
    "Prediction": "tuner.predict",
    "load_exported_model": "tuner.predict",
    "load_inputs": "tuner.images",
    "mnist_style": "tuner.images",
    "build_report": "tuner.report",
    "ReportResult": "tuner.report",
    "prepare_dashboard": "tuner.dashboard",
    "Dashboard": "tuner.dashboard",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
