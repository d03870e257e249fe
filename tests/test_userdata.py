"""Users' own data: CSV tables and image folders, end to end through `tuner run` and `export-best`."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers import FIXTURES, invoke
from tuner.data import load_final_data, load_tuning_data
from tuner.errors import DataError
from tuner.studyfile import load_study_file
from tuner.userdata import DataOptions

CSV = FIXTURES / "digits-7x7.csv"
FOLDERS = FIXTURES / "digit-folders"
STUDIES = FIXTURES.parents[1] / "studies"
QUICK = {"epochs = { low = 10, high = 40 }": "epochs = { low = 2, high = 3 }"}


def _quick_study(tmp_path, name):
    text = (STUDIES / name).read_text()
    for old, new in QUICK.items():
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


def _load(path, **options):
    return load_final_data(dataset="mnist", data_path=str(path), validation_fraction=0.1, split_seed=0, options=DataOptions(**options))


def test_csv_with_word_labels_is_standardised_on_the_training_part():
    final = _load(CSV, label_column="digit")
    data = final.tuning
    assert data.input_dim == 49 and data.n_classes == 10
    assert data.class_names == ("eight", "five", "four", "nine", "one", "seven", "six", "three", "two", "zero")
    assert len(data.x_train) + len(data.x_val) == 480 and len(final.x_test) == 120
    assert np.allclose(data.x_train.mean(axis=0), 0, atol=1e-4)
    assert data.feature_std.shape == (49,) and (data.feature_std > 0).all()


def test_image_folders_follow_the_study_image_size_and_color():
    gray = _load(FOLDERS, image_size=(14, 10)).tuning
    assert gray.input_dim == 140 and gray.n_classes == 10 and gray.x_train.min() >= 0 and gray.x_train.max() <= 1
    color = _load(FOLDERS, image_size=(8, 8), color=True).tuning
    assert color.input_dim == 8 * 8 * 3


def test_train_and_test_folders_are_used_as_given(tmp_path):
    for part in ("train", "test"):
        for name in ("cat", "dog"):
            (tmp_path / part / name).mkdir(parents=True)
            for i in range(3 if part == "train" else 2):
                from PIL import Image

                Image.fromarray(np.full((5, 5), 40 * i, np.uint8)).save(tmp_path / part / name / f"{i}.png")
    final = _load(tmp_path, image_size=(5, 5))
    assert len(final.x_test) == 4 and final.tuning.class_names == ("cat", "dog")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("a,b\n1,2\n", "no label column 'label'"),
        ("x,label\n1,a\n2\n", "line 3 has 1 fields"),
        ("x,label\nfoo,a\n", "'foo' is not a number"),
        ("x,label\n,a\n", "is not a number"),
        ("x,label\nnan,a\n", "missing or infinite"),
        ("x,label\n1,\n", "empty label"),
        ("", "empty CSV"),
        ("x,label\n", "no data rows"),
        ("label\n1\n", "no feature columns"),
    ],
)
def test_malformed_csv(tmp_path, content, words):
    path = tmp_path / "table.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=words):
        _load(path)


def test_bad_image_folders(tmp_path):
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="at least two class sub-folders"):
        _load(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "b.png").write_bytes(b"")
    with pytest.raises(DataError, match="not a readable image"):
        _load(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_tuning_data(dataset="mnist", data_path=str(tmp_path), validation_fraction=0.1, split_seed=1)


@pytest.mark.slow
@pytest.mark.parametrize(("study", "data"), [("digits_csv.toml", CSV), ("image_folder.toml", FOLDERS)])
def test_example_studies_run_and_export(cli, tmp_path, study, data):
    assert load_study_file(path=STUDIES / study)  # the shipped example is valid as it is
    url = f"sqlite:///{tmp_path / 'own.db'}"
    result = invoke(cli, "run", "--trials", 4, "--study-file", _quick_study(tmp_path, study), "--data", data, "--storage", url)
    assert result.exit_code == 0, result.output
    name = load_study_file(path=STUDIES / study).name
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    assert len(trials) == 4 and any(t.state == TrialState.COMPLETE for t in trials)
    out = tmp_path / "model"
    exported = invoke(cli, "export-best", "--storage", url, "--out", out)
    assert exported.exit_code == 0, exported.output
    record = json.loads((out / "model.json").read_text())
    assert record["data"]["n_classes"] == 10 and len(record["data"]["class_names"]) == 10
    assert record["data"]["input_dim"] == (49 if study.startswith("digits") else 784)


@pytest.mark.slow
def test_an_npz_of_features_is_searched_exported_and_predicted_as_a_table(cli, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(loc=[0.0, 50.0, -3.0, 400.0], scale=[1.0, 20.0, 0.5, 100.0], size=(400, 4))  # no pixels: columns of any scale
    y = ((x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 50)).astype(np.int64)  # four classes, each from the columns' signs
    data = tmp_path / "measurements.npz"
    np.savez(data, x_train=x[:320], y_train=y[:320], x_test=x[320:], y_test=y[320:])
    url = f"sqlite:///{tmp_path / 'own.db'}"
    result = invoke(cli, "run", "--trials", 3, "--study-file", _quick_study(tmp_path, "digits_csv.toml"), "--data", data, "--storage", url)
    assert result.exit_code == 0, result.output
    out = tmp_path / "model"
    assert invoke(cli, "export-best", "--storage", url, "--out", out).exit_code == 0
    record = json.loads((out / "model.json").read_text())["data"]
    assert record["kind"] == "table" and record["feature_names"] == ["x0", "x1", "x2", "x3"] and record["n_classes"] == 4
    rows = tmp_path / "rows.npy"
    np.save(rows, x[320:330])  # raw measurements: predict standardises them as the training part was
    predicted = invoke(cli, "predict", "--model", out, rows, "--json")
    assert predicted.exit_code == 0, predicted.output
    assert len(json.loads(predicted.stdout)["predictions"]) == 10
