"""How many workers one database carries: K worker-like clients on one study, trials per second and latencies.

Each client is a separate process doing what a tuner worker does per trial, with the training replaced
by a short sleep, so that the database and Optuna's bookkeeping are the only load.

Each client runs tuner's own worker loop (``tuner.runner._work``: the study lock, the stale-trial sweep,
the count, Optuna's ask, the trial, tell, and the reads `tuner run` makes after every trial) on a storage
opened by ``tuner.storage.open_storage`` with heartbeats, with the default study file's sampler and
pruner built as ``tuner run`` builds them. Its trial draws the default space's parameters, then for each
epoch sleeps, reports a validation loss and asks the pruner, and records the user attributes a real trial
records. Per backend and K: the trials per second the storage sustains, lock wait and hold, the latency
of each SQL statement and of report / prune check / tell, the connections open on the server, where the
throughput saturates, and an audit: exactly N finished trials, numbered 0..N-1, none left RUNNING.

    python -m benchmarks.db_ceiling --quick      # K = 1, 4, 8 on PostgreSQL and SQLite, 24 trials each (under 2 minutes)
    python -m benchmarks.db_ceiling              # K = 1, 2, 4, 8, 16, 32 on PostgreSQL, SQLite and Optuna's gRPC proxy

Every arm runs in a fresh database (a new PostgreSQL database, dropped afterwards, or a new SQLite file).
The gRPC arm puts ``optuna.storages.run_grpc_proxy_server`` in front of PostgreSQL: the clients talk to
Optuna through it and share its connections; the study lock still takes one connection per client, and
the proxy has no heartbeats (Optuna 5's ``GrpcStorageProxy`` does not implement them), so that arm runs
without them.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import FreshStorage, emit, parser

STUDY = "db-ceiling"
FULL_CLIENTS, QUICK_CLIENTS = "1,2,4,8,16,32", "1,4,8"
LOCK_STATEMENTS = ("pg_advisory_lock", "pg_advisory_unlock", "GET_LOCK", "RELEASE_LOCK")  # their time is the lock's, not a query's
INPUT_PIXELS, CLASSES = 784, 10


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--clients", default=None, help=f"client counts K (default {FULL_CLIENTS}; quick {QUICK_CLIENTS})")
    p.add_argument("--trials", type=int, default=None, help="finished trials per arm (default 200; quick 24)")
    p.add_argument("--backends", default=None, help="postgresql, sqlite, grpc (default all three; quick postgresql,sqlite)")
    p.add_argument("--epoch-seconds", type=float, default=0.005, help="the sleep that stands in for one epoch of training (default %(default)s)")
    p.add_argument("--heartbeat", type=int, default=1, help="heartbeat interval of the clients, seconds (default %(default)s: at least one per trial)")
    p.add_argument("--trial-seconds", type=float, default=60.0, help="a real trial's length, for the extrapolation (default %(default)s)")
    p.add_argument("--budget", type=float, default=0.05, help="share of a real trial that coordination may cost (default %(default)s)")
    p.add_argument("--postgres", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", help="an admin URL; a fresh database is made and dropped per arm")
    p.add_argument("--role", choices=("coordinator", "client", "proxy"), default="coordinator", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "client":
        run_client(json.loads(sys.stdin.readline()))
        return
    if args.role == "proxy":
        serve_proxy(json.loads(sys.stdin.readline()))
        return
    clients = [int(k) for k in (args.clients or (QUICK_CLIENTS if args.quick else FULL_CLIENTS)).split(",")]
    trials = args.trials or (24 if args.quick else 200)
    backends = (args.backends or ("postgresql,sqlite" if args.quick else "postgresql,sqlite,grpc")).split(",")
    arms = []
    with tempfile.TemporaryDirectory(prefix="tuner-db-ceiling-") as folder:
        for backend in backends:
            for k in clients:
                print(f"== {backend}, {k} clients", file=sys.stderr, flush=True)
                arms.append(
                    measure_arm(
                        backend=backend, clients=k, trials=trials, admin_url=args.postgres, epoch_seconds=args.epoch_seconds, heartbeat=args.heartbeat, folder=Path(folder)
                    )
                )
    settings = {
        "trials_per_arm": trials,
        "clients": clients,
        "epoch_seconds": args.epoch_seconds,
        "heartbeat_seconds": args.heartbeat,
        "study": "the default study file (TPE sampler, median pruner, 10-30 epochs a trial, no baselines)",
    }
    ceilings = {backend: ceiling([a for a in arms if a["backend"] == backend]) for backend in backends}
    server = server_settings(args.postgres) if {"postgresql", "grpc"} & set(backends) else None
    # SQLite serves one machine's workers only: there is nothing to extrapolate to other machines.
    extrapolation = {
        backend: extrapolate(
            found, trial_seconds=args.trial_seconds, budget=args.budget, max_connections=server["max_connections"], server_cores=os.cpu_count() or 1
        )
        for backend, found in ceilings.items()
        if backend != "sqlite"
    }
    emit(
        "db_ceiling",
        {
            "settings": settings,
            "arms": arms,
            "ceiling": ceilings,
            "extrapolation": extrapolation,
            "ok": all(arm["ok"] for arm in arms),
            "server": server,
        },
        args.out,
    )


# --- The coordinator ------------------------------------------------------------------------------------------


def measure_arm(*, backend: str, clients: int, trials: int, admin_url: str, epoch_seconds: float, heartbeat: int, folder: Path) -> dict[str, Any]:
    """K client processes on one fresh study; returns their pooled timings, the server's connections and the audit."""
    database_backend = "sqlite" if backend == "sqlite" else "postgresql"
    fresh = FreshStorage(database_backend, admin_url, folder)
    with fresh as url, contextlib.ExitStack() as stack:
        proxy = stack.enter_context(_proxy(url, folder / f"proxy-{clients}.log")) if backend == "grpc" else None
        spec = {"url": url, "trials": trials, "heartbeat": heartbeat, "epoch_seconds": epoch_seconds, "grpc": proxy}
        processes: list[tuple[subprocess.Popen, Path, Any]] = []
        stack.callback(lambda: _stop([process for process, _, _ in processes]))  # none outlives the arm, even on Ctrl-C
        for index in range(clients):
            result = folder / f"client-{backend}-{clients}-{index}.json"
            stderr = stack.enter_context(open(folder / f"client-{backend}-{clients}-{index}.log", "w+"))
            process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.db_ceiling", "--role", "client"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=Path(__file__).resolve().parent.parent,
            )
            process.stdin.write(json.dumps({**spec, "result": str(result)}) + "\n")
            process.stdin.flush()
            processes.append((process, result, stderr))
        for process, _, stderr in processes:  # every client has joined the study before any takes a trial
            if process.stdout.readline().strip() != "ready":
                # (For example PostgreSQL's max_connections reached.) The arm fails; the others still run.
                stderr.seek(0)
                lines = stderr.read().strip().splitlines() or ["no output"]
                return {"backend": backend, "clients": clients, "failed_to_start": lines[-1], "trials_per_second": None, "audit": {"ok": False}, "ok": False}
        sampler = _ServerSampler(admin_url, fresh.database) if database_backend == "postgresql" else None
        started = time.perf_counter()
        for process, _, _ in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        exit_codes = [process.wait() for process, _, _ in processes]
        wall = time.perf_counter() - started
        server = sampler.stop() if sampler else None
        proxy_cpu = process_cpu_seconds(proxy["pid"]) if proxy else None
        errors = []
        for (process, _, stderr), code in zip(processes, exit_codes):
            if code != 0:
                stderr.seek(0)
                errors.append(stderr.read().strip().splitlines()[-1:])
        results = [json.loads(result.read_text()) for (_, result, _), code in zip(processes, exit_codes) if code == 0]
        summary = summarize(results, audit(url, trials), server, proxy_cpu)
        return {"backend": backend, "clients": clients, "exit_codes": exit_codes, "errors": errors, "command_seconds": round(wall, 2),
                **summary, "ok": summary["audit"]["ok"] and not any(exit_codes)}


@contextlib.contextmanager
def _proxy(url: str, log: Path):
    """Optuna's gRPC storage proxy in front of ``url``, in its own process; yields {host, port, pid}."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(log, "w") as stderr:  # not our stdout, which is the benchmark's JSON
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.db_ceiling", "--role", "proxy"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr, text=True, cwd=Path(__file__).resolve().parent.parent,
        )
    process.stdin.write(json.dumps({"url": url, "port": port}) + "\n")
    process.stdin.flush()
    try:
        yield {"host": "127.0.0.1", "port": port, "pid": process.pid}
    finally:
        _stop([process])


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _ServerSampler:
    """Five times a second while the clients run: the server's connections to the arm's database, and the CPU
    time their backend processes have used (readable when the server runs on this machine)."""

    def __init__(self, admin_url: str, database: str) -> None:
        import sqlalchemy

        self._engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self._query = sqlalchemy.text("SELECT pid FROM pg_stat_activity WHERE datname = :database").bindparams(database=database)
        self._counts: list[int] = []
        self._cpu_by_pid: dict[int, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        with self._engine.connect() as connection:
            while not self._done.wait(0.2):
                pids = [int(pid) for pid in connection.execute(self._query).scalars()]
                self._counts.append(len(pids))
                for pid in pids:
                    seconds = process_cpu_seconds(pid)
                    if seconds is not None:
                        self._cpu_by_pid[pid] = seconds

    def stop(self) -> dict[str, Any]:
        self._done.set()
        self._thread.join()
        self._engine.dispose()
        return {
            "peak": max(self._counts, default=0),
            "median": int(np.median(self._counts)) if self._counts else 0,
            "samples": len(self._counts),
            # Up to the last sample (0.2 s) of each backend's work is missed; None when the server is elsewhere.
            "backend_cpu_seconds": round(sum(self._cpu_by_pid.values()), 2) if self._cpu_by_pid else None,
        }


def process_cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds of a process on this machine, from /proc; None if there is no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def audit(url: str, trials: int) -> dict[str, Any]:
    """Nothing lost: exactly ``trials`` finished trials numbered 0..N-1, none RUNNING or WAITING."""
    import optuna

    from tuner.runner import Tally

    found = optuna.load_study(study_name=STUDY, storage=url).get_trials(deepcopy=False)
    tally = Tally.of(found)
    numbers = sorted(t.number for t in found)
    states = {state: sum(1 for t in found if t.state.name == state) for state in sorted({t.state.name for t in found})}
    starts = [t.datetime_start for t in found if t.datetime_start]
    ends = [t.datetime_complete for t in found if t.datetime_complete]
    window = (max(ends) - min(starts)).total_seconds() if starts and ends else float("nan")
    result = {
        "finished": tally.finished,
        "trials": len(found),
        "states": states,
        "contiguous": numbers == list(range(len(found))),
        "unfinished": sum(1 for t in found if t.state.name in ("RUNNING", "WAITING")),
        "retried": len(tally.retried),
        "window_seconds": round(window, 3),
    }
    result["ok"] = tally.finished == trials and len(found) == trials and result["contiguous"] and result["unfinished"] == 0
    return result


def summarize(results: list[dict], audited: dict[str, Any], server: dict[str, Any] | None, proxy_cpu: float | None) -> dict[str, Any]:
    """Pools the clients' per-trial timings into percentiles; throughput from the study's own trial times."""
    trials = [trial for result in results for trial in result["trials"]]
    window = audited["window_seconds"]
    finished = max(1, len(trials))
    statements = sum(r["statements"] for r in results)

    def pooled(key: str) -> list[float]:
        return [value for trial in trials for value in (trial[key] if isinstance(trial[key], list) else [trial[key]])]

    coordination = [trial["wall_ms"] - trial["sleep_ms"] for trial in trials]
    return {
        "trials_per_second": round(audited["finished"] / window, 2) if window and window > 0 else None,
        "lock_wait_ms": percentiles(pooled("wait_ms")),
        "lock_hold_ms": percentiles(pooled("hold_ms")),  # sweep, count and ask: the part every worker of the study queues for
        "sql_statement_ms": percentiles([v for result in results for v in result["sql_ms"]]),
        "report_ms": percentiles(pooled("report_ms")),
        "prune_check_ms": percentiles(pooled("prune_ms")),
        "suggest_ms": percentiles(pooled("suggest_ms")),
        "user_attrs_ms": percentiles(pooled("attrs_ms")),
        "tell_ms": percentiles(pooled("tell_ms")),
        "after_trial_ms": percentiles(pooled("after_ms")),
        "coordination_ms_per_trial": {**percentiles(coordination), "mean": round(float(np.mean(coordination)), 1) if coordination else None},
        # Statements this process sent; through the gRPC proxy the proxy sends them, so there are none to count.
        "sql_statements_per_trial": round(statements / finished, 1) if statements else None,
        "connections": {
            "server": {key: value for key, value in server.items() if key != "backend_cpu_seconds"} if server else None,  # the gRPC proxy's included
            "opened_per_client": max((r["connections_opened"] for r in results), default=None),
        },
        # Where the CPU went, per finished trial: the clients' own Python (Optuna, SQLAlchemy, sampling),
        # the PostgreSQL backends serving them, and the gRPC proxy.
        "cpu_ms_per_trial": {
            "clients": round(1000 * sum(r["cpu_seconds"] for r in results) / finished, 1) if results else None,
            "database_server": round(1000 * server["backend_cpu_seconds"] / finished, 1) if server and server["backend_cpu_seconds"] else None,
            "grpc_proxy": round(1000 * proxy_cpu / finished, 1) if proxy_cpu is not None else None,
        },
        "epochs_per_trial": round(len(pooled("report_ms")) / max(1, len(trials)), 1),
        "audit": audited,
    }


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": round(float(p50), 2), "p90": round(float(p90), 2), "p99": round(float(p99), 2), "max": round(float(max(values)), 2)}


def ceiling(arms: list[dict]) -> dict[str, Any]:
    """One backend's figures across K: the most trials per second any K reached and the smallest K within 10%
    of it (where the storage saturates), the lock hold of a lone client, connections and CPU per trial."""
    measured = sorted((arm for arm in arms if arm["trials_per_second"] and arm["ok"]), key=lambda arm: arm["clients"])
    if not measured:
        return {"trials_per_second": None}
    best = max(arm["trials_per_second"] for arm in measured)
    saturated = next(arm for arm in measured if arm["trials_per_second"] >= 0.9 * best)
    alone = measured[0] if measured[0]["clients"] == 1 else None
    peaks = [(arm["clients"], arm["connections"]["server"]["peak"]) for arm in measured if arm["connections"]["server"]]
    if len(peaks) >= 2:  # what one more client adds: the gRPC proxy's own pool is a constant, not per client
        (k0, c0), (k1, c1) = peaks[0], peaks[-1]
        per_client = round((c1 - c0) / (k1 - k0), 2)
    else:
        per_client = round(peaks[0][1] / peaks[0][0], 2) if peaks else None
    server_cpu = [arm["cpu_ms_per_trial"]["database_server"] for arm in measured if arm["cpu_ms_per_trial"]["database_server"]]
    return {
        "trials_per_second": best,
        "saturates_at_clients": saturated["clients"],
        "coordination_ms_per_trial_alone": alone["coordination_ms_per_trial"]["mean"] if alone else None,
        "coordination_ms_per_trial_at_saturation": saturated["coordination_ms_per_trial"]["mean"],
        "lock_hold_ms_alone": alone["lock_hold_ms"]["p50"] if alone else None,
        "lock_hold_ms_at_saturation": saturated["lock_hold_ms"]["p50"],
        "server_connections_per_client": per_client,
        "database_server_cpu_ms_per_trial": round(float(np.median(server_cpu)), 1) if server_cpu else None,
        "client_cpu_ms_per_trial": saturated["cpu_ms_per_trial"]["clients"],
    }


# Connections a stack needs besides its workers: the dashboard, the export and an administrator's session.
OTHER_CONNECTIONS = 10


def extrapolate(found: dict[str, Any], *, trial_seconds: float, budget: float, max_connections: int | None, server_cores: int) -> dict[str, Any]:
    """How many real workers, with trials of ``trial_seconds``, one database serves before coordination costs
    more than ``budget`` of a trial.

    W workers ask for W / T trials a second. While a shared resource keeps up with that, a worker's
    coordination stays near what one client alone pays; once W / T passes the resource's rate R, workers
    queue for it and each trial waits about W / R - T seconds more, which stays under budget * T up to
    W = R * T * (1 + budget). The resources: the study's lock (one ask at a time, R = 1 / lock hold), the
    database server's CPU (R = cores / CPU per trial) and, as a hard limit, max_connections. The measured
    ceiling of this machine, where the clients share the cores with the server, gives a lower bound. Left
    out: the bookkeeping that grows with the study's size (benchmarks/storage_scale.py).
    """
    rate = found.get("trials_per_second")
    if not rate:
        return {"workers": None}
    scale = trial_seconds * (1 + budget)
    alone_ms = found["coordination_ms_per_trial_alone"]
    bounds = {
        "measured_ceiling_of_this_machine": math.floor(rate * scale),
        "study_lock": math.floor(scale * 1000 / found["lock_hold_ms_alone"]) if found["lock_hold_ms_alone"] else None,
        "database_server_cpu": math.floor(server_cores * scale * 1000 / found["database_server_cpu_ms_per_trial"]) if found["database_server_cpu_ms_per_trial"] else None,
        "max_connections": math.floor((max_connections - OTHER_CONNECTIONS) / found["server_connections_per_client"])
        if max_connections and found["server_connections_per_client"]
        else None,
    }
    limits = {name: value for name, value in bounds.items() if value is not None and name != "measured_ceiling_of_this_machine"}
    binding = min(limits, key=limits.get) if limits else None
    return {
        "trial_seconds": trial_seconds,
        "coordination_budget_ms": round(1000 * budget * trial_seconds, 1),
        "coordination_alone_within_budget": alone_ms is not None and alone_ms <= 1000 * budget * trial_seconds,
        "database_server_cores": server_cores,
        "max_connections": max_connections,
        "bounds": bounds,
        "workers": limits[binding] if binding else None,
        "limited_by": binding,
    }


def server_settings(admin_url: str) -> dict[str, Any]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(admin_url)
    with engine.connect() as connection:
        version = connection.execute(sqlalchemy.text("SHOW server_version")).scalar()
        limit = connection.execute(sqlalchemy.text("SHOW max_connections")).scalar()
    engine.dispose()
    return {"postgresql": version, "max_connections": int(limit)}


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
        self.current = {"requested": self._requested, "acquired": now, "wait_ms": ms(now - self._requested), "hold_ms": None, "report_ms": [], "prune_ms": [], "gc_ms": 0.0}

    def lock_released(self) -> None:
        if self.current is not None and self.current["hold_ms"] is None:
            self.current["hold_ms"] = ms(time.perf_counter() - self.current["acquired"])

    def objective_ended(self) -> None:
        self.current["objective_end"] = time.perf_counter()
        self.current["gc_ms"] = 0.0

    def after_trial_started(self) -> None:
        now = time.perf_counter()
        self.current["tell_ms"] = ms(now - self.current["objective_end"]) - self.current["gc_ms"]  # Optuna's gc.collect() is not the storage's
        self.current["after_started"] = now

    def trial_finished(self, state: str) -> None:
        now = time.perf_counter()
        record = self.current
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
    from tuner.storage import StudyLock

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
        record = self.timings.current
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
        trial.set_user_attr("n_params", mlp_parameters(params))
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
            trial.set_user_attr("train_seconds", round(record["sleep_ms"] / 1000, 3))
            trial.set_user_attr("epochs_trained", epochs)
            trial.set_user_attr("best_epoch", best_epoch)
            trial.set_user_attr("val_accuracy", round(1.0 - best_loss / 3, 4))
            trial.set_user_attr("val_loss", best_loss)
            attrs_seconds += time.perf_counter() - attrs
            record["attrs_ms"] = ms(attrs_seconds)
        trial.set_user_attr("latency_ms", 0.001)
        return best_loss


def mlp_parameters(params: dict[str, Any]) -> int:
    """Weights and biases of the MLP these parameters describe, on MNIST's 784 pixels and 10 classes."""
    widths = [INPUT_PIXELS] + [params["units"]] * params["n_layers"] + [CLASSES]
    return sum(a * b + b for a, b in zip(widths, widths[1:]))


def validation_curve(seed: int, epochs: int) -> list[float]:
    """A falling validation loss per epoch, its floor and speed drawn per trial, so that the median pruner
    has better and worse trials to tell apart."""
    rng = np.random.default_rng(seed)
    floor, scale, rate = 0.06 + 0.3 * rng.random(), 0.5 + 1.5 * rng.random(), 0.2 + 0.4 * rng.random()
    return [float(floor + scale * math.exp(-rate * epoch) + 0.01 * rng.standard_normal()) for epoch in range(1, epochs + 1)]


def run_client(spec: dict[str, Any]) -> None:
    import optuna

    from tuner.config import resolve_run_config
    from tuner.convergence import estimate_convergence
    from tuner.runner import Tally, _TrialSeededSampler, _work, best_outcome
    from tuner.search import make_pruner
    from tuner.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = resolve_run_config(storage_url=spec["url"], study_name=STUDY, n_trials=spec["trials"], heartbeat_interval=spec["heartbeat"], baselines=False)
    timings = _Timings()
    if spec["grpc"]:
        # The lock needs a session of its own on the database; everything else goes through the proxy.
        lock_storage = open_storage(spec["url"], heartbeat_interval=None, grace_period=None)
        study_storage = optuna.storages.GrpcStorageProxy(host=spec["grpc"]["host"], port=spec["grpc"]["port"])
        study_storage.wait_server_ready(timeout=60)
    else:
        lock_storage = study_storage = open_storage(spec["url"], heartbeat_interval=config.heartbeat_interval, grace_period=config.grace_period)
    _instrument(lock_storage.engine, timings)
    lock = _timed_lock(lock_storage, timings)
    spec_ = config.spec
    with lock:  # as prepare_study: the first client creates the study, the others join it
        study = optuna.create_study(
            study_name=STUDY,
            storage=study_storage,
            sampler=_TrialSeededSampler(spec_.sampler),
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
