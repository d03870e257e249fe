"""`tuner predict` follows the export's model.json: class names, a table's standardisation, an image
folder's own preprocessing, and a clear refusal when model.json is missing, foreign or inconsistent."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import FIXTURES, invoke
from tuner.data import load_final_data
from tuner.exportmeta import ExportMetadata
from tuner.modelinputs import load_model_inputs
from tuner.userdata import DataOptions

# Every test uses a model trained and exported by a module fixture.
pytestmark = pytest.mark.slow

CSV = FIXTURES / "digits-7x7.csv"
FOLDERS = FIXTURES / "digit-folders"

# One fixed configuration: a single quick trial to export.
FIXED = """
[study]
name = "{name}"
baselines = false
portfolio = false

[data]
{data}

[pruner]
kind = "none"

[space]
n_layers = 1
units = 64
optimizer = "adam"
learning_rate = 0.003
batch_size = 32
epochs = 15
"""


def _export(tmp_path_factory, name: str, data_path: Path, data: str) -> Path:
    from tuner.config import resolve_run_config
    from tuner.export import export_best
    from tuner.runner import run_study

    directory = tmp_path_factory.mktemp(name)
    (directory / "study.toml").write_text(FIXED.format(name=name, data=data))
    url = f"sqlite:///{directory / 'study.db'}"
    run_study(config=resolve_run_config(study_file=directory / "study.toml", storage_url=url, data_path=str(data_path), n_trials=1))
    return export_best(storage_url=url, out=directory / "model").out


@pytest.fixture(scope="module")
def csv_model(tmp_path_factory) -> Path:
    return _export(tmp_path_factory, "csv", CSV, 'label_column = "digit"\nvalidation_fraction = 0.15')


@pytest.fixture(scope="module")
def folder_model(tmp_path_factory) -> Path:
    return _export(tmp_path_factory, "folders", FOLDERS, "image_size = [14, 10]\nvalidation_fraction = 0.15")


def _test_rows(tmp_path: Path, *, labelled: bool) -> tuple[Path, np.ndarray, list[str]]:
    """The CSV model's test rows written back as a CSV (columns shuffled), their raw features and labels."""
    with CSV.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    order = np.random.default_rng(0).permutation(len(body))
    picked = [body[i] for i in order[:40]]
    columns = list(reversed(range(len(header)))) if labelled else [i for i in reversed(range(len(header))) if header[i] != "digit"]
    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([header[i] for i in columns])
        writer.writerows([[row[i] for i in columns] for row in picked])
    raw = np.array([[float(v) for i, v in enumerate(row) if header[i] != "digit"] for row in picked], np.float32)
    return path, raw, [row[header.index("digit")] for row in picked]


def test_csv_model_prints_class_names_standardises_and_scores_labelled_rows(cli, csv_model, tmp_path):
    import keras

    path, raw, labels = _test_rows(tmp_path, labelled=True)
    result = invoke(cli, "predict", "--model", csv_model, "--json", path)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    meta = ExportMetadata.from_dir(csv_model).model_input
    assert document["kind"] == "table" and document["class_names"] == list(meta.class_names)
    model = keras.models.load_model(csv_model / "model.keras", safe_mode=True)
    assert meta.feature_mean is not None and meta.feature_std is not None
    mean, std = np.asarray(meta.feature_mean, dtype=np.float32), np.asarray(meta.feature_std, dtype=np.float32)
    expected = model.predict((raw - mean) / std, verbose=0)
    assert np.allclose([p["probabilities"] for p in document["predictions"]], expected, atol=1e-5)
    assert [p["label"] for p in document["predictions"]] == [meta.class_names[i] for i in expected.argmax(axis=1)]
    assert all(p["label"] in meta.class_names and "digit" not in p for p in document["predictions"])
    assert [p["true_label"] for p in document["predictions"]] == labels
    accuracy = float(np.mean([p["label"] == t for p, t in zip(document["predictions"], labels, strict=True)]))
    assert document["accuracy"] == pytest.approx(accuracy) and accuracy > 0.5

    text = invoke(cli, "predict", "--model", csv_model, path)
    assert text.exit_code == 0
    lines = text.stdout.strip().splitlines()
    assert lines[-1] == f"accuracy {accuracy:.4f} on 40 labelled rows"
    zero = labels.index("zero")
    if document["predictions"][zero]["label"] == "zero":  # the example: a correctly classified "zero" printed 9
        assert f"rows.csv[{zero}]" in lines[zero] and lines[zero].split()[1] == "zero"


def test_csv_model_takes_unlabelled_rows_and_npy_features(cli, csv_model, tmp_path):
    path, raw, _ = _test_rows(tmp_path, labelled=False)
    np.save(tmp_path / "rows.npy", raw)
    result = invoke(cli, "predict", "--model", csv_model, "--json", path, tmp_path / "rows.npy")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["accuracy"] is None
    first, second = document["predictions"][:40], document["predictions"][40:]
    assert np.allclose([p["probabilities"] for p in first], [p["probabilities"] for p in second], atol=1e-6)
    bad = tmp_path / "bad.csv"
    bad.write_text("p0,p1\n1,2\n")
    result = invoke(cli, "predict", "--model", csv_model, bad)
    assert result.exit_code == 7 and "missing columns" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_image_folder_model_gets_the_training_loaders_rows(folder_model):
    """For a file of the training folder, the row predict feeds the model is the training loader's row."""
    meta = ExportMetadata.from_dir(folder_model).model_input
    assert meta.kind == "images" and meta.image_size == (14, 10) and meta.input_dim == 140
    from tuner.userdata import read_image_folder_dataset

    classes = read_image_folder_dataset(FOLDERS, DataOptions(image_size=(14, 10)))[4]
    names = sorted(p for p in FOLDERS.rglob("*.png"))
    loaded = load_final_data(
        dataset="mnist", data_path=str(FOLDERS), validation_fraction=0.15, split_seed=0, options=DataOptions(image_size=(14, 10))
    )
    training_rows = np.concatenate([loaded.tuning.x_train, loaded.tuning.x_val, loaded.x_test])
    for path in names[::25]:
        row = load_model_inputs(path, model_input=meta).rows
        assert row.shape == (1, 140) and row.dtype == np.float32
        assert (np.abs(training_rows - row).max(axis=1) == 0).any(), path  # exactly, not approximately
    assert tuple(classes) == meta.class_names


def test_image_folder_model_prints_folder_names(cli, folder_model):
    pictures = [
        FOLDERS / "zero" / sorted(p.name for p in (FOLDERS / "zero").iterdir())[0],
        FOLDERS / "seven" / sorted(p.name for p in (FOLDERS / "seven").iterdir())[0],
    ]
    result = invoke(cli, "predict", "--model", folder_model, "--json", *pictures)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["kind"] == "images" and set(document["class_names"]) == {p.name for p in FOLDERS.iterdir()}
    assert all(p["label"] in document["class_names"] for p in document["predictions"])


def _copy(model: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    return copy


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("delete", "model.json: missing"),
        ("format", "this tuner reads 'tuner-export/2'"),
        ("classes", "inconsistent"),
        ("input_dim", "inconsistent"),
    ],
)
def test_missing_foreign_or_inconsistent_model_json_is_one_line(cli, csv_model, tmp_path, change, words):
    copy = _copy(csv_model, tmp_path)
    document = json.loads((copy / "model.json").read_text())
    if change == "delete":
        (copy / "model.json").unlink()
    else:
        if change == "format":
            document["format"] = "tuner-export/1"
        elif change == "classes":
            document["data"]["class_names"] = document["data"]["class_names"][:-1]
        else:
            document["data"]["input_dim"] += 1
            document["data"]["feature_mean"].append(0.0)
            document["data"]["feature_std"].append(1.0)
            document["data"]["feature_names"].append("extra")
        (copy / "model.json").write_text(json.dumps(document))
    rows = tmp_path / "rows.csv"
    rows.write_text(CSV.read_text().splitlines()[0] + "\n" + CSV.read_text().splitlines()[1] + "\n")
    result = invoke(cli, "predict", "--model", copy, rows)
    assert result.exit_code == 6, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and words in lines[0], lines
