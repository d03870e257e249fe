"""Several local worker processes on one study: the library call behind ``tuner run --workers K``.

Each worker is a plain ``tuner run`` process (the same thing a user starts on another machine), so
the storage is the only thing the workers share and coordinate through. This process creates the
study first; a new study's first trial (the portfolio's lead, or a warm start's best) then trains alone
in this process with every thread, so the first good model comes as soon as it can; then the workers
start with the CPU threads split between them. It follows their progress by reading the storage, and
on Ctrl-C/SIGTERM stops them (each records its running trial as failed) and reaps them all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from tuner.config import RunConfig, usable_cpus
from tuner.errors import ConfigError, DataError, ExportError, StorageError, TunerError
from tuner.results import RunResult, RunStart, Tally, TrialEnded, TrialOutcome, best_outcome, short_of, summarize
from tuner.runner import prepare_study, run_study
from tuner.storage import is_connection_error

__all__ = ["WorkersProgress", "has_lead_trial", "lead_threads", "run_workers", "threads_per_worker"]

# Seconds a worker gets to record its running trial as failed after SIGTERM before it is killed.
STOP_GRACE_S = 30.0
_ERRORS_BY_EXIT_CODE = {cls.exit_code: cls for cls in (ConfigError, DataError, StorageError, ExportError)}


@dataclass(frozen=True)
class WorkersProgress:
    n_finished: int
    n_running: int
    best: TrialOutcome | None
    workers_alive: int


def threads_per_worker(*, workers: int, threads: int | None) -> int:
    """``threads`` (default: every core) split evenly, at least one per worker."""
    total = threads or usable_cpus()
    return max(1, total // workers)


def run_workers(
    *,
    config: RunConfig,
    on_start: Callable[[RunStart], None] | None = None,
    on_progress: Callable[[WorkersProgress], None] | None = None,
    poll_seconds: float = 1.0,
) -> RunResult:
    """Run ``config.workers`` worker processes on the study until it holds ``config.n_trials`` finished trials.

    Raises the first failing worker's error (the others are stopped); ``KeyboardInterrupt`` once every
    worker was stopped and reaped.

    Args:
        config: the run's settings; ``config.workers`` processes each run ``tuner run`` on the study.
        on_start: called once the study is prepared, before the workers start.
        on_progress: called every ``poll_seconds`` with the study's counts.

    Example::

        result = run_workers(config=resolve_run_config(n_trials=50, workers=4))
    """
    started = time.perf_counter()
    prepared = prepare_study(config)  # config, data and storage errors stop here, before any process starts
    config = prepared.config  # the study's own seed, data and heartbeat timing, for every worker
    study = prepared.study
    if on_start:
        on_start(prepared.start)
    finished_before = prepared.start.n_finished_before
    with tempfile.TemporaryDirectory(prefix="tuner-workers-") as logs:
        if has_lead_trial(prepared.start, workers=config.workers) and short_of(config.n_trials, finished_before):
            _train_lead_trial(config, n_finished=finished_before, on_progress=on_progress)
        remaining = None if config.timeout is None else config.timeout - (time.perf_counter() - started)
        finished = Tally.of(study.get_trials(deepcopy=False)).finished
        if short_of(config.n_trials, finished) and (remaining is None or remaining > 0):
            threads = threads_per_worker(workers=config.workers, threads=config.threads)
            rest = replace(config, timeout=remaining)
            workers = [_Worker.start(rest, index, threads, Path(logs)) for index in range(config.workers)]
            try:
                _follow(study, workers, on_progress, poll_seconds)
            except BaseException:
                _stop(workers)
                raise
            finally:
                for worker in workers:
                    worker.log.close()
    new_trials = Tally.of(study.get_trials(deepcopy=False)).finished - finished_before
    return summarize(
        study,
        config.storage_url,
        n_target=config.n_trials,
        new_trials=max(0, new_trials),
        wall_seconds=time.perf_counter() - started,
        workers=config.workers,
    )


def has_lead_trial(start: RunStart, *, workers: int) -> bool:
    """Whether the run trains its study's first trial alone before the workers start.

    A new study's first trial is a configuration known to be strong (the portfolio's first entry, or
    the best of a warm start). Trained alone with every core it ends sooner than beside other trials:
    on 2 cores, two trials side by side each train 1.7x slower per epoch than one alone, so the first
    good model comes about 1.5x sooner, for a throughput loss of about 15% while that one trial trains.
    """
    queued_strong = start.n_portfolio_enqueued + start.n_warm_started > 0
    return workers > 1 and queued_strong and start.n_finished_before == 0


def lead_threads(threads: int | None) -> int:
    """The lead trial's TensorFlow threads: all of them (``threads``, default every core)."""
    return threads or usable_cpus()


def _train_lead_trial(config: RunConfig, *, n_finished: int, on_progress: Callable[[WorkersProgress], None] | None) -> None:
    """The lead trial, in this process as ``--workers 1`` trains one: no second process to start, so
    TensorFlow's start-up is paid once before it; ``on_progress`` hears when it ends."""

    def ended(event: TrialEnded) -> None:
        if on_progress:
            on_progress(WorkersProgress(n_finished=event.n_finished, n_running=0, best=event.best, workers_alive=0))

    run_study(config=replace(config, n_trials=n_finished + 1, workers=1, threads=lead_threads(config.threads)), on_trial_end=ended)


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen
    log: IO[bytes]

    @classmethod
    def start(cls, config: RunConfig, index: int, threads: int, logs: Path) -> _Worker:
        log = open(logs / f"worker-{index}.log", "w+b")  # noqa: SIM115 (the worker writes it for its whole life; run_workers closes it)
        process = subprocess.Popen(
            [sys.executable, "-m", "tuner", "run", "--quiet", "--no-baselines", "--no-portfolio"],
            env=_worker_environment(config, threads),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            # Its own session: a Ctrl-C in the terminal reaches only us, and we stop each worker exactly once.
            start_new_session=True,
        )
        return cls(index=index, process=process, log=log)

    def last_error(self) -> str:
        self.log.seek(0)
        lines = [line.strip() for line in self.log.read().decode(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("Error: ")]
        return (errors or lines or ["(no output)"])[-1].removeprefix("Error: ")


def _worker_environment(config: RunConfig, threads: int) -> dict[str, str]:
    """The settings travel in TUNER_* variables, never as arguments: ``ps`` shows arguments, and the storage URL may hold a password."""
    env = dict(os.environ)
    for name in ("TUNER_DATA", "TUNER_TIMEOUT", "TUNER_TRIALS"):
        env.pop(name, None)
    env.update(
        TUNER_STORAGE=config.storage_url,
        TUNER_STUDY=config.study_name,
        TUNER_STUDY_FILE=config.spec.source,
        TUNER_SEED=str(config.seed),
        TUNER_THREADS=str(threads),
        TUNER_WORKERS="1",
        TUNER_HEARTBEAT=str(config.heartbeat_interval),
        TUNER_GRACE_PERIOD=str(config.grace_period),
        TUNER_RECONNECT_TIMEOUT=str(config.reconnect_timeout),
        TF_CPP_MIN_LOG_LEVEL=env.get("TF_CPP_MIN_LOG_LEVEL", "3"),
    )
    if config.n_trials is not None:
        env["TUNER_TRIALS"] = str(config.n_trials)
    if config.data_path is not None:
        env["TUNER_DATA"] = config.data_path
    if config.timeout is not None:
        env["TUNER_TIMEOUT"] = str(config.timeout)
    if config.until_converged:
        env["TUNER_UNTIL_CONVERGED"] = "1"
    return env


def _follow(study, workers: list[_Worker], on_progress, poll_seconds: float) -> None:
    while True:
        alive = [w for w in workers if w.process.poll() is None]
        failed = next((w for w in workers if w.process.returncode not in (None, 0)), None)
        if failed is not None:
            code = failed.process.returncode
            others = [w for w in alive if w is not failed]
            _stop(others)
            raise _worker_error(failed.index, code, failed.last_error())
        if on_progress:
            try:
                tally = Tally.of(study.get_trials(deepcopy=False))
                on_progress(
                    WorkersProgress(n_finished=tally.finished, n_running=tally.running, best=best_outcome(study), workers_alive=len(alive))
                )
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                # The workers retry the database themselves and fail if it stays away; the display just skips a beat.
        if not alive:
            return
        time.sleep(poll_seconds)


def _stop(workers: list[_Worker]) -> None:
    """SIGTERM each live worker (it records its running trial as failed), then kill what is left after the grace, and reap all."""
    for worker in workers:
        if worker.process.poll() is None:
            _signal(worker.process, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for worker in workers:
        try:
            worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            # Too slow, or a second Ctrl-C: its trial stays RUNNING until its heartbeat goes stale, then a worker retries it.
            _signal(worker.process, signal.SIGKILL)
            worker.process.wait()


def _signal(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have exited in the meantime
        process.send_signal(signum)


def _worker_error(index: int, code: int, message: str) -> TunerError:
    if code < 0:
        message = f"worker {index} was killed by signal {signal.Signals(-code).name} ({message})"
    else:
        message = f"worker {index} failed: {message}"
    return _ERRORS_BY_EXIT_CODE.get(code, TunerError)(message)
