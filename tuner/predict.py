"""Predicting digits with an exported model: the library call behind ``tuner predict``.

The function is ``predict_digits`` (not ``predict``) so that it never shadows this module as an
attribute of the ``tuner`` package.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from tuner.errors import ConfigError, ModelError
from tuner.images import load_inputs

if TYPE_CHECKING:
    import keras

__all__ = ["Prediction", "PredictResult", "predict_digits", "load_exported_model", "MODEL_FILE"]

MODEL_FILE = "model.keras"


@dataclass(frozen=True)
class Prediction:
    """One input row: the most likely digit, its probability and all class probabilities."""

    source: str
    digit: int
    probability: float
    probabilities: tuple[float, ...]

    def top(self, k: int) -> list[tuple[int, float]]:
        """The ``k`` most likely classes, most likely first."""
        order = sorted(range(len(self.probabilities)), key=lambda c: (-self.probabilities[c], c))
        return [(c, self.probabilities[c]) for c in order[:k]]


@dataclass(frozen=True)
class PredictResult:
    model_path: Path
    predictions: tuple[Prediction, ...]


def load_exported_model(model: str | Path) -> "keras.Model":
    """Load ``model.keras`` from an export directory (or the file itself) in Keras' safe mode."""
    path = Path(model)
    try:
        if path.is_dir():
            path = path / MODEL_FILE
            if not path.is_file():
                raise ModelError(f"{model}: no {MODEL_FILE} in this directory (export one with 'tuner export-best')")
        elif not path.exists():
            raise ModelError(f"model directory not found: {model}")
    except (OSError, ValueError) as exc:  # e.g. a name too long for the file system
        raise ModelError(f"{model}: cannot read the model path ({getattr(exc, 'strerror', None) or exc})") from None
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: not a Keras model archive (a .keras file is a zip archive); the export is damaged or incomplete")
    import keras

    try:
        # safe_mode refuses Lambda layers and other serialized code: a model file cannot run code here.
        loaded = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras reports damaged archives with many exception types
        raise ModelError(f"{path}: not a loadable Keras model ({type(exc).__name__}: {_first_line(exc)})") from None
    if len(loaded.inputs) != 1 or len(loaded.input_shape) != 2 or len(loaded.output_shape) != 2:
        raise ModelError(f"{path}: expected a model from one row of features to class probabilities, got input {loaded.input_shape} and output {loaded.output_shape}")
    return loaded


def predict_digits(*, model: str | Path, inputs: Sequence[str | Path], batch_size: int = 1024) -> PredictResult:
    """Classify every image and every row of every ``.npy`` array; all inputs are read before any prediction."""
    if not inputs:
        raise ConfigError("no input files given")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    loaded = load_exported_model(model)
    input_dim = int(loaded.input_shape[1])
    batches = [load_inputs(path, input_dim=input_dim) for path in inputs]
    names = [name for batch in batches for name in batch.names]
    pixels = np.concatenate([batch.pixels for batch in batches])
    probabilities = np.asarray(loaded.predict(pixels, batch_size=batch_size, verbose=0), dtype=np.float64)
    if not np.isfinite(probabilities).all():
        raise ModelError(f"{model}: the model produced NaN or infinite probabilities")
    predictions = tuple(
        Prediction(source=name, digit=int(row.argmax()), probability=float(row.max()), probabilities=tuple(float(p) for p in row))
        for name, row in zip(names, probabilities)
    )
    return PredictResult(model_path=Path(model), predictions=predictions)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__

