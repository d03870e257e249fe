"""Regression: the SQLite study lock must never disturb SQLite's own locks.

It once flocked the database file itself; closing that descriptor dropped the POSIX locks of the
process's SQLite connections, another worker then deleted the WAL file under them, and the first
worker's later trials were silently lost (seen with two workers on one study).
"""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest

from tuner.coordination import StudyLock
from tuner.storage import open_storage

# A second Python process holds the other side of the lock.
pytestmark = pytest.mark.slow

OTHER_WORKER = """
import optuna, sys
study = optuna.load_study(study_name="s", storage=sys.argv[1])
study.enqueue_trial({"x": 1.0})
"""


def test_a_second_process_cannot_lose_the_first_ones_writes(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = open_storage(url, heartbeat_interval=None)
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"x": 0.0})
    for _ in range(3):
        with StudyLock(storage, "s"):
            pass
    # Another worker opens, writes and closes; as the last connection it would delete the WAL file.
    subprocess.run([sys.executable, "-c", OTHER_WORKER, url], check=True)
    study.enqueue_trial({"x": 2.0})
    fresh = optuna.load_study(study_name="s", storage=url)
    assert [t.system_attrs["fixed_params"]["x"] for t in fresh.get_trials()] == [0.0, 1.0, 2.0]
    assert (tmp_path / "study.db.lock").exists()
