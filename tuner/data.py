"""Datasets: MNIST-style IDX files, ``.npz`` archives and Keras' named datasets.

Tuning sees only ``TuningData`` (train and validation); the test set exists only in ``FinalData``,
which the final training job loads.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from tuner.errors import DataError
from tuner.userdata import DataOptions, csv_feature_names, is_image_folder, read_csv_dataset, read_image_folder_dataset

# What a model's input rows are: MNIST-style 28x28 digits, a table's standardised columns, or an image folder's pixels.
INPUT_KINDS = ("mnist", "table", "images")

__all__ = ["INPUT_KINDS", "TuningData", "FinalData", "DataOptions", "load_tuning_data", "load_final_data", "read_idx", "describe_source"]

_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True, eq=False)
class TuningData:
    """What a trial may see: a fixed, seeded split of the training set into train and validation."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    n_classes: int
    checksum: str
    source: str
    class_names: tuple[str, ...] | None = None  # for users' own data; MNIST-style labels are their own names
    feature_mean: np.ndarray | None = None  # CSV features are standardised with these (training part only)
    feature_std: np.ndarray | None = None
    kind: str = "mnist"  # INPUT_KINDS: how predict must turn an input into a row of features
    feature_names: tuple[str, ...] | None = None  # a table's feature columns, in the model's order
    # (height, width, channels) of the images the rows were flattened from; None for a table or flat rows.
    # A convolutional model (tuner.cnn) turns each row back into this shape.
    image_shape: tuple[int, int, int] | None = None

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])


@dataclass(frozen=True, eq=False)
class FinalData:
    """Everything the final training job needs, the test set included."""

    tuning: TuningData
    x_test: np.ndarray
    y_test: np.ndarray


def describe_source(*, dataset: str, data_path: str | None) -> str:
    return str(Path(data_path).resolve()) if data_path else f"keras.datasets.{dataset}"


def load_tuning_data(
    *, dataset: str, data_path: str | None, validation_fraction: float, split_seed: int, options: DataOptions | None = None
) -> TuningData:
    """Train/validation split, cached per process so every trial reuses the same arrays."""
    return load_final_data(
        dataset=dataset, data_path=data_path, validation_fraction=validation_fraction, split_seed=split_seed, options=options
    ).tuning


def load_final_data(
    *, dataset: str, data_path: str | None, validation_fraction: float, split_seed: int, options: DataOptions | None = None
) -> FinalData:
    try:
        return _load(dataset, data_path and str(Path(data_path).resolve()), validation_fraction, split_seed, options or DataOptions())
    except OSError as exc:  # a path the file system refuses (too long, permissions, a device that went away)
        raise DataError(f"cannot read data at {data_path}: {exc.strerror or exc}") from None


@lru_cache(maxsize=2)
def _load(dataset: str, data_path: str | None, validation_fraction: float, split_seed: int, options: DataOptions) -> FinalData:
    source = describe_source(dataset=dataset, data_path=data_path)
    class_names: tuple[str, ...] | None = None
    feature_names: tuple[str, ...] | None = None
    kind = "mnist"
    arrays: Sequence[np.ndarray]
    if not data_path:
        arrays = _download(dataset)
    elif _is_csv(Path(data_path)):
        *arrays, class_names = read_csv_dataset(Path(data_path), options)
        kind, feature_names = "table", csv_feature_names(Path(data_path), options.label_column)
    elif is_image_folder(Path(data_path)):
        *arrays, class_names = read_image_folder_dataset(Path(data_path), options)
        kind = "images"
    else:
        arrays = _read_path(Path(data_path))
        if _holds_features(arrays[0]):
            kind, feature_names = "table", tuple(f"x{i}" for i in range(int(np.prod(np.shape(arrays[0])[1:]))))
    tabular = kind == "table"
    image_shape = None if tabular else _image_shape(np.shape(arrays[0]))
    x_train, y_train, x_test, y_test = _validate(tuple(arrays), source, tabular=tabular)
    checksum = _checksum(x_train, y_train, x_test, y_test)
    n_classes = len(class_names) if class_names else _count_classes(y_train, y_test, source, options.classes)

    order = np.random.default_rng(split_seed).permutation(len(x_train))
    n_val = max(1, int(round(len(x_train) * validation_fraction)))
    if n_val >= len(x_train):
        raise DataError(f"validation_fraction {validation_fraction} leaves no training samples out of {len(x_train)}")
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    mean = std = None
    if tabular:
        # Standardise with statistics of the training part alone; they are kept for the exported model.
        mean = x_train[train_idx].mean(axis=0)
        std = np.where((spread := x_train[train_idx].std(axis=0)) > 1e-12, spread, 1.0).astype(np.float32)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
        if not (np.isfinite(x_train).all() and np.isfinite(x_test).all()):
            raise DataError(f"{source}: features too large to standardise in 32-bit floats; rescale them")
    tuning = TuningData(
        x_train=_frozen(x_train[train_idx]),
        y_train=_frozen(y_train[train_idx]),
        x_val=_frozen(x_train[val_idx]),
        y_val=_frozen(y_train[val_idx]),
        n_classes=n_classes,
        checksum=checksum,
        source=source,
        class_names=class_names,
        feature_mean=None if mean is None else _frozen(mean.astype(np.float32)),
        feature_std=None if std is None else _frozen(std),
        kind=kind,
        feature_names=feature_names,
        image_shape=image_shape,
    )
    return FinalData(tuning=tuning, x_test=_frozen(x_test), y_test=_frozen(y_test))


def _image_shape(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """The (height, width, channels) of samples of ``shape[1:]``: (N, H, W) is one channel; flat rows have none."""
    if len(shape) == 3:
        return (int(shape[1]), int(shape[2]), 1)
    if len(shape) == 4:
        return (int(shape[1]), int(shape[2]), int(shape[3]))
    return None


def _count_classes(y_train: np.ndarray, y_test: np.ndarray, source: str, declared: int | None) -> int:
    """Classes 0 .. the largest training label, refusing labels that leave classes empty.

    One corrupt label (a 42 among MNIST's 0-9) would otherwise make a 43-class model with 32 classes
    that no sample has. A study file that declares ``[data] classes`` allows gaps below that count.
    """
    if declared is not None:
        largest = int(max(y_train.max(), y_test.max()))
        if largest >= declared:
            count = int((y_train == largest).sum() + (y_test == largest).sum())
            raise DataError(f"{source}: label {largest} ({count} samples) is not below [data] classes = {declared}")
        return declared
    counts = np.bincount(y_train)
    n_classes = len(counts)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        # The labels above the first gap are the suspects: name the rarest of them.
        above = [label for label in range(int(empty[0]) + 1, n_classes) if counts[label]]
        label = min(above, key=lambda value: (counts[value], -value))
        raise DataError(
            f"{source}: label {label} ({counts[label]} samples) leaves {len(empty)} classes without a training sample"
            f" (e.g. {int(empty[0])}); fix the labels, or set [data] classes in the study file"
        )
    unseen = y_test[y_test >= n_classes]
    if len(unseen):
        label = int(unseen.max())
        raise DataError(
            f"{source}: test label {label} ({int((y_test == label).sum())} samples) is not among the training labels 0-{n_classes - 1}"
        )
    return n_classes


def _is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv" or (path.is_dir() and (path / "train.csv").is_file())


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.flags.writeable = False
    return array


def _download(dataset: str) -> tuple[np.ndarray, ...]:
    import keras  # heavy: only when a named dataset is asked for

    loader = {"mnist": keras.datasets.mnist, "fashion_mnist": keras.datasets.fashion_mnist}.get(dataset)
    if loader is None:
        raise DataError(f"unknown dataset {dataset!r} (expected mnist or fashion_mnist)")
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as exc:  # network or cache failures surface as many different types
        raise DataError(
            f"could not download {dataset} ({type(exc).__name__}: {exc})",
            remedy="give {data_path}: a directory with the four IDX .gz files, or an .npz file",
        ) from None
    return x_train, y_train, x_test, y_test


def _read_path(path: Path) -> tuple[np.ndarray, ...]:
    if not path.exists():
        raise DataError(f"data path not found: {path}")
    if path.is_dir():
        return tuple(read_idx(_find_idx(path, stem)) for stem in _IDX_FILES.values())
    if path.suffix == ".npz":
        return _read_npz(path)
    raise DataError(f"{path}: expected a directory of IDX files or an .npz file")


def _find_idx(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem, stem.replace("-idx", ".idx")):
        if (directory / name).is_file():
            return directory / name
    raise DataError(f"{directory}: missing {stem}.gz (need the four MNIST IDX files)")


def _read_npz(path: Path) -> tuple[np.ndarray, ...]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in _IDX_FILES if key not in archive.files]
            if missing:
                raise DataError(f"{path}: missing arrays {', '.join(missing)} (need x_train, y_train, x_test, y_test)")
            return tuple(archive[key] for key in _IDX_FILES)
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into an array, checking its header."""
    try:
        # One call into zlib: a quarter faster than reading a gzip stream in chunks.
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: too short for an IDX header")
    zero, type_code, n_dims = struct.unpack(">HBB", raw[:4])
    if zero != 0 or type_code not in _IDX_DTYPES or not 1 <= n_dims <= 4:
        raise DataError(f"{path}: bad IDX magic number {raw[:4].hex()}")
    header_end = 4 + 4 * n_dims
    if len(raw) < header_end:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{n_dims}I", raw[4:header_end])
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_end != expected:
        raise DataError(f"{path}: header says {shape} ({expected} bytes) but the file holds {len(raw) - header_end} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape)


def _validate(arrays: tuple[np.ndarray, ...], source: str, *, tabular: bool = False) -> tuple[np.ndarray, ...]:
    x_train, x_test = np.asarray(arrays[0]), np.asarray(arrays[2])
    y_train, y_test = (_label_vector(np.asarray(y)) for y in (arrays[1], arrays[3]))
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim < 2 or x.shape[0] == 0 or x[0].size == 0:
            raise DataError(f"{source}: x_{name} must hold at least one sample of features, got shape {x.shape}")
        if y.ndim != 1:
            raise DataError(f"{source}: y_{name} must be one label per sample, got shape {y.shape}")
        if len(x) != len(y):
            raise DataError(f"{source}: x_{name} has {len(x)} samples but y_{name} has {len(y)} labels")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{source}: y_{name} must hold integer class labels, got {y.dtype}")
        if y.min() < 0:
            raise DataError(f"{source}: y_{name} holds a negative label ({y.min()})")
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise DataError(f"{source}: x_{name} must be numeric, got {x.dtype}")
    if np.prod(x_train.shape[1:]) != np.prod(x_test.shape[1:]):
        raise DataError(f"{source}: train samples have shape {x_train.shape[1:]} but test samples {x_test.shape[1:]}")
    if int(max(y_train.max(), y_test.max())) >= 1000:
        raise DataError(f"{source}: labels must be class indices below 1000, got {int(max(y_train.max(), y_test.max()))}")
    if tabular:
        x_train, x_test = (x.reshape(len(x), -1).astype(np.float32) for x in (x_train, x_test))
        if not (np.isfinite(x_train).all() and np.isfinite(x_test).all()):
            raise DataError(f"{source}: the features hold NaN or infinite values")
        return x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32)
    return _scale(x_train, source, "x_train"), y_train.astype(np.int32), _scale(x_test, source, "x_test"), y_test.astype(np.int32)


def _holds_features(x: np.ndarray) -> bool:
    """Whether an array's values are features rather than pixels: numbers outside [0, 255] (standardised
    or raw measurements), which are standardised as a CSV table's columns are instead of scaled as pixels."""
    x = np.asarray(x)
    if x.size == 0 or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        return False  # _validate says what is wrong
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        return False  # pixels or not, _validate refuses NaN
    return bool(x.min() < 0 or x.max() > 255)


def _label_vector(y: np.ndarray) -> np.ndarray:
    """Labels as one per sample: a column of them, as Keras' CIFAR datasets give (N, 1), is flattened."""
    return y.reshape(len(y)) if y.ndim == 2 and y.shape[1] == 1 else y


def _scale(x: np.ndarray, source: str, name: str) -> np.ndarray:
    flat = x.reshape(len(x), -1)
    if np.issubdtype(flat.dtype, np.floating):
        if not np.isfinite(flat).all():
            raise DataError(f"{source}: {name} holds NaN or infinite values")
        low, high = float(flat.min()), float(flat.max())
        if low < 0 or high > 255:
            raise DataError(f"{source}: {name} values must lie in [0, 1] or [0, 255], got [{low:g}, {high:g}]")
        scaled = flat.astype(np.float32)
        scaled /= 255.0 if high > 1.0 else 1.0  # in place: the pixels of a large dataset are not copied twice
        return scaled
    low, high = int(flat.min()), int(flat.max())
    if low < 0 or high > 255:
        raise DataError(f"{source}: {name} values must lie in [0, 255], got [{low}, {high}]")
    scaled = flat.astype(np.float32)
    scaled /= 255.0
    return scaled


def _checksum(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).data)  # the array's own buffer: hashing needs no copy
    return "sha256:" + digest.hexdigest()
