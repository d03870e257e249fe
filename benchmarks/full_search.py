"""A whole default search as a user runs it: ``tuner run --trials N`` then ``tuner export-best``, timed.

    python -m benchmarks.full_search                    # 100 trials on full MNIST, then the export
    python -m benchmarks.full_search --trials 20 --data /tmp/mnist1d
    python -m benchmarks.full_search --trials 40 --study-file studies/mnist_cnn.toml --target 0.99

Both commands run in a fresh working directory with nothing but ``--trials`` and ``--data`` given, so
every other setting is the default study's (or ``--study-file``'s). Prints the wall and CPU time of each
(CPU: every process of the command, workers included), the trial counts, the best trial, with ``--target``
the seconds from launch to the first epoch at that validation accuracy, and the final model's test
accuracy from its model.json.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

from benchmarks.common import emit, parser
from tuner.records import VAL_ACCURACY_ATTR


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=100, help="trials of the search (default %(default)s)")
    p.add_argument("--study-file", type=Path, help="a study file for tuner run (default: the default study)")
    p.add_argument("--target", type=float, help="validation accuracy whose first epoch is timed from launch")
    args = p.parse_args()
    trials = 8 if args.quick else args.trials
    data = str(Path(args.data).resolve())
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNER_")}
    env.update(TUNER_ENV_FILE="", TF_CPP_MIN_LOG_LEVEL="3")
    study_file = ["--study-file", str(args.study_file.resolve())] if args.study_file else []
    with tempfile.TemporaryDirectory(prefix="full-search-") as tmp:
        launched = time.time()
        search = [sys.executable, "-m", "tuner", "run", "--trials", str(trials), "--data", data, *study_file]
        search_s, search_cpu_s = _timed(search, cwd=tmp, env=env)
        export_s, export_cpu_s = _timed([sys.executable, "-m", "tuner", "export-best", "--data", data], cwd=tmp, env=env)
        result = {
            "trials": trials,
            "data": data,
            "study_file": str(args.study_file) if args.study_file else None,
            "search_s": search_s,
            "export_s": export_s,
            "total_s": round(search_s + export_s, 1),
            "search_cpu_s": search_cpu_s,
            "export_cpu_s": export_cpu_s,
        }
        result.update(_study(Path(tmp) / "tuner.db", launched=launched, target=args.target))
        result["final"] = _model_json(next(Path(tmp, "artifacts").glob("*/model.json")))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    emit(f"full_search_{stamp}", result, args.out)


def _timed(command: list[str], *, cwd: str, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system of the command and every process it waited for)."""
    print(f"[full_search] {' '.join(command[1:])}", file=sys.stderr, flush=True)
    started, cpu_before = time.perf_counter(), _children_cpu()
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = round(time.perf_counter() - started, 1)
    cpu_seconds = round(_children_cpu() - cpu_before, 1)
    if completed.returncode:
        raise SystemExit(f"{' '.join(command[1:3])} failed with exit code {completed.returncode}:\n{completed.stderr[-3000:]}")
    print(completed.stdout[-3000:], file=sys.stderr, flush=True)
    return seconds, cpu_seconds


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _study(database: Path, *, launched: float, target: float | None) -> dict[str, Any]:
    from tuner.records import PORTFOLIO_ATTR, epoch_log

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{database}"
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for trial in trials:
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    best = study.best_trial
    accuracies = [(record.val_accuracy, trial.number) for trial in trials for record in epoch_log(trial)]
    return {
        "states": states,
        "epochs_trained": sum(len(epoch_log(t)) for t in trials),
        "best_trial": {
            "number": best.number,
            "portfolio": best.user_attrs.get(PORTFOLIO_ATTR),
            "val_loss": best.value,
            "val_accuracy": best.user_attrs.get(VAL_ACCURACY_ATTR),
            "params": best.params,
        },
        "best_epoch_val_accuracy": max(accuracies) if accuracies else None,
        "target": target,
        "seconds_to_target": _seconds_to_target(trials, launched=launched, target=target),
    }


def _seconds_to_target(trials: list[optuna.trial.FrozenTrial], *, launched: float, target: float | None) -> float | None:
    from tuner.records import epoch_log

    if target is None:
        return None
    reached = [record.time for trial in trials for record in epoch_log(trial) if record.val_accuracy >= target]
    return round(min(reached) - launched, 1) if reached else None


def _model_json(path: Path) -> dict[str, Any]:
    from tuner.exportmeta import ExportMetadata

    metadata = ExportMetadata.from_dir(path.parent)
    return {
        "trial": metadata.trial_number,
        "test_accuracy": None if metadata.test is None else metadata.test.accuracy,
        "test_loss": None if metadata.test is None else metadata.test.loss,
        "epochs": len(metadata.history),  # one record per epoch the final model trained
        "family": metadata.family,
        "params": metadata.params,
    }


if __name__ == "__main__":
    main()
