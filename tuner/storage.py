"""Study storage: one place that opens Optuna's RDB storage for any SQLAlchemy URL."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from tuner.errors import ConfigError, StorageError, StudyNotFoundError

__all__ = [
    "DEFAULT_STORAGE",
    "StudyInfo",
    "mask_url",
    "describe_storage",
    "open_storage",
    "load_study",
    "list_studies",
]

DEFAULT_STORAGE = "sqlite:///tuner.db"
_DRIVER_EXTRAS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}


@dataclass(frozen=True)
class StudyInfo:
    name: str
    n_trials: int
    n_complete: int
    n_pruned: int
    n_fail: int
    n_running: int
    best_value: float | None
    best_trial: int | None
    best_val_accuracy: float | None


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, safe to print or store."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable storage URL>"


def describe_storage(url: str) -> str:
    """A human description: the absolute file for SQLite, the masked URL otherwise."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return f"SQLite file {Path(parsed.database).resolve()}"
    return mask_url(url)


def open_storage(url: str, *, must_exist: bool = False, heartbeat_interval: int | None = 60, grace_period: int | None = 180) -> optuna.storages.RDBStorage:
    """Open (and on first use create) the storage; every failure becomes one ``StorageError`` line.

    Heartbeats let another worker mark a trial of a killed worker as failed and retry it.
    """
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError(f"invalid storage URL {mask_url(url)!r} (expected e.g. sqlite:///tuner.db or postgresql+psycopg2://user@host/db)") from None
    backend = parsed.get_backend_name()
    engine_kwargs: dict = {}
    if backend == "sqlite":
        database = parsed.database or ""
        if must_exist and (not database or not Path(database).is_file()):
            raise StudyNotFoundError(f"no study database at {Path(database).resolve() if database else url} (run 'tuner run' first or pass --storage)")
        # Several local workers share the file: wait for the lock instead of failing at once.
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        with warnings.catch_warnings():
            # Heartbeats and the stale-trial retry are marked experimental in Optuna 5; we rely on them.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2) if heartbeat_interval else None
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=retry,
            )
    except ModuleNotFoundError as exc:
        extra = _DRIVER_EXTRAS.get(backend, backend)
        raise StorageError(f"the database driver for {backend} is not installed ({exc.name}); install it with: pip install 'tuner[{extra}]'") from None
    except sqlalchemy.exc.ArgumentError as exc:
        raise ConfigError(f"invalid storage URL {mask_url(url)!r}: {exc}") from None
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise StorageError(f"cannot open storage {_where(parsed)}: {_first_line(exc)}") from None
    if backend == "sqlite":
        _enable_wal(storage)
    return storage


def load_study(url: str, study_name: str | None) -> optuna.Study:
    """Load an existing study; with no name, the storage's only study."""
    storage = open_storage(url, must_exist=True)
    names = [summary.study_name for summary in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if study_name is None:
        if len(names) != 1:
            found = ", ".join(names) if names else "none"
            raise StudyNotFoundError(f"{describe_storage(url)} holds {len(names)} studies ({found}); choose one with --study")
        study_name = names[0]
    if study_name not in names:
        raise StudyNotFoundError(f"no study named {study_name!r} in {describe_storage(url)} (studies: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=study_name, storage=storage)


def list_studies(url: str) -> list[StudyInfo]:
    storage = open_storage(url, must_exist=True)
    infos = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = min(complete, key=lambda t: t.value) if complete and study.direction == optuna.study.StudyDirection.MINIMIZE else (max(complete, key=lambda t: t.value) if complete else None)
        infos.append(
            StudyInfo(
                name=summary.study_name,
                n_trials=len(trials),
                n_complete=states.count(optuna.trial.TrialState.COMPLETE),
                n_pruned=states.count(optuna.trial.TrialState.PRUNED),
                n_fail=states.count(optuna.trial.TrialState.FAIL),
                n_running=states.count(optuna.trial.TrialState.RUNNING),
                best_value=best.value if best else None,
                best_trial=best.number if best else None,
                best_val_accuracy=best.user_attrs.get("val_accuracy") if best else None,
            )
        )
    return infos


def _enable_wal(storage: optuna.storages.RDBStorage) -> None:
    # WAL lets readers (the dashboard, a report) work while a trial writes; the mode is stored in the file.
    try:
        with storage.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    except sqlalchemy.exc.SQLAlchemyError:
        pass  # a read-only or network file system keeps the default journal; correctness is unaffected


def _where(parsed: sqlalchemy.engine.URL) -> str:
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite file {parsed.database}"
    host = parsed.host or "localhost"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.get_backend_name()} database {parsed.database!r} on {host}{port}"


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
