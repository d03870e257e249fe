"""Smaller correctness items: seed bounds, labels that leave classes empty, step-respecting clipping,
and an export replacement that never leaves --out without an export."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import MNIST_SMALL, invoke
from tuner.config import resolve_run_config
from tuner.data import load_tuning_data, read_idx
from tuner.errors import ConfigError, DataError
from tuner.search import baseline_params
from tuner.studyfile import IntRange, parse_study
from tuner.userdata import DataOptions
from tuner.warmstart import warm_start_params


@pytest.mark.slow
def test_seeds_are_bounded_to_what_numpy_accepts(cli, tiny_study_file, sqlite_url, tmp_path):
    with pytest.raises(ConfigError, match="--seed must be between 0 and 4294967195"):
        resolve_run_config(study_file=tiny_study_file, seed=2**32 - 100)
    assert resolve_run_config(study_file=tiny_study_file, seed=2**32 - 101).seed == 2**32 - 101
    with pytest.raises(ConfigError, match="sampler.seed: must be between 0 and 4294967295"):
        parse_study(document={"sampler": {"seed": 2**40}})
    result = invoke(
        cli, "run", "--trials", 1, "--seed", 2**40, "--study-file", tiny_study_file, "--storage", sqlite_url, "--data", MNIST_SMALL
    )
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "--seed must be between" in result.stderr
    assert not (tmp_path / "study.db").exists()  # refused before a trial could be left RUNNING


def _mnist_arrays() -> dict[str, Any]:  # Any: np.savez types **arrays as if one could be its allow_pickle flag
    names = {
        "x_train": "train-images-idx3-ubyte",
        "y_train": "train-labels-idx1-ubyte",
        "x_test": "t10k-images-idx3-ubyte",
        "y_test": "t10k-labels-idx1-ubyte",
    }
    return {key: read_idx(MNIST_SMALL / f"{stem}.gz") for key, stem in names.items()}


def test_a_label_that_leaves_classes_empty_is_refused_unless_the_study_sets_classes(tmp_path):
    arrays = _mnist_arrays()
    arrays["y_train"] = arrays["y_train"].copy()
    arrays["y_train"][7] = 42  # one corrupt label among 0-9
    np.savez(tmp_path / "corrupt.npz", **arrays)

    def load(**options):
        path = str(tmp_path / "corrupt.npz")
        return load_tuning_data(dataset="mnist", data_path=path, validation_fraction=0.1, split_seed=0, options=DataOptions(**options))

    with pytest.raises(DataError, match=r"label 42 \(1 samples\) leaves 32 classes without a training sample"):
        load()
    assert load(classes=43).n_classes == 43
    assert parse_study(document={"data": {"classes": 43}}).data_options.classes == 43


def test_classes_come_from_the_training_labels_only(tmp_path):
    arrays = _mnist_arrays()
    arrays["y_test"] = arrays["y_test"].copy()
    arrays["y_test"][0] = 10  # a class no training sample has
    np.savez(tmp_path / "test-only.npz", **arrays)
    with pytest.raises(DataError, match=r"test label 10 \(1 samples\) is not among the training labels 0-9"):
        load_tuning_data(dataset="mnist", data_path=str(tmp_path / "test-only.npz"), validation_fraction=0.1, split_seed=0)


def test_clipped_warm_start_and_baseline_values_respect_the_step():
    space = {"units": IntRange(16, 256, step=32)}
    assert warm_start_params({"units": 100}, space) == {"units": 112}
    assert warm_start_params({"units": 1000}, space) == {"units": 240}  # the largest value on the grid
    assert warm_start_params({"units": 1}, space) == {"units": 16}
    spec = parse_study(document={"space": {"units": {"low": 16, "high": 250, "step": 50}, "n_layers": {"low": 0, "high": 2}}})
    units = [params["units"] for params in baseline_params(spec) if "units" in params]
    assert units and all((value - 16) % 50 == 0 and 16 <= value <= 216 for value in units)


def _export_dir(path: Path, text: str) -> Path:
    path.mkdir()
    (path / "model.json").write_text(text)
    (path / "model.keras").write_text(text)
    return path


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_replacing_an_export_never_leaves_no_export(tmp_path, monkeypatch, exchange):
    """A SIGTERM in the middle of the replacement leaves the old or the new export, never neither."""
    import tuner.swap

    target = _export_dir(tmp_path / "out", "old")
    staging = _export_dir(tmp_path / ".out.tmp", "new")
    if not exchange:
        monkeypatch.setattr(tuner.swap, "_exchange", lambda first, second: False)
    original, seen = Path.rename, []

    def rename_then_sigterm(self, destination):
        result = original(self, destination)
        seen.append(target.exists())
        os.kill(os.getpid(), signal.SIGTERM)  # as `docker compose stop` would, right between two steps
        return result

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "rename", rename_then_sigterm)
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            tuner.swap.install_directory(staging, target)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert (target / "model.json").read_text() in ("old", "new")
    assert (target / "model.keras").read_text() == (target / "model.json").read_text()
