"""Item 4: epochs trained with the default study's pruning versus the same trials without it.

First a search runs as ``tuner run`` does (default study: TPE, its pruner, early stopping, the
tutorial baselines). Then exactly the same configurations, with the same seeds, run again with the
pruner switched off (early stopping stays: it is training, not search). Reported: epochs trained by
each, the epochs the trials asked for (no pruning, no early stopping), and the best trial of each.
Target: at least 50% fewer epochs, best validation accuracy within 0.1 points.

    python -m benchmarks.pruning [--quick] [--trials N] [--train-limit N] [--pruner KIND]
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.common import Clock, emit, parser, start_tensorflow, tuning_data, versions
from tuner.records import EPOCHS_TRAINED_ATTR, VAL_ACCURACY_ATTR


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=None, help="trials per arm (default 12 quick, 50 full)")
    p.add_argument("--train-limit", type=int, default=None, help="training samples used (default 3000 quick, all full)")
    p.add_argument("--pruner", default=None, help="pruner kind instead of the default study's (median, hyperband, successive_halving)")
    p.add_argument(
        "--pruner-patience", type=int, default=None, help="[pruner] patience: prune only a trial whose best loss stalled this many epochs"
    )
    args = p.parse_args()
    start_tensorflow(args.threads)
    trials = args.trials or (12 if args.quick else 50)
    data = tuning_data(args.data, train_limit=args.train_limit or (3000 if args.quick else None))

    from tuner.search import baseline_params
    from tuner.studyfile import default_study_file, load_study_file

    spec = load_study_file(path=default_study_file())
    if args.pruner or args.pruner_patience is not None:
        pruner = replace(spec.pruner, kind=args.pruner or spec.pruner.kind)
        if args.pruner_patience is not None:
            pruner = replace(pruner, patience=args.pruner_patience)
        spec = replace(spec, pruner=pruner)
    with tempfile.TemporaryDirectory() as tmp:
        pruned, seconds_pruned = _search(data, spec, f"sqlite:///{Path(tmp) / 'pruned.db'}", trials, enqueue=baseline_params(spec))
        unpruned_spec = replace(spec, pruner=replace(spec.pruner, kind="none", patience=0))
        configs = [t.params for t in pruned]
        unpruned, seconds_unpruned = _search(data, unpruned_spec, f"sqlite:///{Path(tmp) / 'unpruned.db'}", trials, enqueue=configs)

    epochs_pruned = sum(t.user_attrs.get(EPOCHS_TRAINED_ATTR, 0) for t in pruned)
    epochs_unpruned = sum(t.user_attrs.get(EPOCHS_TRAINED_ATTR, 0) for t in unpruned)
    asked = sum(int(t.params["epochs"]) for t in pruned)
    best_pruned, best_unpruned = _best(pruned), _best(unpruned)
    result: dict[str, Any] = {
        "n_train": len(data.x_train),
        "trials": trials,
        "pruner": vars(spec.pruner) | {},
        "pruned": {"epochs": epochs_pruned, "seconds": round(seconds_pruned, 1), "states": _states(pruned), **best_pruned},
        "unpruned": {"epochs": epochs_unpruned, "seconds": round(seconds_unpruned, 1), "states": _states(unpruned), **best_unpruned},
        "epochs_asked_for": asked,
        "epoch_saving_vs_unpruned": round(1 - epochs_pruned / epochs_unpruned, 4),
        "epoch_saving_vs_asked": round(1 - epochs_pruned / asked, 4),
        "best_accuracy_gap_points": round(100 * (best_unpruned["best_val_accuracy"] - best_pruned["best_val_accuracy"]), 3),
        "target": "epoch saving at least 0.5 with the best accuracy within 0.1 points",
        "versions": versions(),
    }
    emit("pruning", result, args.out)


def _search(data, spec, storage_url: str, trials: int, *, enqueue: list[dict[str, Any]]):
    import optuna

    from tuner.objective import Objective
    from tuner.search import make_pruner, make_sampler
    from tuner.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=open_storage(storage_url),
        sampler=make_sampler(spec.sampler),
        pruner=make_pruner(spec.pruner, max_epochs=spec.max_epochs),
        direction="minimize",
    )
    for params in enqueue:
        study.enqueue_trial(params)
    clock = Clock()
    study.optimize(Objective(data=data, spec=spec, seed=0), n_trials=trials, catch=(Exception,), gc_after_trial=True)
    return study.get_trials(deepcopy=False), clock.read()[0]


def _best(trials) -> dict[str, Any]:
    import optuna

    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value)
    return {
        "best_val_loss": round(best.value, 5),
        "best_val_accuracy": best.user_attrs.get(VAL_ACCURACY_ATTR),
        "best_trial": best.number,
        "highest_val_accuracy_any_trial": max((t.user_attrs.get(VAL_ACCURACY_ATTR) or 0.0) for t in trials),
    }


def _states(trials) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


if __name__ == "__main__":
    main()
