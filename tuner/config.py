"""Settings flow in once: CLI flags > environment (TUNER_*) > study file > defaults.

The CLI resolves flags and environment (click's ``envvar``) and passes only the values it was given;
this module fills the rest from the study file and freezes the result. Nothing below reads
``os.environ``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from tuner.errors import ConfigError
from tuner.storageurl import DEFAULT_STORAGE
from tuner.studyfile import MAX_SEED, MAX_STUDY_NAME, StudySpec, default_study_file, is_valid_study_name, load_study_file

__all__ = ["DEFAULT_TRIALS", "RunConfig", "resolve_run_config", "resolve_study_file", "default_workers", "usable_cpus"]

# A worker's resident memory on full MNIST (TensorFlow, the data, a 2 x 1024 model) stays under this.
WORKER_MEMORY_BYTES = 2 << 30
MAX_DEFAULT_WORKERS = 8
# Finished trials a run aims for when it is given neither a count nor a timeout.
DEFAULT_TRIALS = 100


@dataclass(frozen=True)
class RunConfig:
    spec: StudySpec
    study_name: str
    storage_url: str
    data_path: str | None
    n_trials: int | None  # None: no count, the timeout ends the run (as Optuna's optimize(timeout=...))
    timeout: float | None
    seed: int
    baselines: bool
    portfolio: bool = True
    threads: int | None = None
    workers: int = 1
    # A killed worker's trial is failed and retried once its heartbeat is older than the grace period.
    heartbeat_interval: int = 60
    grace_period: int = 180
    # How long a worker keeps retrying a database that stopped answering before it gives up.
    reconnect_timeout: float = 300.0
    # Warm start: a new study first runs the best configurations of another study.
    warm_start_from: str | None = None
    warm_start_storage: str | None = None  # default: the run's own storage
    warm_start_top: int = 5
    until_converged: bool = False
    # Which of seed, data_path, heartbeat_interval, grace_period the user gave (flag, environment or
    # study file): a resume compares those with the study's record and takes the others from it.
    explicit: frozenset[str] = frozenset()


def resolve_study_file(study_file: str | Path | None) -> StudySpec:
    """The given study file, else ``studies/mnist_mlp.toml`` under the working directory, else the packaged one."""
    if study_file is not None:
        return load_study_file(path=study_file)
    local = Path("studies") / "mnist_mlp.toml"
    return load_study_file(path=local if local.is_file() else default_study_file())


def resolve_run_config(
    *,
    study_file: str | Path | None = None,
    study_name: str | None = None,
    storage_url: str | None = None,
    data_path: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    seed: int | None = None,
    baselines: bool | None = None,
    portfolio: bool | None = None,
    threads: int | None = None,
    workers: int | None = None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    reconnect_timeout: float | None = None,
    warm_start_from: str | None = None,
    warm_start_storage: str | None = None,
    warm_start_top: int | None = None,
    until_converged: bool | None = None,
) -> RunConfig:
    """The settings of one run: the values given, the rest from the study file, then defaults.

    Args:
        study_file: the study definition (default: studies/mnist_mlp.toml here, else the packaged one).
        study_name: default the study file's name.
        storage_url: SQLAlchemy URL of the study database (default ``DEFAULT_STORAGE``).
        data_path: the data to tune on (default: the study's dataset, downloaded).
        n_trials: finished trials the study should hold in total (default ``DEFAULT_TRIALS``; with a
            timeout and no count, none: the run goes on until the timeout).
        timeout, seed, baselines, portfolio, threads, workers, heartbeat_interval, grace_period,
        reconnect_timeout, warm_start_from, warm_start_storage, warm_start_top, until_converged:
            as the ``tuner run`` options of the same names; None takes the study file's or the default.

    Raises ``ConfigError`` naming the option at fault.

    Example::

        config = resolve_run_config(study_file="studies/mnist_mlp.toml", n_trials=20, seed=7)
        result = run_study(config=config)
    """
    spec = resolve_study_file(study_file)
    total = n_trials if n_trials is not None or timeout is not None else DEFAULT_TRIALS
    _check_run_size(spec, n_trials=n_trials, timeout=timeout, seed=seed, threads=threads, workers=workers)
    heartbeat = RunConfig.heartbeat_interval if heartbeat_interval is None else heartbeat_interval
    grace = max(RunConfig.grace_period, 3 * heartbeat) if grace_period is None else grace_period
    _check_timing(heartbeat=heartbeat, grace=grace, reconnect_timeout=reconnect_timeout)
    name = spec.name if study_name is None else study_name
    _check_names(name, data_path=data_path, warm_start_from=warm_start_from, warm_start_top=warm_start_top)
    if seed is not None:
        spec = replace(spec, sampler=replace(spec.sampler, seed=seed))
    return RunConfig(
        spec=spec,
        study_name=name,
        storage_url=storage_url or DEFAULT_STORAGE,
        data_path=data_path,
        n_trials=total,
        timeout=timeout,
        seed=spec.sampler.seed,
        baselines=spec.baselines if baselines is None else baselines,
        portfolio=spec.portfolio if portfolio is None else portfolio,
        threads=threads,
        workers=default_workers(threads=threads) if workers is None else workers,
        heartbeat_interval=heartbeat,
        grace_period=grace,
        reconnect_timeout=RunConfig.reconnect_timeout if reconnect_timeout is None else reconnect_timeout,
        warm_start_from=warm_start_from,
        warm_start_storage=warm_start_storage,
        warm_start_top=RunConfig.warm_start_top if warm_start_top is None else warm_start_top,
        until_converged=bool(until_converged),
        explicit=frozenset(
            name
            for name, value in (
                ("seed", seed),
                ("data_path", data_path),
                ("heartbeat_interval", heartbeat_interval),
                ("grace_period", grace_period),
            )
            if value is not None
        ),
    )


def _check_run_size(
    spec: StudySpec, *, n_trials: int | None, timeout: float | None, seed: int | None, threads: int | None, workers: int | None
) -> None:
    """How many trials, for how long, on how many threads and workers; the seed leaves room for every trial's own."""
    if n_trials is not None and n_trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {n_trials}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"--timeout must be positive, got {timeout}")
    # Every trial's seed is the study's plus its number: leave room for the trials asked for (or the default count).
    total = DEFAULT_TRIALS if n_trials is None else n_trials
    if seed is not None and not 0 <= seed <= MAX_SEED - total:
        raise ConfigError(f"--seed must be between 0 and {MAX_SEED - total} (2**32 - 1 minus --trials {total}), got {seed}")
    if seed is None and spec.sampler.seed > MAX_SEED - total:
        raise ConfigError(
            f"{spec.source}: sampler.seed must be at most {MAX_SEED - total} (2**32 - 1 minus --trials {total}), got {spec.sampler.seed}"
        )
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")


def _check_timing(*, heartbeat: int, grace: int, reconnect_timeout: float | None) -> None:
    if heartbeat < 1:
        raise ConfigError(f"--heartbeat must be at least 1 second, got {heartbeat}")
    if grace <= heartbeat:
        raise ConfigError(f"--grace-period ({grace} s) must be longer than --heartbeat ({heartbeat} s), or live trials look dead")
    if reconnect_timeout is not None and reconnect_timeout < 0:
        raise ConfigError(f"--reconnect-timeout must be at least 0, got {reconnect_timeout}")


def _check_names(name: str, *, data_path: str | None, warm_start_from: str | None, warm_start_top: int | None) -> None:
    if not is_valid_study_name(name):
        raise ConfigError(f"--study must be 1 to {MAX_STUDY_NAME} printable characters, got {name!r}")
    if data_path is not None and not data_path.strip():
        raise ConfigError("--data must not be empty")
    if warm_start_top is not None and warm_start_top < 1:
        raise ConfigError(f"--top must be at least 1, got {warm_start_top}")
    if warm_start_from is not None and not warm_start_from.strip():
        raise ConfigError("--warm-start-from must name a study")


def default_workers(*, threads: int | None = None, cpus: int | None = None, memory_bytes: int | None = None) -> int:
    """One single-threaded worker per CPU this process may use, as many as memory holds, at most 8.

    An MLP's small matrix products barely speed up with a second TensorFlow thread, while two
    processes run two trials at full speed (on 2 cores: 2 workers x 1 thread finished 1.7x the trials
    per minute of 1 worker x 2 threads; README, Performance). ``threads`` caps the CPUs used. The cap of
    8 keeps one SQLite file and the study lock far from contention.
    """
    cpus = cpus if cpus is not None else usable_cpus()
    memory = memory_bytes if memory_bytes is not None else _available_memory()
    by_memory = max(1, memory // WORKER_MEMORY_BYTES) if memory else MAX_DEFAULT_WORKERS
    return max(1, min(cpus if threads is None else min(cpus, threads), by_memory, MAX_DEFAULT_WORKERS))


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # a container's CPU set, not the host's core count
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _available_memory() -> int | None:
    """Linux's MemAvailable (free memory plus the cache it can drop), else the physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
