"""Soak: hundreds of short trials through ``tuner run --workers 2`` on a fresh PostgreSQL database.

Checks what a long run must keep true: every trial finished (none lost, none left RUNNING), trial
numbers contiguous, and the workers' memory flat. Each worker's resident memory (``/proc/PID/status``)
is sampled with the study's finished-trial count, so that growth is reported per 100 trials after a
warm-up. Prints one JSON document:

    python -m benchmarks.soak [--trials 300] [--workers 2] [--postgres postgresql+psycopg2://postgres@127.0.0.1:5432/postgres]
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
from typing import Any

from benchmarks.common import FreshStorage, code_version, machine

ROOT = Path(__file__).resolve().parent.parent
# About a second a trial on the committed MNIST cut: a softmax or one small hidden layer, one or two epochs.
STUDY = """
[study]
name = "soak"
baselines = false
[pruner]
kind = "median"
n_startup_trials = 5
n_warmup_steps = 0
[sampler]
kind = "tpe"
seed = 0
n_startup_trials = 10
[training]
patience = 0
[space]
n_layers = { low = 0, high = 1 }
units = { low = 8, high = 32, log = true }
dropout = { low = 0.0, high = 0.3 }
epochs = { low = 1, high = 2 }
batch_size = { choices = [64, 128] }
learning_rate = { low = 1e-3, high = 0.3, log = true }
optimizer = { choices = ["sgd", "adam"] }
l2 = { low = 1e-8, high = 1e-4, log = true }
"""
WARM_UP_SHARE = 0.1  # memory growth is measured after the first 10% of the trials (TensorFlow's caches fill)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="TensorFlow threads in all, split between workers")
    parser.add_argument("--data", default=str(ROOT / "tests" / "fixtures" / "mnist-small"))
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
        help="an admin URL; a fresh database is made and dropped",
    )
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tuner-soak-") as folder, FreshStorage("postgresql", args.postgres, Path(folder)) as url:
        study_file = Path(folder) / "soak.toml"
        study_file.write_text(STUDY)
        run = _run(url, study_file, args)
        samples = run.pop("samples")
        result = {
            "benchmark": "soak",
            "machine": machine(),
            "code": code_version(),
            "trials": args.trials,
            "workers": args.workers,
            **run,
            **_audit(url, args.trials),
        }
    result["memory"] = _memory(samples, args.trials)
    result["ok"] = result["lost"] == 0 and result["stuck_running"] == 0 and result["contiguous"] and result["exit_code"] == 0
    print(json.dumps(result, indent=2))


def _run(url: str, study_file: Path, args) -> dict:
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
        str(args.workers),
        "--threads",
        str(args.threads),
    ]
    command += ["--study-file", str(study_file), "--data", args.data, "--study", "soak"]
    env = {**os.environ, "TUNER_STORAGE": url, "TF_CPP_MIN_LOG_LEVEL": "3"}
    storage = optuna.storages.RDBStorage(url)
    samples: list[dict] = []
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while process.poll() is None:
        time.sleep(args.sample_seconds)
        workers = {pid: _rss_mb(pid) for pid in _children(process.pid)}
        samples.append(
            {
                "seconds": round(time.perf_counter() - started, 1),
                "finished": _finished(storage),
                "parent_mb": _rss_mb(process.pid),
                "workers_mb": workers,
            }
        )
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    return {
        "exit_code": process.returncode,
        "stderr_tail": stderr.strip().splitlines()[-3:],
        "wall_seconds": round(wall, 1),
        "samples": samples,
    }


def _audit(url: str, n_trials: int) -> dict:
    import optuna

    from tuner.results import Tally

    trials = optuna.load_study(study_name="soak", storage=url).get_trials(deepcopy=False)
    tally = Tally.of(trials)
    numbers = sorted(t.number for t in trials)
    states = {state: sum(1 for t in trials if t.state.name == state) for state in sorted({t.state.name for t in trials})}
    window = (
        max(t.datetime_complete for t in trials if t.datetime_complete) - min(t.datetime_start for t in trials if t.datetime_start)
    ).total_seconds()
    seconds = sorted((t.datetime_complete - t.datetime_start).total_seconds() for t in trials if t.datetime_complete and t.datetime_start)
    return {
        "finished": tally.finished,
        "lost": n_trials - tally.finished,
        "stuck_running": sum(1 for t in trials if t.state.name in ("RUNNING", "WAITING")),
        "retried": len(tally.retried),
        "states": states,
        "numbers": f"{numbers[0]}..{numbers[-1]}" if numbers else "",
        "contiguous": numbers == list(range(len(trials))),
        "trials_per_minute": round(60 * tally.finished / window, 1),
        "trial_window_seconds": round(window, 1),
        "median_trial_seconds": round(seconds[len(seconds) // 2], 2),
    }


def _memory(samples: list[dict], n_trials: int) -> dict:
    """Per worker: RSS after the warm-up, at the end, the peak, and the least-squares growth per 100 trials."""
    warm = [s for s in samples if s["finished"] >= WARM_UP_SHARE * n_trials and s["workers_mb"]]
    workers = sorted({pid for s in warm for pid in s["workers_mb"]})
    report: dict[str, Any] = {}
    for index, pid in enumerate(workers):
        points = [(s["finished"], s["workers_mb"][pid]) for s in warm if s["workers_mb"].get(pid)]
        if len(points) < 2:
            continue
        xs, ys = zip(*points, strict=True)
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        spread = sum((x - mean_x) ** 2 for x in xs) or 1.0
        slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
        report[f"worker_{index}"] = {
            "after_warm_up_mb": round(ys[0], 1),
            "end_mb": round(ys[-1], 1),
            "peak_mb": round(max(ys), 1),
            "growth_mb_per_100_trials": round(100 * slope, 1),
            "samples": len(points),
        }
    report["parent_mb"] = {"first": samples[0]["parent_mb"] if samples else None, "last": samples[-1]["parent_mb"] if samples else None}
    report["timeline"] = [
        {"finished": s["finished"], **{f"w{i}": s["workers_mb"].get(pid) for i, pid in enumerate(workers)}}
        for s in samples[:: max(1, len(samples) // 12)]
    ]
    return report


def _finished(storage) -> int:
    from tuner.results import Tally

    try:
        study_id = storage.get_study_id_from_name("soak")
    except KeyError:
        return 0
    return Tally.of(storage.get_all_trials(study_id, deepcopy=False)).finished


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"\nPPid:\t{pid}\n" in (entry / "status").read_text():
                found.append(int(entry.name))
        except OSError:
            pass  # it exited while we looked
    return sorted(found)


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


if __name__ == "__main__":
    main()
