"""Item 5: resident memory of one worker over many short trials.

One ``run_study`` in this process, the default study's space with one epoch per trial on a small
training set, so the trials are short but build every kind of model the default space can. The
resident set size is read after every trial. Target: growth under 150 MB after the first 10 trials.

    python -m benchmarks.memory [--quick] [--trials N] [--train-limit N]
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from benchmarks.common import Clock, emit, parser, small_dataset, start_tensorflow, versions

SETTLE = 10  # trials before the baseline reading: TensorFlow's one-off allocations happen there


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=None, help="trials (default 50 quick, 200 full)")
    p.add_argument("--train-limit", type=int, default=None, help="training samples (default 2000 quick, 5000 full)")
    args = p.parse_args()
    start_tensorflow(args.threads)
    import optuna
    import psutil

    from tuner.config import resolve_run_config
    from tuner.runner import run_study
    from tuner.studyfile import Fixed

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    process = psutil.Process()
    limit = args.train_limit or (2000 if args.quick else 5000)
    n_trials = args.trials or (50 if args.quick else 200)
    readings: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_path = small_dataset(args.data, limit, Path(tmp))
        config = resolve_run_config(
            storage_url=f"sqlite:///{Path(tmp) / 'memory.db'}", data_path=data_path, n_trials=n_trials, baselines=False
        )
        config = replace(config, spec=replace(config.spec, space=MappingProxyType({**config.spec.space, "epochs": Fixed(1)})))
        rss_start = process.memory_info().rss / 2**20
        clock = Clock()
        run_study(config=config, on_trial_end=lambda ended: readings.append(process.memory_info().rss / 2**20))
        seconds = clock.read()[0]
    settled = readings[SETTLE - 1] if len(readings) >= SETTLE else readings[-1]
    result: dict[str, Any] = {
        "trials": len(readings),
        "n_train": limit,
        "seconds": round(seconds, 1),
        "rss_mb_before_first_trial": round(rss_start, 1),
        "rss_mb_after_trial_10": round(settled, 1),
        "rss_mb_last": round(readings[-1], 1),
        "rss_mb_max": round(max(readings), 1),
        "growth_mb_after_trial_10": round(max(readings[SETTLE - 1 :]) - settled, 1),
        "rss_mb_every_20_trials": [round(r, 1) for r in readings[::20]],
        "target": "growth under 150 MB after the first 10 trials",
        "versions": versions(),
    }
    emit("memory", result, args.out)


if __name__ == "__main__":
    main()
