"""Item 3, the headline: wall-clock seconds until a search first holds a trial with at least 98.0%
validation accuracy on full MNIST, and the best validation accuracy when its budget runs out.

Arms, one after the other in this run, each in a fresh process on the same split (10% validation,
split seed 0) and the same search space (the default study file's):

  tuner       ``tuner run`` with its defaults (the library call behind it: ``run_study``)
  optuna      a plain Optuna loop written like Optuna's Keras pruning example: TPE, median pruner on
              ``val_accuracy`` after every epoch, one process, ``model.fit`` with Keras' defaults
  kerastuner  KerasTuner's Hyperband (max_epochs = the space's epoch ceiling, factor 3) with the
              early stopping of TensorFlow's KerasTuner tutorial
  tuner@FILE  ``tuner run`` with another study file (to compare pruners or ranges)

A trial counts when it ends, with the accuracy the tool itself reports for it: tuner's
``val_accuracy`` user attribute (at the epoch of lowest validation loss), the Optuna loop's returned
accuracy (or its last reported one when pruned), KerasTuner's trial score (best epoch). The clock of
each arm starts once TensorFlow is imported and the data loaded; the arm is stopped at its budget.

    python -m benchmarks.time_to_accuracy [--quick] [--budget SECONDS] [--arms tuner,optuna,kerastuner]
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import emit, parser, start_tensorflow, tuning_data

ARMS = ("tuner", "optuna", "kerastuner")


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=None, help="seconds per arm (default 45 quick, 900 full)")
    p.add_argument("--target", type=float, default=0.98, help="validation accuracy to reach (default %(default)s)")
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms, run in this order (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed of every arm")
    p.add_argument("--child", help=argparse_hidden())
    p.add_argument("--events", type=Path, help=argparse_hidden())
    args = p.parse_args()
    if args.child:
        run_child(args)
        return
    budget = args.budget or (45.0 if args.quick else 900.0)
    arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    for arm in arms:
        if arm not in ARMS and not arm.startswith("tuner@"):
            p.error(f"unknown arm {arm!r} (expected {', '.join(ARMS)} or tuner@STUDY_FILE)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arm in arms:
            results[arm] = run_arm(arm, args, budget=budget, workdir=Path(tmp))
    finished = [r["seconds_to_target"] for name, r in results.items() if name != "tuner" and r["seconds_to_target"] is not None]
    tuner = results.get("tuner")
    summary: dict[str, Any] = {"budget_s": budget, "target": args.target, "arms": results}
    if tuner is not None:
        rivals = [r for name, r in results.items() if name in ("optuna", "kerastuner")]
        fastest = min(finished) if finished else None
        summary["fastest_rival_s"] = fastest
        summary["tuner_over_fastest_rival"] = (
            tuner["seconds_to_target"] / fastest if tuner["seconds_to_target"] is not None and fastest else None
        )
        summary["tuner_best_is_highest"] = all(tuner["best_accuracy"] >= r["best_accuracy"] for r in rivals) if rivals else None
    summary["targets"] = "tuner reaches the target in at most half the time of the faster rival, and ends with the highest accuracy"
    emit("time_to_accuracy", summary, args.out)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


def run_arm(arm: str, args, *, budget: float, workdir: Path) -> dict[str, Any]:
    """Run one arm in a fresh process; stop it when its budget is spent; read its trial events."""
    events = workdir / f"{arm.replace('/', '_').replace('@', '_')}.jsonl"
    command = [sys.executable, "-m", "benchmarks.time_to_accuracy", "--child", arm, "--events", str(events), "--data", args.data, "--seed", str(args.seed)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    print(f"[time_to_accuracy] {arm}: {budget:.0f} s", file=sys.stderr, flush=True)
    child = subprocess.Popen(command, cwd=Path(__file__).parent.parent, start_new_session=True)
    started = None
    try:
        while child.poll() is None:
            if started is None:
                started = _start_time(events)
            elif time.time() - started >= budget:
                break
            time.sleep(0.5)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    if started is None:
        raise RuntimeError(f"arm {arm} exited with {child.returncode} before it started")
    return summarize(_read_events(events), budget=budget, target=args.target, exit_code=child.returncode)


def _start_time(events: Path) -> float | None:
    for event in _read_events(events):
        if event.get("event") == "start":
            return float(event["time"])
    return None


def _read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]  # a line cut by the stop is skipped


def summarize(events: list[dict[str, Any]], *, budget: float, target: float, exit_code: int | None) -> dict[str, Any]:
    start = next(e["time"] for e in events if e.get("event") == "start")
    trials = [e for e in events if e.get("event") == "trial" and e["time"] - start <= budget]
    timeline, best = [], 0.0
    reached = None
    for event in trials:
        seconds = event["time"] - start
        accuracy = event.get("accuracy")
        if accuracy is not None and accuracy > best:
            best = accuracy
            timeline.append([round(seconds, 1), round(best, 4)])
        if reached is None and accuracy is not None and accuracy >= target:
            reached = seconds
    return {
        "seconds_to_target": round(reached, 1) if reached is not None else None,
        "best_accuracy": round(best, 4),
        "trials_finished": len(trials),
        "pruned": sum(1 for e in trials if e.get("state") == "PRUNED"),
        "best_so_far": timeline,
        "exit_code_after_stop": exit_code,
    }


# ---- the arms, each run in its own process ----


class EventLog:
    def __init__(self, path: Path) -> None:
        self.handle = path.open("a", buffering=1)

    def write(self, **event: Any) -> None:
        self.handle.write(json.dumps({"time": time.time(), **event}) + "\n")


def run_child(args) -> None:
    start_tensorflow(args.threads)
    import keras  # noqa: F401  (TensorFlow starts before the clock does, for every arm)

    data = tuning_data(args.data)
    log = EventLog(args.events)
    log.write(event="start", arm=args.child)
    if args.child == "tuner" or args.child.startswith("tuner@"):
        run_tuner(args, log, study_file=args.child.partition("@")[2] or None)
    elif args.child == "optuna":
        run_optuna_loop(data, args, log)
    elif args.child == "kerastuner":
        run_kerastuner(data, args, log)


def run_tuner(args, log: EventLog, *, study_file: str | None) -> None:
    from tuner.config import resolve_run_config
    from tuner.runner import run_study

    storage = f"sqlite:///{args.events.with_suffix('.db')}"
    config = resolve_run_config(study_file=study_file, storage_url=storage, data_path=args.data, n_trials=100_000, seed=args.seed)

    def on_trial_end(outcome, n_finished, best) -> None:
        log.write(event="trial", state=outcome.state, accuracy=outcome.val_accuracy, params=outcome.params)

    run_study(config, on_trial_end=on_trial_end)


def _default_space():
    from tuner.studyfile import default_study_file, load_study_file

    return load_study_file(default_study_file()).space


def run_optuna_loop(data, args, log: EventLog) -> None:
    """Optuna's Keras pruning example, adapted only to draw from the default study's space."""
    import keras
    import optuna

    from tuner.model import suggest_hyperparameters

    space = _default_space()
    optimizers = {
        "sgd": lambda lr: keras.optimizers.SGD(lr),
        "sgd_momentum": lambda lr: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True),
        "rmsprop": lambda lr: keras.optimizers.RMSprop(lr),
        "adam": lambda lr: keras.optimizers.Adam(lr),
    }

    class PruningCallback(keras.callbacks.Callback):  # what optuna_integration.KerasPruningCallback does
        def __init__(self, trial, monitor):
            super().__init__()
            self.trial, self.monitor = trial, monitor

        def on_epoch_end(self, epoch, logs=None):
            self.trial.report(float(logs[self.monitor]), step=epoch)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"Trial was pruned at epoch {epoch}.")

    def create_model(trial):
        p = suggest_hyperparameters(trial, space)
        model = keras.Sequential([keras.Input(shape=(data.input_dim,))])
        for _ in range(p["n_layers"]):
            model.add(keras.layers.Dense(p["units"], activation="relu", kernel_regularizer=keras.regularizers.l2(p["l2"])))
            model.add(keras.layers.Dropout(p["dropout"]))
        model.add(keras.layers.Dense(data.n_classes, activation="softmax", kernel_regularizer=keras.regularizers.l2(p["l2"])))
        model.compile(optimizer=optimizers[p["optimizer"]](p["learning_rate"]), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model, p

    def objective(trial):
        keras.backend.clear_session()
        model, p = create_model(trial)
        model.fit(
            data.x_train, data.y_train, batch_size=p["batch_size"], callbacks=[PruningCallback(trial, "val_accuracy")],
            epochs=p["epochs"], validation_data=(data.x_val, data.y_val), verbose=0,
        )
        score = model.evaluate(data.x_val, data.y_val, verbose=0)
        return score[1]

    def on_trial_end(study, trial) -> None:
        reported = list(trial.intermediate_values.values())
        accuracy = trial.value if trial.value is not None else (reported[-1] if reported else None)
        log.write(event="trial", state=trial.state.name, accuracy=accuracy, params=trial.params)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed), pruner=optuna.pruners.MedianPruner())
    study.optimize(objective, n_trials=100_000, callbacks=[on_trial_end])


def run_kerastuner(data, args, log: EventLog) -> None:
    """KerasTuner Hyperband over the same space; the epoch budget is Hyperband's own resource."""
    import keras
    import keras_tuner as kt

    from tuner.studyfile import Choice, FloatRange, IntRange

    space = _default_space()
    max_epochs = space["epochs"].high if isinstance(space["epochs"], IntRange) else 20

    def draw(hp, name):
        spec = space[name]
        if isinstance(spec, IntRange):
            return hp.Int(name, spec.low, spec.high, sampling="log" if spec.log else "linear")
        if isinstance(spec, FloatRange):
            return hp.Float(name, spec.low, spec.high, sampling="log" if spec.log else "linear")
        if isinstance(spec, Choice):
            return hp.Choice(name, list(spec.choices))
        return hp.Fixed(name, spec.value)

    class MLP(kt.HyperModel):
        def build(self, hp):
            n_layers = draw(hp, "n_layers")
            l2 = keras.regularizers.l2(draw(hp, "l2"))
            model = keras.Sequential([keras.Input(shape=(data.input_dim,))])
            for _ in range(n_layers):
                model.add(keras.layers.Dense(draw(hp, "units"), activation="relu", kernel_regularizer=l2))
                model.add(keras.layers.Dropout(draw(hp, "dropout")))
            model.add(keras.layers.Dense(data.n_classes, activation="softmax", kernel_regularizer=l2))
            name, lr = draw(hp, "optimizer"), draw(hp, "learning_rate")
            optimizer = {
                "sgd": lambda: keras.optimizers.SGD(lr),
                "sgd_momentum": lambda: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True),
                "rmsprop": lambda: keras.optimizers.RMSprop(lr),
                "adam": lambda: keras.optimizers.Adam(lr),
            }[name]()
            model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            return model

        def fit(self, hp, model, *fit_args, **kwargs):
            return model.fit(*fit_args, batch_size=draw(hp, "batch_size"), **kwargs)

    class LoggedHyperband(kt.Hyperband):
        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            log.write(event="trial", state=str(trial.status), accuracy=trial.score, params=dict(trial.hyperparameters.values))

    tuner = LoggedHyperband(
        MLP(), objective="val_accuracy", max_epochs=max_epochs, factor=3, seed=args.seed,
        directory=str(args.events.parent / "kerastuner"), project_name="mnist", overwrite=True,
    )
    stop_early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=5)
    tuner.search(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val), callbacks=[stop_early], verbose=0)
    # Hyperband ran out of brackets before the budget: start another round, as a user with time left would.
    for round_ in itertools.count(1):
        tuner = LoggedHyperband(
            MLP(), objective="val_accuracy", max_epochs=max_epochs, factor=3, seed=args.seed + round_,
            directory=str(args.events.parent / "kerastuner"), project_name=f"mnist{time.time_ns()}", overwrite=True,
        )
        tuner.search(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val), callbacks=[stop_early], verbose=0)


if __name__ == "__main__":
    main()
