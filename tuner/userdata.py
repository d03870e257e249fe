"""Users' own data besides MNIST-style files: a CSV table, or a folder of images with one sub-folder per class.

Each reader returns ``(x_train, y_train, x_test, y_test, class_names)`` with raw features; ``tuner.data``
validates, scales and splits them like the MNIST loaders. A single file or folder (no separate test
set) is split into train and test with a fixed seed, so the test set stays the same for every run.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuner.errors import DataError

__all__ = [
    "DataOptions",
    "data_options_from",
    "IMAGE_SUFFIXES",
    "read_csv_dataset",
    "read_csv_rows",
    "read_image_folder_dataset",
    "is_image_folder",
    "image_pixels",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_MAX_IMAGE_PIXELS = 50_000_000


@dataclass(frozen=True)
class DataOptions:
    """How to read users' own data (the study file's ``[data]`` table)."""

    label_column: str = "label"
    image_size: tuple[int, int] = (28, 28)
    color: bool = False
    test_fraction: float = 0.2
    split_seed: int = 0
    classes: int | None = None  # the study file's [data] classes: labels may leave some classes empty


def data_options_from(provenance: dict) -> DataOptions:
    """The options a study recorded (studies made before users' own data existed recorded none)."""
    recorded = dict(provenance.get("data_options") or {})
    if "image_size" in recorded:
        recorded["image_size"] = tuple(recorded["image_size"])
    known = {key: value for key, value in recorded.items() if key in DataOptions.__dataclass_fields__}
    return DataOptions(**{"split_seed": provenance.get("split_seed", 0), **known})


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]


def read_csv_dataset(path: Path, options: DataOptions) -> Arrays:
    """``path`` is one CSV file (split into train/test) or a folder holding ``train.csv`` and ``test.csv``."""
    if path.is_dir():
        train_x, train_labels, _ = read_csv_rows(path / "train.csv", options.label_column)
        test_x, test_labels, _ = read_csv_rows(path / "test.csv", options.label_column)
        if train_x.shape[1] != test_x.shape[1]:
            raise DataError(f"{path}: train.csv has {train_x.shape[1]} feature columns but test.csv has {test_x.shape[1]}")
    else:
        features, labels, _ = read_csv_rows(path, options.label_column)
        train_x, train_labels, test_x, test_labels = _split(features, labels, options, path)
    y_train, y_test, classes = _indexed(train_labels, test_labels, path)
    return train_x, y_train, test_x, y_test, classes


def csv_feature_names(path: Path, label_column: str) -> tuple[str, ...]:
    """The feature columns of a CSV dataset (of its train.csv for a folder), in the order the model sees them."""
    return read_csv_rows(path / "train.csv" if path.is_dir() else path, label_column, header_only=True)[2]


def _indexed(train_labels: list[str], test_labels: list[str], source: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Class names from the training labels only: a class the model never trained on cannot be scored."""
    classes = tuple(sorted(set(train_labels), key=_label_order))
    index = {name: i for i, name in enumerate(classes)}
    unseen = sorted(set(test_labels) - set(classes), key=_label_order)
    if unseen:
        count = sum(1 for label in test_labels if label == unseen[0])
        raise DataError(f"{source}: the test part holds label {unseen[0]!r} ({count} samples) that no training sample has")
    return np.array([index[v] for v in train_labels], np.int32), np.array([index[v] for v in test_labels], np.int32), classes


def read_csv_rows(path: Path, label_column: str | None, *, header_only: bool = False) -> tuple[np.ndarray, list[str], tuple[str, ...]]:
    """Feature rows, labels and feature column names of one CSV file.

    With ``label_column=None`` every column is a feature unless named so; a file without that column
    gives no labels (``predict`` on unlabelled rows).
    """
    rows = _read_csv(path)
    header, label_at = _csv_header(path, rows[0], label_column)
    names = tuple(name for column, name in enumerate(header) if column != label_at)
    if header_only:
        return np.zeros((0, len(names)), np.float32), [], names
    features, labels = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        values, label = _csv_row(path, line, row, header, label_at)
        features.append(values)
        labels.append(label)
    if not features:
        raise DataError(f"{path}: no data rows")
    return np.asarray(features, np.float32), labels if label_at is not None else [], names


def _read_csv(path: Path) -> list[list[str]]:
    """All rows of the file, the header first; a missing, unreadable or empty file is a ``DataError``."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    if not rows or not any(rows[0]):
        raise DataError(f"{path}: empty CSV file (need a header row and data rows)")
    return rows


def _csv_header(path: Path, first_row: list[str], label_column: str | None) -> tuple[list[str], int | None]:
    """The column names and the label column's index (None without one)."""
    header = [name.strip() for name in first_row]
    if label_column is not None and label_column not in header:
        raise DataError(
            f"{path}: no label column {label_column!r} in the header (columns: {', '.join(header[:10])}); set [data] label_column"
        )
    label_at = header.index(label_column) if label_column is not None else None
    if len(header) < (2 if label_at is not None else 1):
        raise DataError(f"{path}: no feature columns besides {label_column!r}")
    return header, label_at


def _csv_row(path: Path, line: int, row: list[str], header: list[str], label_at: int | None) -> tuple[list[float], str]:
    """One data row's feature values and its label ("" without a label column)."""
    if len(row) != len(header):
        raise DataError(f"{path}: line {line} has {len(row)} fields, the header has {len(header)}")
    label = row[label_at].strip() if label_at is not None else ""
    if label_at is not None and not label:
        raise DataError(f"{path}: line {line} has an empty label")
    values = []
    for column, cell in enumerate(row):
        if column == label_at:
            continue
        try:
            value = float(cell)
        except ValueError:
            raise DataError(f"{path}: line {line}, column {header[column]!r}: {cell.strip()[:40]!r} is not a number") from None
        if not math.isfinite(value):
            raise DataError(f"{path}: line {line}, column {header[column]!r}: missing or infinite value {cell.strip()!r}")
        values.append(value)
    return values, label


def is_image_folder(path: Path) -> bool:
    return path.is_dir() and any(child.is_dir() for child in path.iterdir()) and not (path / "train.csv").exists()


def read_image_folder_dataset(path: Path, options: DataOptions) -> Arrays:
    """One sub-folder per class; or ``train/`` and ``test/`` folders that each hold the class folders."""
    if (path / "train").is_dir() and (path / "test").is_dir():
        train_x, train_labels = _read_images(path / "train", options)
        test_x, test_labels = _read_images(path / "test", options)
    else:
        images, labels = _read_images(path, options)
        train_x, train_labels, test_x, test_labels = _split(images, labels, options, path)
    y_train, y_test, classes = _indexed(train_labels, test_labels, path)
    return train_x, y_train, test_x, y_test, classes


def _read_images(folder: Path, options: DataOptions) -> tuple[np.ndarray, list[str]]:
    from PIL import Image, UnidentifiedImageError

    class_dirs = sorted(child for child in folder.iterdir() if child.is_dir())
    if len(class_dirs) < 2:
        raise DataError(f"{folder}: need at least two class sub-folders, found {len(class_dirs)}")
    width, height = options.image_size
    images, labels = [], []
    for class_dir in class_dirs:
        files = sorted(f for f in class_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{class_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
        for file in files:
            try:
                with Image.open(file) as image:
                    if image.width * image.height > _MAX_IMAGE_PIXELS:
                        raise DataError(f"{file}: image too large ({image.width}x{image.height})")
                    images.append(image_pixels(image, image_size=(width, height), color=options.color))
            except DataError:
                raise
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
                raise DataError(f"{file}: not a readable image ({exc})") from None
            labels.append(class_dir.name)
    return np.stack(images), labels


def image_pixels(image, *, image_size: tuple[int, int], color: bool) -> np.ndarray:
    """One opened image as an image-folder model sees it: (height, width[, 3]) uint8; predict uses this very function."""
    from PIL import Image

    image.seek(0)
    converted = image.convert("RGB" if color else "L").resize(tuple(image_size), Image.Resampling.BILINEAR)
    return np.asarray(converted, np.uint8)


def _split(x: np.ndarray, labels: list[str], options: DataOptions, source: Path) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    n_test = int(round(len(x) * options.test_fraction))
    if n_test < 1 or n_test >= len(x) - 1:
        raise DataError(f"{source}: {len(x)} samples are too few to hold out a test fraction of {options.test_fraction}")
    order = np.random.default_rng(options.split_seed).permutation(len(x))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return x[train], [labels[i] for i in train], x[test], [labels[i] for i in test]


def _label_order(label: str) -> tuple[int, float | str]:
    # Numeric labels sort as numbers ("2" before "10"); others alphabetically.
    try:
        return (0, float(label))
    except ValueError:
        return (1, label)
