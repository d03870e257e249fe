"""``tuner dashboard`` without a browser: refusals, binding, and serving while a run writes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import optuna
import pytest

from tests.helpers import invoke, make_study
from tuner.dashboard import CURVES_OVER_TIME_ID, CURVES_PER_EPOCH_ID, CurvePublisher, prepare_dashboard
from tuner.errors import ConfigError, StudyNotFoundError
from tuner.records import EPOCH_LOG_ATTR, EpochRecord
from tuner.storage import open_storage


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_missing_database_is_refused_and_not_created(tmp_path):
    database = tmp_path / "absent.db"
    with pytest.raises(StudyNotFoundError, match="no study database"):
        prepare_dashboard(storage_url=f"sqlite:///{database}", port=0)
    assert not database.exists()


def test_storage_without_studies_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    open_storage(url)  # the schema, but no study
    with pytest.raises(StudyNotFoundError, match="holds no study"):
        prepare_dashboard(storage_url=url, port=0)


def test_port_in_use_is_a_config_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(url, complete=1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is already in use"):
            prepare_dashboard(storage_url=url, port=port)


def test_serves_while_a_run_writes_to_the_same_storage(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(url, complete=2, name="live")
    dashboard = prepare_dashboard(storage_url=url, port=0)
    assert dashboard.host == "127.0.0.1" and dashboard.port > 0 and dashboard.studies == ("live",)
    assert dashboard.url == f"http://127.0.0.1:{dashboard.port}/dashboard"
    server = threading.Thread(target=dashboard.serve_forever, daemon=True)
    server.start()
    n_new, errors = 25, []

    def write_trials() -> None:
        # The access pattern of 'tuner run': its own storage object, one trial written at a time.
        try:
            study = optuna.load_study(study_name="live", storage=open_storage(url, heartbeat_interval=None))
            for index in range(n_new):
                trial = study.ask()
                for step in range(1, 4):
                    trial.report(1.0 / (index + step), step)
                study.tell(trial, trial.suggest_float("x", 0, 1))
                time.sleep(0.1)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    writer = threading.Thread(target=write_trials)
    writer.start()
    api = dashboard.url.replace("/dashboard", "/api/studies/1")
    seen = []
    try:
        while writer.is_alive():
            seen.append(len(get_json(api)["trials"]))
        writer.join()
        # optuna-dashboard caches a study's trials for 2 seconds; the last writes show up after that.
        deadline = time.monotonic() + 15
        while len(get_json(api)["trials"]) < 2 + n_new and time.monotonic() < deadline:
            time.sleep(0.2)
        final = get_json(api)
    finally:
        dashboard.close()
        server.join(timeout=10)
    assert not errors
    assert len(final["trials"]) == 2 + n_new
    # The dashboard answered throughout the writes and saw them arrive, never going backwards.
    assert seen == sorted(seen) and len(set(seen)) >= 2
    assert not server.is_alive()


def test_the_dashboard_shows_tuner_s_validation_accuracy_curves(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="curves", storage=url)
    for number in range(3):
        log = [
            EpochRecord(epoch=e, time=1_700_000_000.0 + 10 * e + number, val_loss=1.0 / e, val_accuracy=0.9 + 0.01 * e).to_dict()
            for e in (1, 2, 3)
        ]
        study.add_trial(
            optuna.trial.create_trial(value=1.0 / 3, intermediate_values={1: 1.0, 2: 0.5, 3: 1.0 / 3}, user_attrs={EPOCH_LOG_ATTR: log})
        )
    dashboard = prepare_dashboard(storage_url=url, port=0)
    server = threading.Thread(target=dashboard.serve_forever, daemon=True)
    server.start()
    api = dashboard.url.replace("/dashboard", "/api/studies/1")
    try:
        deadline = time.monotonic() + 20
        graphs: list[dict] = []
        while len(graphs) < 2 and time.monotonic() < deadline:
            graphs = get_json(api).get("plotly_graph_objects", [])
            time.sleep(0.3)
    finally:
        dashboard.close()
        server.join(timeout=10)
    by_id = {graph["id"]: json.loads(graph["graph_object"]) for graph in graphs}
    assert set(by_id) == {CURVES_PER_EPOCH_ID, CURVES_OVER_TIME_ID}
    per_epoch = by_id[CURVES_PER_EPOCH_ID]
    assert len(per_epoch["data"]) == 3 and per_epoch["data"][0]["y"] == pytest.approx([0.91, 0.92, 0.93])
    assert by_id[CURVES_OVER_TIME_ID]["data"][0]["y"][-1] == pytest.approx(0.93)
    # Nothing new: nothing is written again.
    assert CurvePublisher(open_storage(url, heartbeat_interval=None)).publish_once() == 1
    publisher = CurvePublisher(open_storage(url, heartbeat_interval=None))
    publisher.publish_once()
    assert publisher.publish_once() == 0


def test_cli_dashboard_refuses_a_missing_database(cli, tmp_path):
    database = tmp_path / "absent.db"
    result = invoke(cli, "dashboard", "--storage", f"sqlite:///{database}", "--port", "0")
    assert result.exit_code == StudyNotFoundError.exit_code
    assert result.stderr.startswith("Error: no study database at") and not database.exists()


@pytest.mark.slow
def test_dashboard_does_not_import_tensorflow(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(url, complete=1)
    code = (
        "import sys\n"
        "from tuner.cli import main\n"
        "from tuner.dashboard import prepare_dashboard\n"
        f"prepare_dashboard(storage_url={url!r}, port=0).close()\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
