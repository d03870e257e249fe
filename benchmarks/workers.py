"""Trials per minute for 1 and 2 local workers (``tuner run --workers K``) on SQLite and PostgreSQL.

Short trials (softmax regression, one epoch on the committed MNIST cut), so that the figures show what
the storage and the coordination cost, not training. Each arm is the real CLI in a fresh database;
the same CPU threads are split between the workers. Prints one JSON document:

    python -m benchmarks.workers [--trials 16] [--postgres postgresql+psycopg2://postgres@127.0.0.1/postgres]

``trials_per_minute`` counts from the first trial's start to the last trial's end (the steady state);
``trials_per_minute_with_startup`` counts the whole command, TensorFlow's import in each worker included.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import FreshStorage, code_version, machine
from tuner.records import TRAIN_SECONDS_ATTR

ROOT = Path(__file__).resolve().parent.parent
STUDY = """
[study]
name = "bench"
baselines = false
[pruner]
kind = "none"
[sampler]
kind = "random"
[training]
patience = 0
[space]
n_layers = 0
epochs = 1
batch_size = 128
learning_rate = { low = 1e-3, high = 0.3, log = true }
optimizer = { choices = ["sgd", "adam"] }
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16, help="trials per arm (default %(default)s)")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (default %(default)s)")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="TensorFlow threads in all, split between workers (default: every core)"
    )
    parser.add_argument(
        "--data", default=str(ROOT / "tests" / "fixtures" / "mnist-small"), help="MNIST IDX directory (default: the test fixture)"
    )
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
        help="an admin URL; a fresh database is made per arm",
    )
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()

    arms = []
    with tempfile.TemporaryDirectory(prefix="tuner-bench-") as folder:
        study_file = Path(folder) / "bench.toml"
        study_file.write_text(STUDY)
        for backend in args.backends.split(","):
            for workers in (int(k) for k in args.workers.split(",")):
                with FreshStorage(backend, args.postgres, Path(folder)) as url:
                    arms.append({"backend": backend, "workers": workers, **_measure(url, workers, args, study_file)})
    result = {"benchmark": "workers", "machine": machine(), "code": code_version(), "trials": args.trials, "threads": args.threads}
    print(json.dumps(result | {"arms": arms}, indent=2))


def _measure(url: str, workers: int, args, study_file: Path) -> dict:
    import optuna

    command = [
        sys.executable,
        "-m",
        "tuner",
        "run",
        "-q",
        "--trials",
        str(args.trials),
        "--workers",
        str(workers),
        "--threads",
        str(args.threads),
    ]
    command += ["--study-file", str(study_file), "--data", args.data, "--study", "bench"]
    env = {**os.environ, "TUNER_STORAGE": url, "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{command} failed ({result.returncode}): {result.stderr[-2000:]}")
    trials = optuna.load_study(study_name="bench", storage=url).get_trials(deepcopy=False)
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    window = (max(ends) - min(starts)).total_seconds()
    train = sorted(t.user_attrs.get(TRAIN_SECONDS_ATTR, 0.0) for t in trials)
    return {
        "finished": len(trials),
        "states": sorted({t.state.name for t in trials}),
        "trials_per_minute": round(60 * len(trials) / window, 2),
        "trials_per_minute_with_startup": round(60 * len(trials) / wall, 2),
        "trial_window_seconds": round(window, 2),
        "command_seconds": round(wall, 2),
        "median_train_seconds": round(train[len(train) // 2], 3),
    }


if __name__ == "__main__":
    main()
