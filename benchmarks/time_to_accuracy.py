"""The headline: how soon a search first trains an epoch at the target validation accuracy, and how
accurate it gets within a budget, for tuner and its rivals on the same data, split and space.

Arms, one after the other, each a fresh process in a fresh working directory, on one clock: a run's
time starts when its process is launched (so TensorFlow's import and the data loading count for
every arm) and every figure is read off the epochs the arm itself trained, each stamped as it ended.

  tuner       ``tuner run --timeout SECONDS --data DATA`` exactly as a user runs it (``--seed N``
              added for seeds other than the default 0); epochs come from the study's ``epoch_log``
  optuna      a plain Optuna loop written like Optuna's Keras pruning example: one process, TPE and
              the median pruner on validation accuracy, training each trial with tuner's own model
              builder (the same space, schedule included)
  kerastuner  KerasTuner's Hyperband (max_epochs = the space's epoch budget, factor 3, the early
              stopping of TensorFlow's KerasTuner tutorial) over the same space; the cosine schedule
              follows the epoch index, since Hyperband resumes models at later epochs

Two modes:

  --mode first    stop each run at its first epoch >= --target (or at --cap seconds); several seeds
                  per arm; the figure is each arm's median time
  --mode budget   run each arm for --budget seconds; the figure is its best epoch's validation
                  accuracy; with --export, ``tuner export-best`` then trains the tuner arm's best
                  trial and scores it once on the test set

Each run also records the trial of its best epoch and that trial's parameters (``best_trial``,
``best_params``), so a result can be explained after the run's working directory is gone.

    python -m benchmarks.time_to_accuracy --mode first --seeds 0,1,2 --cap 600
    python -m benchmarks.time_to_accuracy --mode budget --budget 900 --export
    python -m benchmarks.time_to_accuracy --mode budget --budget 300 --data mnist1d.csv --target 0.7
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import emit, median, parser

ARMS = ("tuner", "optuna", "kerastuner")
RIVALS = ("optuna", "kerastuner")
POLL_S = 1.0


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--mode", choices=("first", "budget"), default="first")
    p.add_argument("--target", type=float, default=0.98, help="validation accuracy to reach (default %(default)s)")
    p.add_argument("--cap", type=float, default=600.0, help="--mode first: seconds after which a run that has not reached the target stops")
    p.add_argument("--budget", type=float, default=900.0, help="--mode budget: seconds per run")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; each arm runs once per seed (default %(default)s)")
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms, run in this order (default %(default)s)")
    p.add_argument("--export", action="store_true", help="--mode budget: run tuner export-best after the tuner arm")
    p.add_argument("--child", help=_hidden())
    p.add_argument("--events", type=Path, help=_hidden())
    p.add_argument("--seed", type=int, default=0, help=_hidden())
    args = p.parse_args()
    if args.child:
        run_child(args)
        return
    if args.quick:
        args.cap, args.budget = min(args.cap, 60.0), min(args.budget, 60.0)
    arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown:
        p.error(f"unknown arm(s) {', '.join(unknown)} (expected {', '.join(ARMS)})")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    limit = args.cap if args.mode == "first" else args.budget
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    for seed in seeds:  # seeds outermost: a drift in the machine's speed touches every arm alike
        for arm in arms:
            with tempfile.TemporaryDirectory(prefix=f"tta-{arm}-") as tmp:
                run = run_arm(arm, args, seed=seed, limit=limit, workdir=Path(tmp))
                if arm == "tuner" and args.export and args.mode == "budget":
                    run["export"] = export_best(args, Path(tmp))
            runs[arm].append(run)
            scores = {k: run[k] for k in ("seconds_to_target", "best_accuracy", "epochs", "trials")}
            print(f"[time_to_accuracy] {arm} seed {seed}: {json.dumps(scores)}", file=sys.stderr, flush=True)
    # Each run keeps its own file: the figures are medians over runs made on different days.
    stamp = time.strftime("%Y%m%d-%H%M%S")
    emit(f"time_to_accuracy_{args.mode}_{stamp}", judge(runs, mode=args.mode, target=args.target, limit=limit, data=args.data), args.out)


def judge(runs: dict[str, list[dict[str, Any]]], *, mode: str, target: float, limit: float, data: str) -> dict[str, Any]:
    """Each arm's median over its runs, and tuner against the better rival."""
    arms: dict[str, dict[str, Any]] = {}
    for arm, results in runs.items():
        times = [r["seconds_to_target"] if r["seconds_to_target"] is not None else math.inf for r in results]
        arms[arm] = {
            "median_seconds_to_target": _finite(median(times)),
            "median_best_accuracy": round(median([r["best_accuracy"] for r in results]), 4),
            "runs": results,
        }
    summary: dict[str, Any] = {"mode": mode, "target": target, "limit_s": limit, "data": data, "arms": arms}
    rivals = [arms[name] for name in RIVALS if name in arms]
    if "tuner" in arms and rivals:
        tuner = arms["tuner"]
        rival_times = [r["median_seconds_to_target"] for r in rivals if r["median_seconds_to_target"] is not None]
        fastest = min(rival_times) if rival_times else None
        summary["fastest_rival_median_s"] = fastest
        if tuner["median_seconds_to_target"] is not None:
            # A rival that never got there is at least as slow as the limit.
            summary["tuner_over_fastest_rival"] = round(tuner["median_seconds_to_target"] / (fastest or limit), 3)
        best_rival = max(r["median_best_accuracy"] for r in rivals)
        summary["tuner_minus_best_rival_points"] = round(100 * (tuner["median_best_accuracy"] - best_rival), 2)
    return summary


def summarize(epochs: list[dict[str, Any]], *, launched: float, limit: float, target: float) -> dict[str, Any]:
    """Score one run from its epochs ({time, val_accuracy, trial}): the first at the target, the best within the limit."""
    within = sorted((e for e in epochs if e["time"] - launched <= limit), key=lambda e: e["time"])
    reached = next((e["time"] - launched for e in within if e["val_accuracy"] >= target), None)
    best, best_trial, timeline = 0.0, None, []
    for event in within:
        if event["val_accuracy"] > best:
            best, best_trial = event["val_accuracy"], event["trial"]
            timeline.append([round(event["time"] - launched, 1), round(best, 4)])
    return {
        "seconds_to_target": None if reached is None else round(reached, 1),
        "best_accuracy": round(best, 4),
        "epochs": len(within),
        "trials": len({e["trial"] for e in within}),
        "best_trial": best_trial,
        "best_so_far": timeline,
    }


def run_arm(arm: str, args, *, seed: int, limit: float, workdir: Path) -> dict[str, Any]:
    """Launch one run, poll its epochs, stop it at the target (mode first) or the limit; score it."""
    if arm == "tuner":
        command = [sys.executable, "-m", "tuner", "run", "--timeout", f"{limit:g}", "--data", str(Path(args.data).resolve())]
        command += ["--seed", str(seed)] if seed else []
        read: Callable[[], list[dict[str, Any]]] = functools.partial(tuner_epochs, workdir / "tuner.db")
        params_of: Callable[[Any], dict[str, Any] | None] = functools.partial(tuner_params, workdir / "tuner.db")
    else:
        events = workdir / "events.jsonl"
        command = [sys.executable, "-m", "benchmarks.time_to_accuracy", "--child", arm, "--events", str(events)]
        command += ["--data", str(Path(args.data).resolve()), "--seed", str(seed), "--threads", str(args.threads)]
        read = functools.partial(rival_epochs, events)
        params_of = functools.partial(rival_params, events)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNER_")}
    env.update(TUNER_ENV_FILE="", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    print(f"[time_to_accuracy] {arm} seed {seed}: up to {limit:.0f} s", file=sys.stderr, flush=True)
    launched = time.time()
    with open(workdir / "arm.log", "wb") as log:
        child = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while child.poll() is None and time.time() - launched < limit:
                time.sleep(POLL_S)
                if args.mode == "first" and any(e["val_accuracy"] >= args.target for e in read()):
                    break
        finally:
            _stop(child)
    result = summarize(read(), launched=launched, limit=limit, target=args.target)
    result["best_params"] = params_of(result["best_trial"])  # what won, so a run can be explained afterwards
    result.update(seed=seed, exit_code=child.returncode, command=" ".join(command[1:]) if arm == "tuner" else arm)
    if not result["epochs"]:
        result["log_tail"] = (workdir / "arm.log").read_text(errors="replace")[-2000:]
    return result


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is not None:
        return
    os.killpg(child.pid, signal.SIGTERM)  # tuner records its running trials as failed
    try:
        child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def tuner_epochs(database: Path) -> list[dict[str, Any]]:
    """Every epoch the study's trials logged so far (read-only: the run is still writing)."""
    from tuner.records import EPOCH_LOG_ATTR, EpochRecord

    if not database.exists():
        return []
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as connection:
            rows = connection.execute(
                # A WAITING trial is the retry of an interrupted one, holding a copy of its attributes: not epochs it trained.
                "SELECT t.number, a.value_json FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id"
                " WHERE a.key = ? AND t.state != 'WAITING'",
                (EPOCH_LOG_ATTR,),
            ).fetchall()
    except sqlite3.OperationalError:  # the study's tables are not there yet
        return []
    epochs = []
    for number, value in rows:
        for entry in json.loads(value):
            record = EpochRecord.from_dict(entry)
            epochs.append({"trial": number, "time": record.time, "val_accuracy": record.val_accuracy})
    return epochs


def tuner_params(database: Path, number: int | None) -> dict[str, Any] | None:
    """The parameters of the study's trial ``number`` (read after the run has stopped)."""
    from tuner.storage import load_study

    if number is None or not database.exists():
        return None
    study = load_study(storage_url=f"sqlite:///{database}", study_name=None)
    return next((dict(t.params) for t in study.get_trials(deepcopy=False) if t.number == number), None)


def rival_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]  # a line cut by the stop is skipped


def rival_epochs(path: Path) -> list[dict[str, Any]]:
    return [event for event in rival_events(path) if "val_accuracy" in event]


def rival_params(path: Path, trial: Any) -> dict[str, Any] | None:
    """The parameters a rival logged as trial ``trial`` began."""
    return next((event["params"] for event in rival_events(path) if "params" in event and event["trial"] == trial), None)


def export_best(args, workdir: Path) -> dict[str, Any]:
    """``tuner export-best`` on the tuner arm's study, as a user runs it after the search."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNER_")}
    env.update(TUNER_ENV_FILE="", TF_CPP_MIN_LOG_LEVEL="3")
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "tuner", "export-best", "--data", str(Path(args.data).resolve()), "--out", "final"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = round(time.perf_counter() - started, 1)
    if completed.returncode:
        return {"exit_code": completed.returncode, "seconds": seconds, "error": completed.stderr[-2000:]}
    from tuner.exportmeta import ExportMetadata

    metadata = ExportMetadata.from_dir(workdir / "final")
    return {
        "seconds": seconds,
        "trial": metadata.trial_number,
        "params": metadata.params,
        "epochs": len(metadata.history),  # one record per epoch the final model trained
        "val_accuracy": metadata.trial.get("val_accuracy"),  # the trial's peak, which the export trains to
        "test_accuracy": None if metadata.test is None else metadata.test.accuracy,
    }


def _finite(value: float) -> float | None:
    return None if not math.isfinite(value) else round(value, 1)


def _hidden() -> str:
    import argparse

    return argparse.SUPPRESS


# ---- the rival arms, each run in its own process ----


class EpochLog:
    """Appends one JSON line per finished epoch; a path, not an open file, so KerasTuner can deep-copy it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def write(self, **event: Any) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"time": time.time(), **event}) + "\n")


def epoch_logger(log: EpochLog, trial_id):
    import keras

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            log.write(trial=trial_id(), epoch=epoch + 1, val_accuracy=float((logs or {}).get("val_accuracy", 0.0)))

    return EpochLogger()


def run_child(args) -> None:
    from benchmarks.common import start_tensorflow

    start_tensorflow(args.threads)
    import keras  # noqa: F401  (TensorFlow starts inside the clock, as in every arm)

    from tuner.data import load_tuning_data
    from tuner.studyfile import default_study_file, load_study_file

    spec = load_study_file(path=default_study_file())
    data = load_tuning_data(
        dataset=spec.dataset,
        data_path=args.data,
        validation_fraction=spec.validation_fraction,
        split_seed=spec.split_seed,
        options=spec.data_options,
    )
    log = EpochLog(args.events)
    if args.child == "optuna":
        run_optuna_loop(data, spec, args.seed, log)
    else:
        run_kerastuner(data, spec, args.seed, log, workdir=args.events.parent)


def run_optuna_loop(data, spec, seed: int, log: EpochLog) -> None:
    """Optuna's Keras pruning example, with tuner's model builder so that both train the same models."""
    import keras
    import optuna

    from tuner.model import build_model

    class PruningCallback(keras.callbacks.Callback):  # what optuna_integration.KerasPruningCallback does
        def __init__(self, trial, monitor):
            super().__init__()
            self.trial, self.monitor = trial, monitor

        def on_epoch_end(self, epoch, logs=None):
            self.trial.report(float(logs[self.monitor]), step=epoch)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"Trial was pruned at epoch {epoch}.")

    def objective(trial):
        keras.backend.clear_session()
        model, p = build_model(
            trial, spec.space, input_dim=data.input_dim, n_classes=data.n_classes, n_samples=len(data.x_train), training=spec.training
        )
        log.write(trial=trial.number, params=p)
        callbacks = [epoch_logger(log, lambda: trial.number), PruningCallback(trial, "val_accuracy")]
        model.fit(
            data.x_train,
            data.y_train,
            batch_size=p["batch_size"],
            epochs=p["epochs"],
            validation_data=(data.x_val, data.y_val),
            callbacks=callbacks,
            verbose=0,
        )
        return model.evaluate(data.x_val, data.y_val, verbose=0, return_dict=True)["accuracy"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=optuna.pruners.MedianPruner())
    study.optimize(objective, n_trials=100_000, catch=(Exception,))


def run_kerastuner(data, spec, seed: int, log: EpochLog, *, workdir: Path) -> None:
    """KerasTuner's Hyperband over the same space; the epoch budget is Hyperband's own resource."""
    import itertools

    import keras
    import keras_tuner as kt

    from tuner.studyfile import Choice, Fixed, FloatRange, IntRange

    space = spec.space
    max_epochs = spec.max_epochs

    def draw(hp, name):
        s = space[name]
        if isinstance(s, IntRange):
            return hp.Int(name, s.low, s.high, sampling="log" if s.log else "linear")
        if isinstance(s, FloatRange):
            return hp.Float(name, s.low, s.high, sampling="log" if s.log else "linear")
        if isinstance(s, Choice):
            return hp.Choice(name, list(s.choices))
        assert isinstance(s, Fixed)
        return hp.Fixed(name, s.value)

    class MLP(kt.HyperModel):
        def build(self, hp):
            n_layers, l2 = draw(hp, "n_layers"), draw(hp, "l2")
            regularizer = keras.regularizers.l2(l2) if l2 else None
            x = inputs = keras.Input(shape=(data.input_dim,))
            if n_layers:
                x = keras.layers.Dropout(draw(hp, "input_dropout"))(x)
            for _ in range(n_layers):
                x = keras.layers.Dense(draw(hp, "units"), activation="relu", kernel_regularizer=regularizer)(x)
                x = keras.layers.Dropout(draw(hp, "dropout"))(x)
            outputs = keras.layers.Dense(data.n_classes, activation="softmax", kernel_regularizer=regularizer)(x)
            model = keras.Model(inputs, outputs)
            name, lr, decay = draw(hp, "optimizer"), draw(hp, "learning_rate"), draw(hp, "weight_decay") or None
            optimizer = {
                "sgd": lambda: keras.optimizers.SGD(lr, weight_decay=decay),
                "sgd_momentum": lambda: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, weight_decay=decay),
                "rmsprop": lambda: keras.optimizers.RMSprop(lr, weight_decay=decay),
                "adam": lambda: keras.optimizers.Adam(lr, weight_decay=decay),
            }[name]()
            model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            return model

        def fit(self, hp, model, *fit_args, callbacks=(), **kwargs):
            peak, schedule = draw(hp, "learning_rate"), draw(hp, "schedule")
            callbacks = list(callbacks)
            if schedule == "cosine":
                callbacks.append(
                    keras.callbacks.LearningRateScheduler(lambda epoch: peak * 0.5 * (1 + math.cos(math.pi * epoch / max_epochs)))
                )
            return model.fit(*fit_args, batch_size=draw(hp, "batch_size"), callbacks=callbacks, **kwargs)

    current: dict[str, Any] = {"round": 0, "trial": None}

    class LoggedHyperband(kt.Hyperband):
        def on_trial_begin(self, trial):
            current["trial"] = f"{current['round']}/{trial.trial_id}"  # KerasTuner's ids restart each round
            log.write(trial=current["trial"], params=dict(trial.hyperparameters.values))
            super().on_trial_begin(trial)

    stop_early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=5)
    for round_ in itertools.count():  # Hyperband ran out of brackets: another round, as a user with time left would
        current["round"] = round_
        tuner = LoggedHyperband(
            MLP(),
            objective="val_accuracy",
            max_epochs=max_epochs,
            factor=3,
            seed=seed + round_,
            directory=str(workdir / "kerastuner"),
            project_name=f"round{round_}",
            overwrite=True,
        )
        logger = epoch_logger(log, lambda: current["trial"])
        tuner.search(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val), callbacks=[stop_early, logger], verbose=0)


if __name__ == "__main__":
    main()
