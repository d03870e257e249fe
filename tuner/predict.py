"""Predicting with an exported model: the library call behind ``tuner predict``.

The export's model.json says what the model's inputs are and what its classes are called
(``tuner.exportmeta``); inputs are converted the way that model's training data was
(``tuner.modelinputs``). The function is ``predict_digits`` (not ``predict``) so that it never shadows this module as an
attribute of the ``tuner`` package.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tuner.errors import ConfigError, ModelError
from tuner.exportmeta import ExportMetadata
from tuner.text import first_line

if TYPE_CHECKING:
    import keras

__all__ = ["Prediction", "PredictResult", "predict_digits", "load_exported_model", "load_export", "MODEL_FILE"]

MODEL_FILE = "model.keras"


@dataclass(frozen=True)
class Prediction:
    """One input row: the most likely class (its index and name), its probability and all class probabilities."""

    source: str
    index: int
    label: str
    probability: float
    probabilities: tuple[float, ...]
    class_names: tuple[str, ...]
    true_label: str | None = None  # from a labelled input (a CSV row with the label column)

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` most likely class names, most likely first."""
        order = sorted(range(len(self.probabilities)), key=lambda c: (-self.probabilities[c], c))
        return [(self.class_names[c], self.probabilities[c]) for c in order[:k]]


@dataclass(frozen=True)
class PredictResult:
    model_path: Path
    kind: str  # what the model was trained on: tuner.data.INPUT_KINDS
    class_names: tuple[str, ...]
    predictions: tuple[Prediction, ...]
    accuracy: float | None = None  # over the labelled rows, when inputs carried labels
    n_labelled: int = 0


def load_exported_model(*, model: str | Path) -> keras.Model:
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
        raise ModelError(f"{path}: not a loadable Keras model ({type(exc).__name__}: {first_line(exc)})") from None
    if len(loaded.inputs) != 1 or len(loaded.input_shape) != 2 or len(loaded.output_shape) != 2:
        raise ModelError(
            f"{path}: expected a model from one row of features to class probabilities,"
            f" got input {loaded.input_shape} and output {loaded.output_shape}"
        )
    return loaded


def load_export(model: str | Path) -> tuple[keras.Model, ExportMetadata]:
    """The model and its model.json, checked against each other."""
    loaded = load_exported_model(model=model)
    path = Path(model)
    metadata = ExportMetadata.from_dir(path if path.is_dir() else path.parent)
    wanted = metadata.model_input
    if int(loaded.input_shape[1]) != wanted.input_dim or int(loaded.output_shape[1]) != wanted.n_classes:
        raise ModelError(
            f"{model}: model.keras takes {loaded.input_shape[1]} features to {loaded.output_shape[1]} classes, but model.json says"
            f" {wanted.input_dim} to {wanted.n_classes}; the export is inconsistent, export it again"
        )
    return loaded, metadata


def predict_digits(*, model: str | Path, inputs: Sequence[str | Path], batch_size: int = 1024) -> PredictResult:
    """Classify every input row (images, ``.npy`` arrays, CSV rows, as the model takes them); all inputs are read before any prediction.

    Args:
        model: an export directory (or its model.keras), as written by ``export_best``.
        inputs: files to classify, converted as the model's training data was (see its model.json).
        batch_size: rows per prediction batch.

    Returns a ``PredictResult``; raises ``ModelError`` or ``InputImageError``.

    Example::

        result = predict_digits(model="artifacts/mnist-mlp", inputs=["seven.png"])
        print(result.predictions[0].label, result.predictions[0].probability)
    """
    from tuner.modelinputs import load_model_inputs

    if not inputs:
        raise ConfigError("no input files given")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    loaded, metadata = load_export(model)
    wanted = metadata.model_input
    batches = [load_model_inputs(path, model_input=wanted) for path in inputs]
    names = [name for batch in batches for name in batch.names]
    rows = np.concatenate([batch.rows for batch in batches])
    labels = np.concatenate([batch.labels for batch in batches])
    probabilities = np.asarray(loaded.predict(rows, batch_size=batch_size, verbose=0), dtype=np.float64)
    if not np.isfinite(probabilities).all():
        raise ModelError(f"{model}: the model produced NaN or infinite probabilities")
    classes = wanted.class_names
    predictions = tuple(
        Prediction(
            source=name,
            index=int(row.argmax()),
            label=classes[int(row.argmax())],
            probability=float(row.max()),
            probabilities=tuple(float(p) for p in row),
            class_names=classes,
            true_label=classes[label] if label >= 0 else None,
        )
        for name, row, label in zip(names, probabilities, labels, strict=True)
    )
    labelled = labels >= 0
    accuracy = float((probabilities.argmax(axis=1)[labelled] == labels[labelled]).mean()) if labelled.any() else None
    return PredictResult(
        model_path=Path(model),
        kind=wanted.kind,
        class_names=classes,
        predictions=predictions,
        accuracy=accuracy,
        n_labelled=int(labelled.sum()),
    )
