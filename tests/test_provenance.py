"""A resume or a joining worker cannot silently change what a study measures; each trial records its seed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from tests.helpers import FAST_STUDY, MNIST_SMALL, invoke, one_error_line
from tuner.config import resolve_run_config
from tuner.data import read_idx
from tuner.errors import ConfigError
from tuner.runner import prepare_study


def _run(cli, url, study_file, *extra):
    return invoke(cli, "run", "--study-file", study_file, "--storage", url, "-q", *extra)


def _other_data(tmp_path: Path) -> Path:
    """The fixture as an .npz with one training label changed: other data, same shapes."""
    arrays: dict[str, Any] = {  # Any: np.savez types **arrays as if one could be its allow_pickle flag
        key: read_idx(MNIST_SMALL / f"{stem}.gz")
        for key, stem in (
            ("x_train", "train-images-idx3-ubyte"),
            ("y_train", "train-labels-idx1-ubyte"),
            ("x_test", "t10k-images-idx3-ubyte"),
            ("y_test", "t10k-labels-idx1-ubyte"),
        )
    }
    arrays["y_train"] = arrays["y_train"].copy()
    arrays["y_train"][0] = (arrays["y_train"][0] + 1) % 10
    path = tmp_path / "other.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.slow
def test_resume_with_another_seed_is_refused_and_omitting_it_uses_the_studys(cli, fast_study_file, sqlite_url):
    assert _run(cli, sqlite_url, fast_study_file, "--trials", 1, "--seed", 5, "--data", MNIST_SMALL).exit_code == 0
    one_error_line(_run(cli, sqlite_url, fast_study_file, "--trials", 2, "--seed", 6, "--data", MNIST_SMALL), 2, "seed 5", "this run has 6")
    resumed = _run(cli, sqlite_url, fast_study_file, "--trials", 2)  # neither --seed nor --data: the study's
    assert resumed.exit_code == 0, resumed.output
    trials = optuna.load_study(study_name="fast", storage=sqlite_url).trials
    assert [t.user_attrs["seed"] for t in trials] == [5, 6]  # the seed each trial trained with: study seed + number


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("data", "data (checksum)"),
        ("validation_fraction", "validation fraction 0.1"),
        ("split_seed", "split seed 0"),
        ("classes", "data options"),
    ],
)
def test_resume_with_other_data_or_split_is_refused(cli, fast_study_file, sqlite_url, tmp_path, change, words):
    assert _run(cli, sqlite_url, fast_study_file, "--trials", 1, "--data", MNIST_SMALL).exit_code == 0
    data = MNIST_SMALL
    if change == "data":
        data = _other_data(tmp_path)
    else:
        setting = {"validation_fraction": "validation_fraction = 0.25", "split_seed": "split_seed = 7", "classes": "classes = 12"}[change]
        changed = tmp_path / "changed.toml"
        changed.write_text(FAST_STUDY + f"\n[data]\n{setting}\n")
        fast_study_file = changed
    one_error_line(_run(cli, sqlite_url, fast_study_file, "--trials", 2, "--data", data), 2, words, "'fast'")
    assert len(optuna.load_study(study_name="fast", storage=sqlite_url).trials) == 1


def test_a_joining_worker_takes_the_studys_heartbeat_and_a_disagreeing_flag_is_an_error(fast_study_file, sqlite_url):
    common = {"study_file": fast_study_file, "storage_url": sqlite_url, "data_path": str(MNIST_SMALL), "n_trials": 1}
    prepare_study(resolve_run_config(**common, heartbeat_interval=2, grace_period=9))
    joined = prepare_study(resolve_run_config(**common))
    assert (joined.config.heartbeat_interval, joined.config.grace_period) == (2, 9)
    assert (joined.storage.heartbeat_interval, joined.storage.grace_period) == (2, 9)
    with pytest.raises(ConfigError, match="grace period 9, this run has 4"):
        prepare_study(resolve_run_config(**common, heartbeat_interval=2, grace_period=4))


@pytest.mark.slow
def test_export_uses_the_trials_seed_and_refuses_other_data_unless_allowed(cli, fast_study_file, sqlite_url, tmp_path):
    assert _run(cli, sqlite_url, fast_study_file, "--trials", 2, "--data", MNIST_SMALL).exit_code == 0
    study = optuna.load_study(study_name="fast", storage=sqlite_url)
    out = tmp_path / "model"
    one_error_line(
        invoke(cli, "export-best", "--storage", sqlite_url, "--out", out, "--data", _other_data(tmp_path), "-q"), 2, "--allow-other-data"
    )
    assert not out.exists()
    result = invoke(cli, "export-best", "--storage", sqlite_url, "--out", out, "--data", _other_data(tmp_path), "--allow-other-data", "-q")
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "model.json").read_text())
    assert (
        meta["training"]["seed"] == study.trials[meta["trial_number"]].user_attrs["seed"]
        and meta["training"]["seed_source"] == "the trial's own"
    )
    tuned = study.user_attrs["tuner"]["data_checksum"]
    assert meta["data"]["tuned_checksum"] == tuned and meta["data"]["checksum"] != tuned
