"""Settings flow in once: CLI flags > environment (TUNER_*) > study file > defaults.

The CLI resolves flags and environment (click's ``envvar``) and passes only the values it was given;
this module fills the rest from the study file and freezes the result. Nothing below reads
``os.environ``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from tuner.errors import ConfigError
from tuner.storage import DEFAULT_STORAGE
from tuner.studyfile import StudySpec, default_study_file, load_study_file

__all__ = ["RunConfig", "resolve_run_config", "resolve_study_file"]


@dataclass(frozen=True)
class RunConfig:
    spec: StudySpec
    study_name: str
    storage_url: str
    data_path: str | None
    n_trials: int
    timeout: float | None
    seed: int
    baselines: bool
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


def resolve_study_file(study_file: str | Path | None) -> StudySpec:
    """The given study file, else ``studies/mnist_mlp.toml`` under the working directory, else the packaged one."""
    if study_file is not None:
        return load_study_file(study_file)
    local = Path("studies") / "mnist_mlp.toml"
    return load_study_file(local if local.is_file() else default_study_file())


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
    spec = resolve_study_file(study_file)
    if n_trials is not None and n_trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {n_trials}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"--timeout must be positive, got {timeout}")
    if seed is not None and seed < 0:
        raise ConfigError(f"--seed must be at least 0, got {seed}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    heartbeat = RunConfig.heartbeat_interval if heartbeat_interval is None else heartbeat_interval
    grace = max(RunConfig.grace_period, 3 * heartbeat) if grace_period is None else grace_period
    if heartbeat < 1:
        raise ConfigError(f"--heartbeat must be at least 1 second, got {heartbeat}")
    if grace <= heartbeat:
        raise ConfigError(f"--grace-period ({grace} s) must be longer than --heartbeat ({heartbeat} s), or live trials look dead")
    if reconnect_timeout is not None and reconnect_timeout < 0:
        raise ConfigError(f"--reconnect-timeout must be at least 0, got {reconnect_timeout}")
    name = spec.name if study_name is None else study_name
    if not name.strip() or len(name) > 200 or any(ord(c) < 32 for c in name):
        raise ConfigError(f"--study must be 1 to 200 printable characters, got {name!r}")
    if data_path is not None and not data_path.strip():
        raise ConfigError("--data must not be empty")
    if warm_start_top is not None and warm_start_top < 1:
        raise ConfigError(f"--top must be at least 1, got {warm_start_top}")
    if warm_start_from is not None and not warm_start_from.strip():
        raise ConfigError("--warm-start-from must name a study")
    if seed is not None:
        spec = replace(spec, sampler=replace(spec.sampler, seed=seed))
    return RunConfig(
        spec=spec,
        study_name=name,
        storage_url=storage_url or DEFAULT_STORAGE,
        data_path=data_path,
        n_trials=100 if n_trials is None else n_trials,
        timeout=timeout,
        seed=spec.sampler.seed,
        baselines=spec.baselines if baselines is None else baselines,
        threads=threads,
        workers=1 if workers is None else workers,
        heartbeat_interval=heartbeat,
        grace_period=grace,
        reconnect_timeout=RunConfig.reconnect_timeout if reconnect_timeout is None else reconnect_timeout,
        warm_start_from=warm_start_from,
        warm_start_storage=warm_start_storage,
        warm_start_top=RunConfig.warm_start_top if warm_start_top is None else warm_start_top,
        until_converged=bool(until_converged),
    )
