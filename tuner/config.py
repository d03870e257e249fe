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
    name = spec.name if study_name is None else study_name
    if not name.strip() or len(name) > 200 or any(ord(c) < 32 for c in name):
        raise ConfigError(f"--study must be 1 to 200 printable characters, got {name!r}")
    if data_path is not None and not data_path.strip():
        raise ConfigError("--data must not be empty")
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
    )
