"""`tuner export-best` end to end, in-process: the export is checked against the database and the data."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers import MNIST_SMALL, invoke, one_error_line
from tuner.data import load_final_data
from tuner.export import EpochProgress
from tuner.exportmeta import ExportRecord
from tuner.records import EPOCH_BUDGET_ATTR, PORTFOLIO_ATTR, epoch_log, trained_params
from tuner.selection import final_epochs, most_accurate
from tuner.storageurl import mask_url


def _study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_export_best_matches_database_and_test_set(cli, study_copy, tmp_path):
    import keras

    url, name = study_copy
    out = tmp_path / "models" / "best"
    result = invoke(cli, "export-best", "--storage", url, "--study", name, "--out", out)
    assert result.exit_code == 0, result.output

    study = _study(url, name)
    peak = most_accurate(study.trials)  # the most accurate trial on validation, not the one of lowest loss
    assert peak is not None
    best = peak.trial
    meta = json.loads((out / "model.json").read_text())
    assert meta["study_name"] == name and meta["storage"] == mask_url(url)
    assert meta["trial_number"] == best.number and meta["selected"] == "best"
    assert meta["params"] == trained_params(best)  # epochs cut to its budget where it had one (the lead, a baseline)
    assert meta["trial"]["val_loss"] == best.value
    assert meta["trial"]["val_accuracy"] == peak.val_accuracy == max(r.val_accuracy for r in epoch_log(best))
    assert meta["training"]["epochs"] == meta["trial"]["best_epoch"] == peak.epoch == len(meta["training"]["history"])
    assert meta["trial"]["lowest_loss_epoch"] == best.user_attrs["best_epoch"]
    assert meta["training"]["batch_size"] == best.params["batch_size"]
    assert meta["training"]["refit_full"] is True and meta["training"]["n_samples"] == 2400
    assert meta["training"]["seed"] == best.user_attrs["seed"] == study.user_attrs["tuner"]["seed"] + best.number

    final = load_final_data(
        dataset="mnist", data_path=str(MNIST_SMALL), validation_fraction=study.user_attrs["tuner"]["validation_fraction"], split_seed=0
    )
    assert meta["data"]["checksum"] == final.tuning.checksum
    test = meta["test"]
    confusion = np.array(test["confusion_matrix"])
    assert confusion.shape == (10, 10) and confusion.sum() == test["n_samples"] == 600
    assert np.trace(confusion) / 600 == pytest.approx(test["accuracy"])
    assert {"tuner", "optuna", "keras", "tensorflow"} <= set(meta["versions"]) and meta["versions"]["optuna"] == optuna.__version__
    assert datetime.fromisoformat(meta["started_at"]) <= datetime.fromisoformat(meta["finished_at"])

    # The saved model is the one that was scored: it reproduces the recorded test accuracy.
    model = keras.models.load_model(out / "model.keras", safe_mode=True)
    predicted = model.predict(final.x_test, verbose=0).argmax(axis=1)
    assert float((predicted == final.y_test).mean()) == pytest.approx(test["accuracy"])
    assert np.array_equal(np.bincount(final.y_test * 10 + predicted, minlength=100).reshape(10, 10), confusion)

    record = ExportRecord.of_study(study.user_attrs)
    assert record is not None and record.path == str(out.resolve()) and record.trial == best.number
    assert record.test_accuracy == test["accuracy"] and record.test_loss == test["loss"]
    assert f"test accuracy {test['accuracy']:.4f}" in result.stdout and str(out / "model.keras") in result.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["best"]  # no temporary directory left behind


@pytest.mark.slow
def test_chosen_trial_without_refit_through_the_library(study_copy, tmp_path):
    from tuner.export import export_best

    url, name = study_copy
    study = _study(url, name)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    most = most_accurate(complete)
    assert most is not None
    chosen = next((t for t in complete if t.number != most.trial.number), complete[0])
    epochs: list[EpochProgress] = []
    result = export_best(storage_url=url, trial_number=chosen.number, out=tmp_path / "chosen", refit_full=False, on_epoch=epochs.append)

    meta = json.loads(result.metadata_path.read_text())
    assert result.trial_number == meta["trial_number"] == chosen.number
    assert meta["params"] == trained_params(chosen) and result.params == chosen.params
    assert meta["training"]["n_samples"] == 2000  # the training part only: 1/6 of 2400 stays for validation
    assert all("val_xent" in row for row in meta["training"]["history"])
    planned = final_epochs(chosen)
    assert planned is not None
    assert [e.epoch for e in epochs] == list(range(1, planned + 1))
    assert result.test_accuracy == meta["test"]["accuracy"] and not result.replaced
    record = ExportRecord.of_study(_study(url, name).user_attrs)
    assert record is not None and record.trial == chosen.number


def test_the_quick_lead_exports_with_the_schedule_of_the_budget_it_trained(study_copy, tmp_path):
    from tuner.export import export_best

    url, name = study_copy
    lead = _study(url, name).trials[0]
    assert PORTFOLIO_ATTR in lead.user_attrs and lead.state == TrialState.COMPLETE
    budget = lead.user_attrs[EPOCH_BUDGET_ATTR]
    assert lead.user_attrs["epochs_trained"] == budget < lead.params["epochs"]  # it trained its budget, not the space's epochs
    result = export_best(storage_url=url, trial_number=0, out=tmp_path / "lead", refit_full=False)
    meta = json.loads(result.metadata_path.read_text())
    assert meta["params"] == {**lead.params, "epochs": budget}  # the model.json says what the model was built from
    assert meta["training"]["epochs"] <= budget


@pytest.mark.slow
def test_rerun_needs_force_and_failed_writes_keep_the_old_export(cli, study_copy, tmp_path, monkeypatch):
    import tuner.export

    url, name = study_copy
    out = tmp_path / "export"
    assert invoke(cli, "export-best", "--storage", url, "--out", out).exit_code == 0
    before = _snapshot(out)

    one_error_line(invoke(cli, "export-best", "--storage", url, "--out", out), 5, "already holds an export", "--force")
    assert _snapshot(out) == before

    def disk_full(path, document):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tuner.export, "_write_json", disk_full)
    one_error_line(invoke(cli, "export-best", "--storage", url, "--out", out, "--force", "--quiet"), 5, "No space left on device")
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    monkeypatch.undo()

    other = next(
        t.number
        for t in _study(url, name).trials
        if t.state == TrialState.COMPLETE and t.number != json.loads(before["model.json"])["trial_number"]
    )
    result = invoke(cli, "export-best", "--storage", url, "--out", out, "--force", "--trial", other, "--quiet")
    assert result.exit_code == 0, result.output
    assert "replaced" in result.stdout and json.loads((out / "model.json").read_text())["trial_number"] == other


@pytest.mark.slow
def test_storage_problems_each_get_one_line(cli, study_copy, tmp_path):
    url, name = study_copy
    one_error_line(invoke(cli, "export-best", "--storage", f"sqlite:///{tmp_path / 'none.db'}"), 4, "no study database")
    assert not (tmp_path / "none.db").exists()
    one_error_line(invoke(cli, "export-best", "--storage", url, "--study", "nope"), 4, "no study named 'nope'")
    one_error_line(invoke(cli, "export-best", "--storage", url, "--trial", 999), 4, "no trial 999")
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_text("not a database")
    one_error_line(invoke(cli, "export-best", "--storage", f"sqlite:///{not_a_db}"), 4, "cannot open storage")
    assert not_a_db.read_text() == "not a database"


def test_unreachable_server_is_one_line_without_the_password(cli):
    pytest.importorskip("psycopg2")
    line = one_error_line(
        invoke(cli, "export-best", "--storage", "postgresql+psycopg2://tuner:s3cret@127.0.0.1:9/tuner"), 4, "cannot open storage"
    )
    assert "s3cret" not in line


def test_study_without_a_finished_trial(cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    study = optuna.create_study(study_name="empty", storage=url)
    one_error_line(invoke(cli, "export-best", "--storage", url), 4, "no completed trial")
    study.tell(study.ask(), state=TrialState.FAIL)
    one_error_line(invoke(cli, "export-best", "--storage", url, "--trial", 0), 4, "trial 0", "FAIL")


@pytest.mark.slow
def test_output_paths_that_must_not_be_touched(cli, study_copy, tmp_path):
    url, _ = study_copy
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    one_error_line(invoke(cli, "export-best", "--storage", url, "--out", a_file), 5, "not a directory")
    assert a_file.read_text() == "keep me"

    other_dir = tmp_path / "mine"
    other_dir.mkdir()
    (other_dir / "thesis.tex").write_text("keep me too")
    one_error_line(invoke(cli, "export-best", "--storage", url, "--out", other_dir, "--force"), 5, "holds no model.json")
    assert _snapshot(other_dir) == {"thesis.tex": b"keep me too"}


@pytest.mark.slow
def test_missing_data_is_reported_before_training(cli, study_copy, tmp_path):
    url, _ = study_copy
    one_error_line(
        invoke(cli, "export-best", "--storage", url, "--out", tmp_path / "x", "--data", tmp_path / "no-such-data"), 3, "data path not found"
    )
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_a_budget_export_records_within_budget_and_the_help_says_what_it_picks(cli, study_copy, tmp_path):
    url, _ = study_copy
    out = tmp_path / "budget"
    result = invoke(cli, "export-best", "--storage", url, "--out", out, "--max-params", 10**9, "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "model.json").read_text())["selected"] == "within-budget"
    text = " ".join(invoke(cli, "export-best", "--help").stdout.split())
    assert "--max-params N Export the most accurate trial (on validation) among those with at most N parameters" in text
