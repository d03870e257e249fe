"""``tuner report``: one offline HTML file, on a real run and on the edge cases of a study's life."""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter

import optuna
import plotly.offline
import pytest
from optuna.trial import TrialState

from tests.helpers import EXPORTED_FIGURES, TRAINING_HISTORY, confusion, invoke, make_study, objective_value, sqlite_file, write_export
from tuner.curves import ACCURACY_OVER_TIME, ACCURACY_PER_EPOCH
from tuner.errors import ConfigError, StudyNotFoundError
from tuner.exportmeta import EXPORT_ATTR, METADATA_FILE, ExportMetadata, ExportRecord, FinalModelFigures, FinalModelScore, ModelInput
from tuner.report import TOP_TRIALS, build_report
from tuner.storage import load_study

HISTORY_TITLE = "Optimization history (best so far)"
CURVES_TITLE = "Best validation loss so far, per epoch (what the pruner compares)"


def top_table_trial_numbers(page: str) -> list[int]:
    table = re.search(r'<table class="trials">.*?</table>', page, re.S)
    assert table, "no top-trials table"
    return [int(number) for number in re.findall(r"<tr><td>(\d+)", table.group(0))]


@pytest.mark.slow
def test_report_of_a_tuner_run(trained_study, tmp_path):
    url, name = trained_study
    result = build_report(storage_url=url, out=tmp_path / "report.html")
    study = load_study(storage_url=url, study_name=name)
    page = result.path.read_text()

    assert result.study_name == name and result.path == (tmp_path / "report.html").resolve()
    assert {k: v for k, v in result.counts.items() if v} == dict(Counter(t.state.name for t in study.trials))
    assert plotly.offline.get_plotlyjs() in page, "plotly.js must be embedded for offline use"
    assert not re.search(r"<script[^>]+src=", page), "the report must not load scripts from the network"
    assert page.count('class="plotly-graph-div"') == len(result.figures)
    for title in ("Trials by state", CURVES_TITLE, HISTORY_TITLE, "Parameter importances", "Parallel coordinates", "Slice plots"):
        assert title in result.figures
    assert "Accuracy against cost: validation loss vs parameters" in result.figures  # every tuner trial records n_params
    assert ACCURACY_PER_EPOCH in result.figures and ACCURACY_OVER_TIME in result.figures  # from the trials' epoch logs
    assert top_table_trial_numbers(page)[0] == study.best_trial.number
    assert not result.has_export and any(note.startswith("Final model: no final model yet") for note in result.notes)


@pytest.mark.slow
def test_report_of_a_real_export(trained_study, tmp_path):
    """The contract with 'tuner export-best': its study attribute and model.json, as it writes them."""
    from tuner.export import export_best

    url, name = trained_study
    copy = tmp_path / "copy.db"  # exporting writes a study attribute; the shared study stays untouched
    with sqlite3.connect(sqlite_file(url)) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    exported = export_best(storage_url=f"sqlite:///{copy}", out=tmp_path / "model")
    result = build_report(storage_url=f"sqlite:///{copy}", out=tmp_path / "report.html")

    assert result.has_export and result.test_accuracy == pytest.approx(exported.test_accuracy)
    assert result.figures[-2:] == ("Confusion matrix (test set)", "Final model training curves")
    assert not [note for note in result.notes if note.startswith(("Final model", "Confusion"))]
    assert f"Test accuracy <b>{exported.test_accuracy:.4f}</b>" in result.path.read_text()


def test_pruned_failed_and_running_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = make_study(url, complete=14, pruned=5, failed=2, running=1)
    result = build_report(storage_url=url, out=tmp_path / "report.html")
    page = result.path.read_text()

    assert {k: v for k, v in result.counts.items() if v} == {"COMPLETE": 14, "PRUNED": 5, "FAIL": 2, "RUNNING": 1}
    assert result.figures == (
        "Trials by state",
        CURVES_TITLE,
        HISTORY_TITLE,
        "Parameter importances",
        "Parallel coordinates",
        "Slice plots",
        "Contour: learning_rate vs units",
    )
    complete = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=objective_value)
    assert top_table_trial_numbers(page) == [t.number for t in complete[:TOP_TRIALS]]
    assert f"Top {TOP_TRIALS} trials" in page


def test_no_completed_trial_gives_a_message_not_empty_plots(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(url, pruned=3, failed=1)
    result = build_report(storage_url=url, out=tmp_path / "report.html")
    page = result.path.read_text()

    assert result.figures == ("Trials by state", CURVES_TITLE)  # pruned trials still have curves worth seeing
    assert "Search results: no completed trial yet (3 pruned, 1 failed)" in " ".join(result.notes)
    assert "no completed trial yet (3 pruned, 1 failed)" in page
    assert HISTORY_TITLE not in page and '<table class="trials">' not in page


def test_only_failed_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(url, failed=2)
    result = build_report(storage_url=url, out=tmp_path / "report.html")
    assert result.figures == ("Trials by state",)
    assert any(note.startswith(CURVES_TITLE) for note in result.notes)


def test_study_without_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(url)
    result = build_report(storage_url=url, out=tmp_path / "report.html")
    assert result.figures == () and result.n_trials == 0
    assert "the study holds no trial yet" in result.path.read_text()


def test_a_single_completed_trial(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(url, complete=1, pruned=1)
    result = build_report(storage_url=url, out=tmp_path / "report.html")
    assert HISTORY_TITLE in result.figures and "Parameter importances" not in result.figures
    assert "Parameter importances: needs at least two completed trials" in result.notes
    assert any(note.startswith("Contour: learning_rate vs units: needs two completed trials") for note in result.notes)
    assert top_table_trial_numbers(result.path.read_text()) == [0]


def test_final_model_section(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = make_study(url, complete=4)
    write_export(study, tmp_path / "model", EXPORTED_FIGURES)
    result = build_report(storage_url=url, out=tmp_path / "report.html")
    page = result.path.read_text()

    assert result.has_export and result.test_accuracy == pytest.approx(0.9801)  # model.json wins over the study attr
    assert result.figures[-2:] == ("Confusion matrix (test set)", "Final model training curves")
    assert "Test accuracy <b>0.9801</b>" in page
    assert not any(note.startswith("Final model") or note.startswith("Confusion") for note in result.notes)


@pytest.mark.parametrize(
    ("model_json", "record", "expected_note", "expected_accuracy"),
    [
        (None, None, "Final model: no final model yet", None),
        (None, "not a dict", "Final model: the study's export record is unreadable", None),
        (None, "default", "model.json is missing", 0.9123),
        ("{not json", "default", "model.json is unreadable", 0.9123),
        ([1, 2, 3], "default", "model.json does not hold a JSON object", 0.9123),
        (
            {"test": {"confusion_matrix": [[1, 2], [3]]}, "training": {"history": TRAINING_HISTORY}},
            "default",
            "Confusion matrix (test set): model.json holds no square numeric",
            0.9123,
        ),
        (
            {"test": {"accuracy": "high", "confusion_matrix": confusion()}, "training": {"history": "none"}},
            "default",
            "Final model training curves: model.json holds no per-epoch",
            0.9123,
        ),
    ],
    ids=["no-export", "bad-record", "no-model-json", "bad-json", "json-list", "ragged-matrix", "bad-history"],
)
def test_damaged_exports_are_reported_not_fatal(tmp_path, model_json, record, expected_note, expected_accuracy):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = make_study(url, complete=3)
    if record is not None:
        write_export(study, tmp_path / "model", model_json, record)
    result = build_report(storage_url=url, out=tmp_path / "report.html")

    assert any(expected_note in note for note in result.notes), result.notes
    assert result.test_accuracy == expected_accuracy
    assert HISTORY_TITLE in result.figures  # the search part of the report is unaffected


def test_missing_storage_is_an_error_and_creates_nothing(tmp_path):
    database, out = tmp_path / "absent.db", tmp_path / "report.html"
    with pytest.raises(StudyNotFoundError, match="no study database"):
        build_report(storage_url=f"sqlite:///{database}", out=out)
    assert not database.exists() and not out.exists()


def test_several_studies_need_a_name(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(url, complete=2, name="a")
    make_study(url, pruned=2, name="b")
    with pytest.raises(StudyNotFoundError, match="holds 2 studies"):
        build_report(storage_url=url, out=tmp_path / "report.html")
    assert build_report(storage_url=url, study_name="b", out=tmp_path / "b.html").counts["PRUNED"] == 2


def test_unwritable_output_is_a_config_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(url, complete=2)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot write the report"):
        build_report(storage_url=url, out=tmp_path / "file" / "report.html")


def test_multi_objective_study_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="two", storage=url, directions=["minimize", "maximize"])
    with pytest.raises(ConfigError, match="2 objectives"):
        build_report(storage_url=url, out=tmp_path / "report.html")


def test_cli_report(cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(url, complete=5, pruned=2)
    out = tmp_path / "out" / "report.html"
    result = invoke(cli, "report", "--storage", url, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout and "7 figures" in result.stdout  # trials made without epoch logs: no accuracy curves
    assert "note: Final model: no final model yet" in result.stderr
    assert out.read_text().count('class="plotly-graph-div"') == 7


def test_cli_report_without_storage(cli, tmp_path):
    result = invoke(cli, "report", "--storage", f"sqlite:///{tmp_path / 'absent.db'}", "--out", tmp_path / "r.html")
    assert result.exit_code == StudyNotFoundError.exit_code
    assert result.stderr.startswith("Error: no study database at")


def test_the_export_record_round_trips_and_reads_foreign_values_as_unknown():
    study = optuna.create_study()
    ExportRecord(path="/models/best", trial=7, test_accuracy=0.9876, test_loss=0.04, exported_at="2026-12-01T13:00:00+00:00").save(study)
    assert ExportRecord.of_study(study.user_attrs) == ExportRecord(
        path="/models/best", trial=7, test_accuracy=0.9876, test_loss=0.04, exported_at="2026-12-01T13:00:00+00:00"
    )
    # Another client of the database may have written anything JSON holds.
    study.set_user_attr(EXPORT_ATTR, {"path": "/m", "trial": True, "test_accuracy": "0.9", "test_loss": None})
    assert ExportRecord.of_study(study.user_attrs) == ExportRecord(path="/m", trial=None, test_accuracy=None, test_loss=None)
    assert ExportRecord.of_study(optuna.create_study().user_attrs) is None
    study.set_user_attr(EXPORT_ATTR, {"trial": 3})
    with pytest.raises(ValueError, match="unreadable"):
        ExportRecord.of_study(study.user_attrs)


def test_model_json_round_trips_and_the_report_reads_what_export_best_writes(tmp_path):
    score = FinalModelScore(loss=0.05, accuracy=0.987, n_samples=4, confusion_matrix=[[2, 0], [0, 2]])
    metadata = ExportMetadata(
        study_name="s",
        storage="",
        trial_number=3,
        selected="best",
        params={"units": 8},
        trial={"val_loss": 0.06},
        test=score,
        training={"epochs": 3},
        history=TRAINING_HISTORY,
        data={"dataset": "mnist"},
        model_input=ModelInput(kind="mnist", input_dim=4, n_classes=2, class_names=("a", "b")),
    )
    metadata.write(tmp_path / METADATA_FILE)

    assert ExportMetadata.from_dir(tmp_path) == metadata
    document = json.loads((tmp_path / METADATA_FILE).read_text())
    assert FinalModelFigures.of_document(document) == FinalModelFigures(
        test_accuracy=0.987, test_loss=0.05, confusion_matrix=[[2, 0], [0, 2]], history=TRAINING_HISTORY
    )
    assert FinalModelFigures.of_document({"test": [1], "training": None}) == FinalModelFigures()
