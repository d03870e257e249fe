"""Item 6: Optuna's bookkeeping per trial (ask with TPE sampling, report and pruning check every epoch,
tell) in a study that already holds 1,000 and 10,000 finished trials, on SQLite and PostgreSQL.

No model is trained: the time measured is all storage, sampler and pruner work, the part of a
trial that grows with the study. The existing trials are synthetic but shaped like the default
study's: its parameters and distributions, ten epochs of intermediate values, a third of them pruned.
Target: under 50 ms per trial at 10,000 trials.

    python -m benchmarks.storage_scale [--quick] [--sizes 1000,10000] [--trials N] [--postgres URL]
"""

from __future__ import annotations

import tempfile
import time
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import emit, median, parser, versions

EPOCHS = 10


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--sizes", default=None, help="comma-separated study sizes (default 1000 quick, 1000,10000 full)")
    p.add_argument("--trials", type=int, default=None, help="trials measured per size (default 10 quick, 20 full)")
    p.add_argument(
        "--postgres",
        default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL URL whose user may create databases ('none' to skip; default %(default)s)",
    )
    args = p.parse_args()
    sizes = [int(s) for s in (args.sizes or ("1000" if args.quick else "1000,10000")).split(",")]
    trials = args.trials or (10 if args.quick else 20)
    backends: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        backends["sqlite"] = measure_backend(lambda size: f"sqlite:///{Path(tmp) / f'scale{size}.db'}", sizes, trials)
    if args.postgres != "none":
        backends["postgresql"] = with_postgres(args.postgres, lambda url_for: measure_backend(url_for, sizes, trials))
    emit(
        "storage_scale",
        {
            "sizes": sizes,
            "trials_measured": trials,
            "epochs_per_trial": EPOCHS,
            "backends": backends,
            "target": "under 50 ms per trial at 10,000 trials",
            "versions": versions(),
        },
        args.out,
    )


def measure_backend(url_for, sizes: list[int], trials: int) -> dict[str, Any]:
    rows = {}
    for size in sizes:
        study = _study(url_for(size))
        started = time.perf_counter()
        _fill(study, size)
        fill_s = time.perf_counter() - started
        (first, _), *rest = _bookkeeping(study, trials + 1)
        wall = [w for w, _ in rest]
        rows[str(size)] = {
            "fill_s": round(fill_s, 1),
            "first_trial_ms": round(1000 * first, 1),  # this process's cache reads the whole history once
            "ms_per_trial_median": round(1000 * median(wall), 1),
            "ms_per_trial_p90": round(1000 * float(np.percentile(wall, 90)), 1),
            # Process CPU only: a PostgreSQL server's own work is in the wall time, not here.
            "cpu_ms_per_trial_median": round(1000 * median([c for _, c in rest]), 1),
        }
    return rows


def _study(url: str):
    import optuna

    from tuner.search import make_pruner, make_sampler
    from tuner.storage import open_storage
    from tuner.studyfile import default_study_file, load_study_file

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_study_file(path=default_study_file())
    study = optuna.create_study(
        storage=open_storage(url),
        study_name="scale",
        sampler=make_sampler(spec.sampler),
        pruner=make_pruner(spec.pruner, max_epochs=spec.max_epochs),
        direction="minimize",
        load_if_exists=True,
    )
    return study


@lru_cache(maxsize=1)
def _space():
    from tuner.studyfile import default_study_file, load_study_file

    return load_study_file(path=default_study_file()).space


def _fill(study, size: int) -> None:
    """Insert finished trials drawn at random from the default space.

    Written straight into Optuna's tables in one transaction: ``study.add_trials`` spends about
    0.1 s per trial here, which would make a 10,000-trial study take longer than the benchmark.
    """
    import datetime

    import optuna
    import sqlalchemy
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models  # private, but the schema is what Optuna itself reads back

    from tuner.model import suggest_hyperparameters

    rng = np.random.default_rng(0)
    have = len(study.get_trials(deepcopy=False))
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=have))  # in memory: only draws configurations
    engine = study._storage._backend.engine
    with engine.begin() as connection:
        next_id = connection.execute(sqlalchemy.select(sqlalchemy.func.max(models.TrialModel.trial_id))).scalar() or 0
        trials, params, values, steps = [], [], [], []
        now = datetime.datetime.now()
        for number in range(have, size):
            next_id += 1
            trial = probe.ask()
            suggest_hyperparameters(trial, _space())
            curve = 0.05 + rng.random() * np.exp(-0.2 * np.arange(EPOCHS)) + rng.random() * 0.05
            pruned = rng.random() < 1 / 3
            state = optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE
            trials.append(
                {
                    "trial_id": next_id,
                    "number": number,
                    "study_id": study._study_id,
                    "state": state,
                    "datetime_start": now,
                    "datetime_complete": now,
                }
            )
            for name, value in trial.params.items():
                distribution = trial.distributions[name]
                params.append(
                    {
                        "trial_id": next_id,
                        "param_name": name,
                        "param_value": distribution.to_internal_repr(value),
                        "distribution_json": distribution_to_json(distribution),
                    }
                )
            if not pruned:
                values.append(
                    {
                        "trial_id": next_id,
                        "objective": 0,
                        "value": float(curve.min()),
                        "value_type": models.TrialValueModel.TrialValueType.FINITE,
                    }
                )
            for step in range(2 if pruned else EPOCHS):
                steps.append(
                    {
                        "trial_id": next_id,
                        "step": step + 1,
                        "intermediate_value": float(curve[step]),
                        "intermediate_value_type": models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE,
                    }
                )
        for model, rows in (
            (models.TrialModel, trials),
            (models.TrialParamModel, params),
            (models.TrialValueModel, values),
            (models.TrialIntermediateValueModel, steps),
        ):
            if rows:
                connection.execute(model.__table__.insert(), rows)
        if connection.dialect.name == "postgresql":  # trial ids were given, so move the id sequence past them
            connection.exec_driver_sql("SELECT setval(pg_get_serial_sequence('trials', 'trial_id'), (SELECT MAX(trial_id) FROM trials))")


def _bookkeeping(study, trials: int) -> list[tuple[float, float]]:
    """Wall and CPU seconds per trial of what a real trial asks of Optuna, with the training left out."""
    from tuner.model import suggest_hyperparameters

    rng = np.random.default_rng(1)
    seconds = []
    for _ in range(trials):
        started, cpu = time.perf_counter(), time.process_time()
        trial = study.ask()
        suggest_hyperparameters(trial, _space())
        value = None
        for step in range(1, EPOCHS + 1):
            value = float(0.05 + rng.random() * np.exp(-0.2 * step))
            trial.report(value, step)
            if trial.should_prune():
                break
        study.tell(trial, value)  # every measured trial completes: the costlier path
        seconds.append((time.perf_counter() - started, time.process_time() - cpu))
    return seconds


def with_postgres(url: str, run) -> dict[str, Any]:
    """Run ``run(url_for)`` against fresh databases on the server at ``url``; dropped afterwards."""
    import sqlalchemy

    name = f"tuner_bench_{uuid.uuid4().hex[:8]}"
    try:
        admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except Exception as exc:  # the server is optional for this benchmark: say why it was left out
        return {"skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
    base = sqlalchemy.engine.make_url(url)
    created: list[str] = []

    def url_for(size: int) -> str:
        database = f"{name}_{size}"
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{database}"')
        created.append(database)
        return base.set(database=database).render_as_string(hide_password=False)

    try:
        return run(url_for)
    finally:
        import gc

        gc.collect()  # let Optuna's engines go before the databases are dropped
        with admin.connect() as connection:
            for database in created:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.dispose()


if __name__ == "__main__":
    main()
