"""The clients of benchmarks/db_ceiling.py, and the gRPC proxy it starts: each in a process of its own.

    python -m benchmarks.db_ceiling_client client    # reads its settings as one JSON line, says "ready",
                                                     # waits for "go", then works until the study is full
    python -m benchmarks.db_ceiling_client proxy     # Optuna's gRPC storage proxy; reads {"url", "port"}

A client is a tuner worker whose training is a short sleep: tuner's own worker loop, storage, study lock,
sampler and pruner, and a trial that reports, prune-checks and records what a real trial does.
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import benchmarks.common  # noqa: F401 (quiets TensorFlow's and Optuna's start-up notices, as in every benchmark)
from tuner.records import (
    BEST_EPOCH_ATTR,
    EPOCHS_TRAINED_ATTR,
    LATENCY_MS_ATTR,
    N_PARAMS_ATTR,
    TRAIN_SECONDS_ATTR,
    VAL_ACCURACY_ATTR,
    VAL_LOSS_ATTR,
)

STUDY = "db-ceiling"
LOCK_STATEMENTS = ("pg_advisory_lock", "pg_advisory_unlock", "GET_LOCK", "RELEASE_LOCK")  # their time is the lock's, not a query's
INPUT_PIXELS, CLASSES = 784, 10


def main() -> None:
    role = sys.argv[1] if len(sys.argv) == 2 else ""
    if role not in ("client", "proxy"):
        raise SystemExit(__doc__)
    spec = json.loads(sys.stdin.readline())
    if role == "client":
        run_client(spec)
    else:
        serve_proxy(spec)


# --- The gRPC proxy -------------------------------------------------------------------------------------------


def serve_proxy(spec: dict[str, Any]) -> None:
    import optuna

    from tuner.storage import open_storage

    # As Optuna advises for the proxy: its RDB storage with the in-process trial cache in front.
    storage = optuna.storages.get_storage(open_storage(spec["url"], heartbeat_interval=None, grace_period=None))
    optuna.storages.run_grpc_proxy_server(storage, host="127.0.0.1", port=spec["port"])


# --- A client -------------------------------------------------------------------------------------------------


class _Timings:
    """One client's measurements: a record per trial, every SQL statement's latency, connections opened."""

    def __init__(self) -> None:
        self.trials: list[dict[str, Any]] = []
        self.sql_ms: list[float] = []
        self.statements = 0
        self.connections_opened = 0
        self.current: dict[str, Any] | None = None
        self._requested = 0.0
        self._gc_started: float | None = None

    def discard_setup(self) -> None:
        """Forget what joining the study cost; the connections it opened stay open and stay counted."""
        self.trials, self.sql_ms, self.statements, self.current = [], [], 0, None

    def lock_requested(self) -> None:
        self._requested = time.perf_counter()

    def lock_acquired(self) -> None:
        now = time.perf_counter()
        self.current = {
            "requested": self._requested,
            "acquired": now,
            "wait_ms": ms(now - self._requested),
            "hold_ms": None,
            "report_ms": [],
            "prune_ms": [],
            "gc_ms": 0.0,
        }

    def lock_released(self) -> None:
        if self.current is not None and self.current["hold_ms"] is None:
            self.current["hold_ms"] = ms(time.perf_counter() - self.current["acquired"])

    def record(self) -> dict[str, Any]:
        """The timings of the trial between its lock and its end: the hooks below run only inside that span."""
        assert self.current is not None, "a trial hook ran outside a trial"
        return self.current

    def objective_ended(self) -> None:
        record = self.record()
        record["objective_end"] = time.perf_counter()
        record["gc_ms"] = 0.0

    def after_trial_started(self) -> None:
        now = time.perf_counter()
        record = self.record()
        record["tell_ms"] = ms(now - record["objective_end"]) - record["gc_ms"]  # Optuna's gc.collect() is not the storage's
        record["after_started"] = now

    def trial_finished(self, state: str) -> None:
        now = time.perf_counter()
        record = self.record()
        record.update(after_ms=ms(now - record.pop("after_started")), wall_ms=ms(now - record.pop("requested")), state=state)
        for key in ("acquired", "objective_end"):
            record.pop(key)
        self.trials.append(record)
        self.current = None

    def on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None and self.current is not None:
            self.current["gc_ms"] += ms(time.perf_counter() - self._gc_started)

    def result(self, cpu_seconds: float) -> dict[str, Any]:
        return {
            "trials": self.trials,
            "sql_ms": [round(v, 3) for v in self.sql_ms],
            "statements": self.statements,
            "connections_opened": self.connections_opened,
            "cpu_seconds": round(cpu_seconds, 3),
        }


def ms(seconds: float) -> float:
    return round(1000 * seconds, 3)


def _timed_lock(storage, timings: _Timings):
    from tuner.coordination import StudyLock

    class TimedStudyLock(StudyLock):
        """tuner's study lock, timing how long each acquisition waited and how long it was held."""

        def acquire(self) -> None:
            if self._held is None:
                timings.lock_requested()
                super().acquire()
                timings.lock_acquired()

        def release(self) -> None:
            held = self._held is not None
            super().release()
            if held:
                timings.lock_released()

    return TimedStudyLock(storage, STUDY)


def _instrument(engine, timings: _Timings) -> None:
    """Time every SQL statement this process sends (the lock's own statements excepted) and count new connections."""
    from sqlalchemy import event

    def before(connection, cursor, statement, parameters, context, executemany) -> None:
        connection.info.setdefault("benchmark_started", []).append(time.perf_counter())

    def after(connection, cursor, statement, parameters, context, executemany) -> None:
        started = connection.info["benchmark_started"].pop()
        if not any(name in statement for name in LOCK_STATEMENTS):
            timings.sql_ms.append(1000 * (time.perf_counter() - started))
            timings.statements += 1

    def connected(dbapi_connection, record) -> None:
        timings.connections_opened += 1

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "connect", connected)


class SleepingObjective:
    """A trial without training: the default space's parameters, then per epoch a sleep, a report and a
    prune check, and the user attributes tuner's Objective records (n_params; train_seconds,
    epochs_trained, best_epoch, val_accuracy and val_loss, pruned or not; latency_ms when complete)."""

    def __init__(self, *, space, epoch_seconds: float, timings: _Timings) -> None:
        self.space = space
        self.epoch_seconds = epoch_seconds
        self.timings = timings

    def __call__(self, trial) -> float:
        record = self.timings.record()
        record["sleep_ms"] = 0.0
        try:
            return self._train(trial, record)
        finally:
            self.timings.objective_ended()

    def _train(self, trial, record: dict[str, Any]) -> float:
        import optuna

        from tuner.model import suggest_hyperparameters

        started = time.perf_counter()
        params = suggest_hyperparameters(trial, self.space)
        record["suggest_ms"] = ms(time.perf_counter() - started)
        attrs = time.perf_counter()
        trial.set_user_attr(N_PARAMS_ATTR, mlp_parameters(params))
        attrs_seconds = time.perf_counter() - attrs
        best_loss, best_epoch, epochs = math.inf, 0, 0
        try:
            for epoch, loss in enumerate(validation_curve(trial.number, params["epochs"]), start=1):
                time.sleep(self.epoch_seconds)
                record["sleep_ms"] += ms(self.epoch_seconds)
                epochs = epoch
                if loss < best_loss:
                    best_loss, best_epoch = loss, epoch
                reported = time.perf_counter()
                trial.report(loss, step=epoch)
                checked = time.perf_counter()
                prune = trial.should_prune()
                record["report_ms"].append(ms(checked - reported))
                record["prune_ms"].append(ms(time.perf_counter() - checked))
                if prune:
                    raise optuna.TrialPruned(f"pruned after epoch {epoch}")
        finally:
            attrs = time.perf_counter()
            trial.set_user_attr(TRAIN_SECONDS_ATTR, round(record["sleep_ms"] / 1000, 3))
            trial.set_user_attr(EPOCHS_TRAINED_ATTR, epochs)
            trial.set_user_attr(BEST_EPOCH_ATTR, best_epoch)
            trial.set_user_attr(VAL_ACCURACY_ATTR, round(1.0 - best_loss / 3, 4))
            trial.set_user_attr(VAL_LOSS_ATTR, best_loss)
            attrs_seconds += time.perf_counter() - attrs
            record["attrs_ms"] = ms(attrs_seconds)
        trial.set_user_attr(LATENCY_MS_ATTR, 0.001)
        return best_loss


def mlp_parameters(params: dict[str, Any]) -> int:
    """Weights and biases of the MLP these parameters describe, on MNIST's 784 pixels and 10 classes."""
    widths = [INPUT_PIXELS] + [params["units"]] * params["n_layers"] + [CLASSES]
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def validation_curve(seed: int, epochs: int) -> list[float]:
    """A falling validation loss per epoch, its floor and speed drawn per trial, so that the pruner
    has better and worse trials to tell apart."""
    rng = np.random.default_rng(seed)
    floor, scale, rate = 0.06 + 0.3 * rng.random(), 0.5 + 1.5 * rng.random(), 0.2 + 0.4 * rng.random()
    return [float(floor + scale * math.exp(-rate * epoch) + 0.01 * rng.standard_normal()) for epoch in range(1, epochs + 1)]


def run_client(spec: dict[str, Any]) -> None:
    import optuna

    from tuner.config import resolve_run_config
    from tuner.convergence import estimate_convergence
    from tuner.results import Tally, best_outcome
    from tuner.runner import _work
    from tuner.search import TrialSeededSampler, make_pruner
    from tuner.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = resolve_run_config(
        storage_url=spec["url"], study_name=STUDY, n_trials=spec["trials"], heartbeat_interval=spec["heartbeat"], baselines=False
    )
    timings = _Timings()
    study_storage: optuna.storages.BaseStorage
    if spec["grpc"]:
        # The lock needs a session of its own on the database; everything else goes through the proxy.
        lock_storage = open_storage(spec["url"], heartbeat_interval=None, grace_period=None)
        study_storage = optuna.storages.GrpcStorageProxy(host=spec["grpc"]["host"], port=spec["grpc"]["port"])
        study_storage.wait_server_ready(timeout=60)
    else:
        lock_storage = study_storage = open_storage(
            spec["url"], heartbeat_interval=config.heartbeat_interval, grace_period=config.grace_period
        )
    _instrument(lock_storage.engine, timings)
    lock = _timed_lock(lock_storage, timings)
    spec_ = config.spec
    with lock:  # as prepare_study: the first client creates the study, the others join it
        study = optuna.create_study(
            study_name=STUDY,
            storage=study_storage,
            sampler=TrialSeededSampler(spec_.sampler),
            pruner=make_pruner(spec_.pruner, max_epochs=spec_.max_epochs),
            direction="minimize",
            load_if_exists=True,
        )
    timings.discard_setup()
    gc.callbacks.append(timings.on_gc)

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        # What run_study does after every trial of `tuner run`: the progress line's count and best trial,
        # then the convergence estimate.
        timings.after_trial_started()
        Tally.of(study.get_trials(deepcopy=False))
        best_outcome(study)
        estimate_convergence(study, window=spec_.convergence_window, tolerance=spec_.convergence_tolerance)
        timings.trial_finished(trial.state.name)

    objective = SleepingObjective(space=spec_.space, epoch_seconds=spec["epoch_seconds"], timings=timings)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("the coordinator went away before the start")
    cpu = time.process_time()
    _work(study, objective, lock, config, after_trial, stop=lambda: False)
    cpu = time.process_time() - cpu
    gc.callbacks.remove(timings.on_gc)
    Path(spec["result"]).write_text(json.dumps(timings.result(cpu)))


if __name__ == "__main__":
    main()
