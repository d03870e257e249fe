"""Inputs for ``predict``, turned into rows the way the model's own training data was.

Which way is the export's to say (``model.json``, ``ModelInput.kind``):

- ``mnist``: images are converted MNIST-style (``tuner.images``); ``.npy`` arrays are pixel rows.
- ``table``: CSV rows with the training header (the label column optional) or ``.npy`` rows of raw
  features, standardised with the training part's mean and spread.
- ``images``: each image resized to the folder's size in grayscale or colour, exactly as the training
  loader did (``tuner.userdata.image_pixels``); ``.npy`` arrays are pixel rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuner.errors import DataError, InputImageError, ModelError
from tuner.exportmeta import ModelInput
from tuner.images import InputBatch, load_inputs, read_array, read_numeric_npy
from tuner.userdata import IMAGE_SUFFIXES, image_pixels, read_csv_rows

__all__ = ["ModelRows", "load_model_inputs"]


@dataclass(frozen=True, eq=False)
class ModelRows:
    """Rows for one input file, and the class index of each row whose file gave a label (else -1)."""

    names: tuple[str, ...]
    rows: np.ndarray
    labels: np.ndarray


def load_model_inputs(path: str | Path, *, model_input: ModelInput) -> ModelRows:
    path = Path(path)
    suffix = path.suffix.lower()
    if model_input.kind == "mnist":
        return _unlabelled(load_inputs(path, input_dim=model_input.input_dim))
    _check_exists(path)
    if model_input.kind == "table":
        if suffix == ".csv":
            return _table_rows(path, model_input)
        if suffix == ".npy":
            raw = _raw_rows(path, model_input.input_dim)
            return _standardised(path, raw, np.full(len(raw), -1), model_input)
        raise InputImageError(f"{path}: this model was trained on a table; give CSV rows (with its header) or a .npy array of feature rows")
    if suffix == ".npy":
        return _unlabelled(InputBatch(path=path, names=_names(path, 1), pixels=read_array(path, input_dim=model_input.input_dim)))
    if suffix not in IMAGE_SUFFIXES:
        raise InputImageError(
            f"{path}: this model was trained on an image folder; give an image ({', '.join(IMAGE_SUFFIXES)}) or a .npy array"
        )
    return ModelRows(names=(str(path),), rows=_folder_image_row(path, model_input), labels=np.full(1, -1))


def _check_exists(path: Path) -> None:
    try:
        if not path.is_file():
            raise InputImageError(f"{path}: {'is a directory, not an input file' if path.is_dir() else 'no such file'}")
    except OSError as exc:
        raise InputImageError(f"{path}: cannot read this path ({exc.strerror or exc})") from None


def _unlabelled(batch: InputBatch) -> ModelRows:
    return ModelRows(names=batch.names, rows=batch.pixels, labels=np.full(len(batch.names), -1))


def _names(path: Path, count: int) -> tuple[str, ...]:
    return (str(path),) if count == 1 else tuple(f"{path}[{i}]" for i in range(count))


def _folder_image_row(path: Path, model_input: ModelInput) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if model_input.image_size is None:  # ModelInput.problems() refuses such a model.json before any input is read
        raise ModelError("model.json of an image model records no image_size")
    try:
        with Image.open(path) as image:
            pixels = image_pixels(image, image_size=model_input.image_size, color=model_input.color)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputImageError(
            f"{path}: cannot read the image ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    # The training loader's scaling (tuner.data): 8-bit pixels over 255.
    return pixels.reshape(1, -1).astype(np.float32) / 255.0


def _table_rows(path: Path, model_input: ModelInput) -> ModelRows:
    try:
        header = read_csv_rows(path, None, header_only=True)[2]
        labelled = model_input.label_column in header
        features, labels, names = read_csv_rows(path, model_input.label_column if labelled else None)
    except DataError as exc:
        raise InputImageError(str(exc)) from None
    expected = model_input.feature_names or ()
    missing = [name for name in expected if name not in names]
    extra = [name for name in names if name not in expected]
    if missing or extra:
        problem = f"missing columns {', '.join(missing[:5])}" if missing else f"unknown columns {', '.join(extra[:5])}"
        raise InputImageError(
            f"{path}: {problem}; the model was trained on the columns {', '.join(expected[:8])}{' ...' if len(expected) > 8 else ''}"
        )
    order = [names.index(name) for name in expected]  # the training column order, whatever the file's
    index = {name: i for i, name in enumerate(model_input.class_names)}
    unknown = next((label for label in labels if label not in index), None)
    if unknown is not None:
        raise InputImageError(f"{path}: label {unknown!r} is not one of the model's classes ({', '.join(model_input.class_names[:10])})")
    classes = np.array([index[label] for label in labels]) if labelled else np.full(len(features), -1)
    return _standardised(path, features[:, order], classes, model_input)


def _raw_rows(path: Path, input_dim: int) -> np.ndarray:
    array = read_numeric_npy(path)
    if array.shape == (input_dim,):
        array = array.reshape(1, input_dim)
    if array.ndim != 2 or array.shape[1] != input_dim or len(array) == 0:
        raise InputImageError(
            f"{path}: array of shape {array.shape} is not rows of {input_dim} features (expected ({input_dim},) or (N, {input_dim}))"
        )
    rows = array.astype(np.float32)
    if not np.isfinite(rows).all():
        raise InputImageError(f"{path}: the array holds NaN or infinite values")
    return rows


def _standardised(path: Path, raw: np.ndarray, labels: np.ndarray, model_input: ModelInput) -> ModelRows:
    mean = np.asarray(model_input.feature_mean, np.float32)
    std = np.asarray(model_input.feature_std, np.float32)
    return ModelRows(names=_names(path, len(raw)), rows=(raw - mean) / std, labels=labels)
