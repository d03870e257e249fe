"""How many workers one database carries: K worker-like clients on one study, trials per second and latencies.

Each client is a separate process doing what a tuner worker does per trial, with the training replaced
by a short sleep, so that the database and Optuna's bookkeeping are the only load. A client
(benchmarks/db_ceiling_client.py) runs tuner's own worker loop (``tuner.runner._work``: the study lock,
the stale-trial sweep, the count, Optuna's ask, the trial, tell, and the reads `tuner run` makes after
every trial) on a storage opened by ``tuner.storage.open_storage`` with heartbeats, with the default
study file's sampler and pruner built as ``tuner run`` builds them. Its trial draws the default space's
parameters, then for each epoch sleeps, reports a validation loss and asks the pruner, and records the
user attributes a real trial records. Per backend and K: the trials per second the storage sustains,
lock wait and hold, the latency of each SQL statement and of report / prune check / tell, the
connections open on the server, the CPU per trial of the clients and of the server, where the
throughput saturates, and an audit: exactly N finished trials, numbered 0..N-1, none left RUNNING.

    python -m benchmarks.db_ceiling --quick      # K = 1, 4, 8 on PostgreSQL and SQLite, 24 trials each (90 CPU-seconds)
    python -m benchmarks.db_ceiling              # K = 1, 2, 4, 8, 16, 32 on PostgreSQL, SQLite and Optuna's gRPC proxy

Every arm runs in a fresh database (a new PostgreSQL database, dropped afterwards, or a new SQLite file).
The gRPC arm puts ``optuna.storages.run_grpc_proxy_server`` in front of PostgreSQL: the clients talk to
Optuna through it and share its connections; the study lock still takes one connection per client, and
the proxy has no heartbeats (Optuna 5's ``GrpcStorageProxy`` does not implement them), so that arm runs
without them.
"""

from __future__ import annotations

import contextlib
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
from benchmarks.db_ceiling_client import STUDY

FULL_CLIENTS, QUICK_CLIENTS = "1,2,4,8,16,32", "1,4,8"
ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--clients", default=None, help=f"client counts K (default {FULL_CLIENTS}; quick {QUICK_CLIENTS})")
    p.add_argument("--trials", type=int, default=None, help="finished trials per arm (default 200; quick 24)")
    p.add_argument("--backends", default=None, help="postgresql, sqlite, grpc (default all three; quick postgresql,sqlite)")
    p.add_argument(
        "--epoch-seconds", type=float, default=0.005, help="the sleep that stands in for one epoch of training (default %(default)s)"
    )
    p.add_argument(
        "--heartbeat", type=int, default=1, help="heartbeat interval of the clients, seconds (default %(default)s: at least one per trial)"
    )
    p.add_argument("--trial-seconds", type=float, default=60.0, help="a real trial's length, for the extrapolation (default %(default)s)")
    p.add_argument("--budget", type=float, default=0.05, help="share of a real trial that coordination may cost (default %(default)s)")
    p.add_argument(
        "--postgres",
        default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
        help="an admin URL; a fresh database is made and dropped per arm",
    )
    args = p.parse_args()
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
                        backend=backend,
                        clients=k,
                        trials=trials,
                        admin_url=args.postgres,
                        epoch_seconds=args.epoch_seconds,
                        heartbeat=args.heartbeat,
                        folder=Path(folder),
                    )
                )
    settings = {
        "trials_per_arm": trials,
        "clients": clients,
        "epoch_seconds": args.epoch_seconds,
        "heartbeat_seconds": args.heartbeat,
        "study": "the default study file (its TPE sampler and successive-halving pruner, its 30-epoch budget a trial; no baselines)",
    }
    ceilings = {backend: ceiling([a for a in arms if a["backend"] == backend]) for backend in backends}
    server = server_settings(args.postgres) if {"postgresql", "grpc"} & set(backends) else None
    # SQLite serves one machine's workers only: there is nothing to extrapolate to other machines.
    extrapolation = {
        backend: extrapolate(
            found,
            trial_seconds=args.trial_seconds,
            budget=args.budget,
            max_connections=server["max_connections"] if server else None,
            server_cores=os.cpu_count() or 1,
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


def measure_arm(
    *, backend: str, clients: int, trials: int, admin_url: str, epoch_seconds: float, heartbeat: int, folder: Path
) -> dict[str, Any]:
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
                [sys.executable, "-m", "benchmarks.db_ceiling_client", "client"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                cwd=ROOT,
            )
            _tell(process, json.dumps({**spec, "result": str(result)}))
            processes.append((process, result, stderr))
        for process, _, stderr in processes:  # every client has joined the study before any takes a trial
            if _listen(process) != "ready":
                # (For example PostgreSQL's max_connections reached.) The arm fails; the others still run.
                stderr.seek(0)
                lines = stderr.read().strip().splitlines() or ["no output"]
                return {
                    "backend": backend,
                    "clients": clients,
                    "failed_to_start": lines[-1],
                    "trials_per_second": None,
                    "audit": {"ok": False},
                    "ok": False,
                }
        sampler = _ServerSampler(admin_url, fresh.database) if database_backend == "postgresql" else None
        started = time.perf_counter()
        for process, _, _ in processes:
            _tell(process, "go")
        exit_codes = [process.wait() for process, _, _ in processes]
        wall = time.perf_counter() - started
        server = sampler.stop() if sampler else None
        proxy_cpu = process_cpu_seconds(proxy["pid"]) if proxy else None
        errors = []
        for (_, _, stderr), code in zip(processes, exit_codes, strict=True):
            if code != 0:
                stderr.seek(0)
                errors.append(stderr.read().strip().splitlines()[-1:])
        results = [json.loads(result.read_text()) for (_, result, _), code in zip(processes, exit_codes, strict=True) if code == 0]
        summary = summarize(results, audit(url, trials), server, proxy_cpu)
        return {
            "backend": backend,
            "clients": clients,
            "exit_codes": exit_codes,
            "errors": errors,
            "command_seconds": round(wall, 2),
            **summary,
            "ok": summary["audit"]["ok"] and not any(exit_codes),
        }


@contextlib.contextmanager
def _proxy(url: str, log: Path):
    """Optuna's gRPC storage proxy in front of ``url``, in its own process; yields {host, port, pid}."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(log, "w") as stderr:  # not our stdout, which is the benchmark's JSON
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.db_ceiling_client", "proxy"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
            cwd=ROOT,
        )
    _tell(process, json.dumps({"url": url, "port": port}))
    try:
        yield {"host": "127.0.0.1", "port": port, "pid": process.pid}
    finally:
        _stop([process])


def _tell(process: subprocess.Popen, line: str) -> None:
    """One line to a client or proxy on its stdin, which is always a pipe here."""
    assert process.stdin is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()


def _listen(process: subprocess.Popen) -> str:
    """A client's next line on its stdout (a pipe), without the newline."""
    assert process.stdout is not None
    return process.stdout.readline().strip()


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
    time their backend processes have used (readable when the server runs on this machine).

    Connections are client backends only: autovacuum and parallel-query workers also show the database's
    name in pg_stat_activity, but have slots of their own outside max_connections.
    """

    def __init__(self, admin_url: str, database: str) -> None:
        import sqlalchemy

        self._engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self._query = sqlalchemy.text("SELECT pid, backend_type FROM pg_stat_activity WHERE datname = :database").bindparams(
            database=database
        )
        self._counts: list[int] = []
        self._others: list[int] = []
        self._cpu_by_pid: dict[int, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        with self._engine.connect() as connection:
            while not self._done.wait(0.2):
                backends = connection.execute(self._query).all()
                self._counts.append(sum(1 for _, kind in backends if kind == "client backend"))
                self._others.append(len(backends) - self._counts[-1])
                for pid, _ in backends:
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
            "other_backends_peak": max(self._others, default=0),  # autovacuum, parallel workers: not connections
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

    from tuner.results import Tally

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
        "coordination_ms_per_trial": {
            **percentiles(coordination),
            "mean": round(float(np.mean(coordination)), 1) if coordination else None,
        },
        # Statements this process sent; through the gRPC proxy the proxy sends them, so there are none to count.
        "sql_statements_per_trial": round(statements / finished, 1) if statements else None,
        "connections": {
            "server": {key: value for key, value in server.items() if key != "backend_cpu_seconds"}
            if server
            else None,  # the gRPC proxy's included
            "opened_per_client": max((r["connections_opened"] for r in results), default=None),
        },
        # Where the CPU went, per finished trial: the clients' own Python (Optuna, SQLAlchemy, sampling),
        # the PostgreSQL backends serving them, and the gRPC proxy.
        "cpu_ms_per_trial": {
            "clients": round(1000 * sum(r["cpu_seconds"] for r in results) / finished, 1) if results else None,
            "database_server": round(1000 * server["backend_cpu_seconds"] / finished, 1)
            if server and server["backend_cpu_seconds"]
            else None,
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


def extrapolate(
    found: dict[str, Any], *, trial_seconds: float, budget: float, max_connections: int | None, server_cores: int
) -> dict[str, Any]:
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
        "database_server_cpu": math.floor(server_cores * scale * 1000 / found["database_server_cpu_ms_per_trial"])
        if found["database_server_cpu_ms_per_trial"]
        else None,
        "max_connections": math.floor((max_connections - OTHER_CONNECTIONS) / found["server_connections_per_client"])
        if max_connections and found["server_connections_per_client"]
        else None,
    }
    limits = {name: value for name, value in bounds.items() if value is not None and name != "measured_ceiling_of_this_machine"}
    binding = min(limits, key=limits.__getitem__) if limits else None
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
        version = connection.execute(sqlalchemy.text("SHOW server_version")).scalar_one()
        limit = connection.execute(sqlalchemy.text("SHOW max_connections")).scalar_one()
    engine.dispose()
    return {"postgresql": version, "max_connections": int(limit)}


if __name__ == "__main__":
    main()
