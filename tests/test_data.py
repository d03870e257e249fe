"""Data loaders: IDX directories and .npz archives, every malformed case, and the fixed split."""

from __future__ import annotations

import gzip
import shutil
import struct
from typing import Any

import numpy as np
import pytest

from tuner.data import load_final_data, load_tuning_data, read_idx
from tuner.errors import DataError


def _load(path, fraction=0.1, seed=0):
    return load_tuning_data(dataset="mnist", data_path=str(path), validation_fraction=fraction, split_seed=seed)


def test_idx_fixture_loads_scaled_flat_and_split(mnist_small):
    data = _load(mnist_small)
    assert data.x_train.shape == (2160, 784) and data.x_val.shape == (240, 784)
    assert data.x_train.dtype == np.float32 and data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0
    assert data.n_classes == 10 and set(np.unique(data.y_train)) == set(range(10))
    assert data.checksum.startswith("sha256:")
    assert not data.x_train.flags.writeable  # shared by every trial: nobody may modify it


def test_split_is_fixed_by_seed_and_disjoint(mnist_small):
    first, again, other = _load(mnist_small, seed=3), _load(mnist_small, seed=3), _load(mnist_small, seed=4)
    assert first is again  # loaded once per process
    assert np.array_equal(
        first.x_val, load_tuning_data(dataset="mnist", data_path=str(mnist_small), validation_fraction=0.1, split_seed=3).x_val
    )
    assert not np.array_equal(first.x_val, other.x_val)
    train_rows = {row.tobytes() for row in first.x_train}
    assert sum(row.tobytes() in train_rows for row in first.x_val) <= 2  # MNIST has a few duplicate images


def test_tuning_data_has_no_test_set_but_final_data_does(mnist_small):
    tuning = _load(mnist_small)
    assert not hasattr(tuning, "x_test")
    final = load_final_data(dataset="mnist", data_path=str(mnist_small), validation_fraction=0.1, split_seed=0)
    assert final.x_test.shape == (600, 784) and final.tuning is tuning


def _npz(tmp_path, **overrides):
    arrays: dict[str, Any] = {  # Any: np.savez types **arrays as if one could be its allow_pickle flag
        "x_train": np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8),
        "y_train": np.arange(50) % 10,
        "x_test": np.random.default_rng(1).integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "y_test": np.arange(20) % 10,
    }
    arrays.update(overrides)
    path = tmp_path / "data.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_npz_loads(tmp_path):
    data = _load(_npz(tmp_path), fraction=0.2)
    assert data.x_train.shape == (40, 784) and data.x_val.shape == (10, 784)


def test_npz_of_colour_images_with_a_column_of_labels_loads(tmp_path):
    # The layout of keras.datasets.cifar10.load_data() saved as it comes: (N, 32, 32, 3) pixels, (N, 1) labels.
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
    y = (np.arange(50) % 10).reshape(50, 1).astype(np.uint8)
    data = _load(_npz(tmp_path, x_train=x, y_train=y, x_test=x[:20], y_test=y[:20]), fraction=0.2)
    assert data.x_train.shape == (40, 192) and data.y_train.shape == (40,) and data.n_classes == 10
    assert data.image_shape == (8, 8, 3)


def test_npz_of_features_outside_the_pixel_range_is_a_table_standardised_on_the_training_part(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(loc=5.0, scale=3.0, size=(50, 4, 3))  # measurements, not pixels: negative values among them
    data = load_final_data(dataset="mnist", data_path=str(_npz(tmp_path, x_train=x, x_test=x[:20])), validation_fraction=0.2, split_seed=0)
    tuning = data.tuning
    assert tuning.kind == "table" and tuning.feature_names == tuple(f"x{i}" for i in range(12)) and tuning.image_shape is None
    assert np.allclose(tuning.x_train.mean(axis=0), 0.0, atol=1e-5) and np.allclose(tuning.x_train.std(axis=0), 1.0, atol=1e-4)
    assert tuning.feature_mean is not None
    assert np.allclose(tuning.feature_mean, x.reshape(50, 12)[np.isin(np.arange(50), _training_rows(50, 0.2))].mean(axis=0), atol=1e-5)
    assert data.x_test.shape == (20, 12)


def _training_rows(n: int, fraction: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)[int(round(n * fraction)) :]


def test_float_npz_in_unit_range_is_kept(tmp_path):
    x = np.random.default_rng(0).random((50, 784)).astype(np.float64)
    data = _load(_npz(tmp_path, x_train=x, x_test=x[:20]), fraction=0.2)
    assert np.isclose(data.x_train.max(), x.max(), atol=1e-3)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"y_test": None}, "missing arrays y_test"),
        ({"y_train": np.arange(49) % 10}, "has 50 samples but y_train has 49"),
        ({"y_train": (np.arange(50) % 10).astype(np.float32)}, "integer class labels"),
        ({"y_train": np.arange(50) % 10 - 1}, "negative label"),
        ({"x_train": np.full((50, 784), np.nan)}, "NaN or infinite"),
        ({"x_test": np.full((20, 784), 300.0)}, "must lie in"),  # pixels to train on, features to test on
        ({"x_test": np.zeros((20, 27, 27), np.uint8)}, "but test samples"),
        ({"y_train": np.zeros((50, 2), np.int64)}, "one label per sample"),
        ({"x_train": np.zeros((0, 784), np.uint8), "y_train": np.zeros(0, np.int64)}, "at least one sample"),
        ({"x_train": np.full((50, 784), "a")}, "must be numeric"),
    ],
)
def test_malformed_npz_is_a_clear_data_error(tmp_path, overrides, words):
    with pytest.raises(DataError, match=words):
        _load(_npz(tmp_path, **overrides), fraction=0.2)


def test_not_an_npz(tmp_path):
    path = tmp_path / "data.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        _load(path)


def test_missing_path_and_wrong_kind_of_file(tmp_path):
    with pytest.raises(DataError, match="data path not found"):
        _load(tmp_path / "nowhere")
    other = tmp_path / "data.txt"
    other.write_text("1,2")
    with pytest.raises(DataError, match="directory of IDX files or an .npz"):
        _load(other)


def _copy_fixture(mnist_small, tmp_path):
    target = tmp_path / "mnist"
    shutil.copytree(mnist_small, target)
    return target


def test_missing_idx_file(mnist_small, tmp_path):
    directory = _copy_fixture(mnist_small, tmp_path)
    (directory / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte.gz"):
        _load(directory)


def _write_idx(path, payload: bytes):
    with gzip.open(path, "wb") as handle:
        handle.write(payload)


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"\x00\x00", "too short"),
        (b"\x12\x34\x08\x03" + b"\x00" * 12, "bad IDX magic"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 10) + b"\x01" * 7, "holds 7 bytes"),
    ],
)
def test_malformed_idx(tmp_path, payload, words):
    path = tmp_path / "labels.gz"
    _write_idx(path, payload)
    with pytest.raises(DataError, match=words):
        read_idx(path)


def test_truncated_gzip(mnist_small, tmp_path):
    directory = _copy_fixture(mnist_small, tmp_path)
    images = directory / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:1000])
    with pytest.raises(DataError, match="cannot read"):
        _load(directory)


def test_label_counts_must_match_images(mnist_small, tmp_path):
    directory = _copy_fixture(mnist_small, tmp_path)
    labels = np.zeros(5, np.uint8)
    _write_idx(directory / "train-labels-idx1-ubyte.gz", b"\x00\x00\x08\x01" + struct.pack(">I", 5) + labels.tobytes())
    with pytest.raises(DataError, match="has 2400 samples but y_train has 5"):
        _load(directory)
