"""The scripts that write the other benchmark datasets (README, rows 5, 5b and 5c) write what tuner reads,
the same files on every run: the figures measured on them name a dataset anyone can regenerate."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tuner.data import load_final_data

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("script", "n_train", "n_test", "n_features", "n_classes"),
    [("make_digits", 1_437, 360, 64, 10), ("make_tabular", 10_000, 2_000, 40, 6), ("make_mnist1d", 4_000, 1_000, 40, 10)],
)
def test_a_dataset_script_writes_the_same_csv_folder_every_run_and_tuner_reads_it(tmp_path, script, n_train, n_test, n_features, n_classes):
    make = _script(script)
    make.main(tmp_path / "first")
    make.main(tmp_path / "second")

    for name in ("train.csv", "test.csv"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()
    data = load_final_data(dataset="mnist", data_path=str(tmp_path / "first"), validation_fraction=0.1, split_seed=0)
    tuning = data.tuning
    assert len(tuning.x_train) + len(tuning.x_val) == n_train and len(data.x_test) == n_test
    assert tuning.x_train.shape[1] == n_features and tuning.n_classes == n_classes
    assert set(np.unique(data.y_test).tolist()) == set(range(n_classes))  # every class in the test part
