"""`tuner predict` and the MNIST-style image conversion, on the committed digit images.

The images (tests/fixtures/digits, made by scripts/make_digit_images.py) are MNIST test digits from
the fixture's test set, re-rendered in several styles, some like a phone photo. Their file names
carry the true label and the test-set index of the original digit.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import FIXTURES, MNIST_SMALL, invoke, one_error_line
from tuner.data import read_idx
from tuner.errors import InputImageError
from tuner.images import mnist_style, read_array, read_image

DIGITS = sorted((FIXTURES / "digits").iterdir())

# The tutorial's final network, fixed so the study has exactly one configuration to export.
FIXED_STUDY = """
[study]
name = "digits"
baselines = false

[pruner]
kind = "none"

[space]
n_layers = 2
units = 128
dropout = 0.2
optimizer = "adam"
learning_rate = 0.001
batch_size = 64
epochs = 10
l2 = 0.0
"""


def _label_and_index(path: Path) -> tuple[int, int]:
    match = re.fullmatch(r"(\d)-test(\d+)-.*", path.stem)
    assert match, path
    return int(match[1]), int(match[2])


@pytest.fixture(scope="module")
def test_images() -> np.ndarray:
    return read_idx(MNIST_SMALL / "t10k-images-idx3-ubyte.gz")


@pytest.fixture(scope="module")
def digit_model(tmp_path_factory) -> Path:
    """One trial of the fixed configuration on the fixture, exported (about 90% test accuracy)."""
    from tuner.config import resolve_run_config
    from tuner.export import export_best
    from tuner.runner import run_study

    directory = tmp_path_factory.mktemp("digits")
    (directory / "fixed.toml").write_text(FIXED_STUDY)
    url = f"sqlite:///{directory / 'study.db'}"
    run_study(config=resolve_run_config(study_file=directory / "fixed.toml", storage_url=url, data_path=str(MNIST_SMALL), n_trials=1))
    result = export_best(storage_url=url, out=directory / "model")
    assert result.test_accuracy > 0.85
    return result.out


def _one_error_line(result, code: int, *fragments: str) -> None:
    one_error_line(result, code, *fragments)
    assert result.stdout == ""


def test_fixture_has_one_image_per_class_in_several_formats():
    assert sorted(_label_and_index(p)[0] for p in DIGITS) == list(range(10))
    assert {p.suffix for p in DIGITS} >= {".png", ".jpg", ".bmp"}
    assert sum(p.stat().st_size for p in DIGITS) < 100_000


@pytest.mark.parametrize("path", DIGITS, ids=lambda p: p.name)
def test_images_become_their_mnist_original(path, test_images):
    """Up to a one-pixel shift (centring by mass rounds to whole pixels), the conversion recovers the digit."""
    _, index = _label_and_index(path)
    converted, original = read_image(path), test_images[index] / 255.0
    assert converted.shape == (28, 28) and converted.dtype == np.float32
    assert converted.min() >= 0.0 and converted.max() == pytest.approx(1.0)
    best = max(np.corrcoef(np.roll(converted, (dy, dx), (0, 1)).ravel(), original.ravel())[0, 1] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    assert best > 0.95


def test_conversion_centres_fits_and_inverts():
    digit = np.zeros((90, 200), dtype=np.float32)
    digit[10:70, 150:165] = 1.0  # a thick bar far off-centre on a wide canvas
    field = mnist_style(digit)
    ys, xs = np.indices(field.shape)
    assert (ys * field).sum() / field.sum() == pytest.approx(14.0, abs=0.5)
    assert (xs * field).sum() / field.sum() == pytest.approx(14.0, abs=0.5)
    rows = np.flatnonzero(field.any(axis=1))
    assert rows[-1] - rows[0] + 1 == 20
    assert np.allclose(mnist_style(1.0 - digit), field)  # dark ink on light paper reads the same


@pytest.mark.slow
def test_predicts_the_committed_digits(cli, digit_model):
    result = invoke(cli, "predict", "--model", digit_model, "--json", *DIGITS)
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.stdout)["predictions"]
    assert [p["input"] for p in predictions] == [str(p) for p in DIGITS]
    for prediction in predictions:
        probabilities = prediction["probabilities"]
        assert len(probabilities) == 10 and sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert prediction["probability"] == max(probabilities) == probabilities[prediction["digit"]]
    assert [p["digit"] for p in predictions] == [_label_and_index(p)[0] for p in DIGITS]


@pytest.mark.slow
def test_top_k_text_output(cli, digit_model):
    result = invoke(cli, "predict", "--model", digit_model, "--top", 3, DIGITS[0], DIGITS[3])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, path in zip(lines, (DIGITS[0], DIGITS[3]), strict=True):
        fields = line.split()
        assert fields[0] == str(path) and len(fields) == 7
        digits, probabilities = [int(f) for f in fields[1::2]], [float(f) for f in fields[2::2]]
        assert digits[0] == _label_and_index(path)[0] and len(set(digits)) == 3
        assert probabilities == sorted(probabilities, reverse=True)


@pytest.mark.slow
def test_npy_arrays_one_image_and_a_batch(cli, digit_model, test_images, tmp_path):
    import keras

    batch = test_images[:5]
    np.save(tmp_path / "batch.npy", batch)
    np.save(tmp_path / "one.npy", (batch[0] / 255.0).astype(np.float32).reshape(784))
    result = invoke(cli, "predict", "--model", digit_model, "--json", tmp_path / "batch.npy", tmp_path / "one.npy")
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.stdout)["predictions"]
    assert [p["input"] for p in predictions] == [f"{tmp_path / 'batch.npy'}[{i}]" for i in range(5)] + [str(tmp_path / "one.npy")]
    model = keras.models.load_model(digit_model / "model.keras", safe_mode=True)
    expected = model.predict(batch.reshape(5, 784) / 255.0, verbose=0)
    assert [p["digit"] for p in predictions] == list(expected.argmax(axis=1)) + [int(expected[0].argmax())]
    assert np.allclose([p["probabilities"] for p in predictions[:5]], expected, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "rows"),
    [((48,), 1), ((4, 4, 3), 1), ((5, 48), 5), ((5, 4, 4, 3), 5), ((2, 12, 4), 2), ((0, 4, 4, 3), None), ((5, 47), None)],
)
def test_npy_samples_are_read_in_the_shape_they_were_trained_in(tmp_path, shape, rows):
    # A model tuned on an .npz of (N, 4, 4, 3) colour images takes rows of 48 pixels: arrays of those samples read as rows.
    path = tmp_path / "x.npy"
    np.save(path, np.arange(int(np.prod(shape)), dtype=np.uint8).reshape(shape))
    if rows is None:
        with pytest.raises(InputImageError, match="holds no samples" if 0 in shape else "not one sample or a batch"):
            read_array(path, input_dim=48)
    else:
        assert read_array(path, input_dim=48).shape == (rows, 48)


def _lambda_model(path: Path) -> None:
    import keras

    inputs = keras.Input((784,))
    doubled = keras.layers.Lambda(lambda x: x * 2)(inputs)
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(doubled)).save(path)


def test_bad_models_each_get_one_line(cli, tmp_path):
    image = DIGITS[0]
    _one_error_line(invoke(cli, "predict", "--model", tmp_path / "missing", image), 6, "model directory not found")
    (tmp_path / "empty").mkdir()
    _one_error_line(invoke(cli, "predict", "--model", tmp_path / "empty", image), 6, "no model.keras")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model.keras").write_bytes(b"\x00garbage")
    _one_error_line(invoke(cli, "predict", "--model", tmp_path / "junk", image), 6, "not a Keras model archive")
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("notes.txt", "a zip, but no model")
    _one_error_line(invoke(cli, "predict", "--model", tmp_path / "other.keras", image), 6, "not a loadable Keras model")
    _lambda_model(tmp_path / "lambda.keras")
    _one_error_line(invoke(cli, "predict", "--model", tmp_path / "lambda.keras", image), 6, "safe_mode")
    assert (tmp_path / "junk" / "model.keras").read_bytes() == b"\x00garbage"


@pytest.mark.slow
def test_bad_inputs_each_get_one_line(cli, digit_model, tmp_path):
    from PIL import Image

    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(next(p for p in DIGITS if p.suffix == ".jpg").read_bytes()[:300])
    Image.new("L", (40, 40), 230).save(tmp_path / "blank.png")
    np.save(tmp_path / "shape.npy", np.zeros((3, 5)))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "range.npy", np.full((28, 28), 300.0))

    cases = [
        (text, "not an image"),
        (tmp_path / "missing.png", "no such file"),
        (truncated, "cannot read the image"),
        (tmp_path / "blank.png", "no digit found"),
        (tmp_path / "shape.npy", "shape (3, 5)"),
        (tmp_path / "objects.npy", "not a readable .npy array"),
        (tmp_path / "range.npy", "[0, 1] or [0, 255]"),
        (tmp_path, "is a directory"),
    ]
    for path, fragment in cases:
        # A good image first: one bad input fails the whole call before anything is printed.
        _one_error_line(invoke(cli, "predict", "--model", digit_model, DIGITS[1], path), 7, str(path), fragment)
    assert text.read_text() == "not an image"
