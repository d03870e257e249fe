"""Running a study: the library call behind ``tuner run``."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.config import RunConfig
from tuner.convergence import Convergence, estimate_convergence
from tuner.coordination import StudyLock, fail_stale_trials
from tuner.data import TuningData, load_tuning_data
from tuner.errors import StorageError, StudyNotFoundError
from tuner.interrupts import deferred_interrupts
from tuner.model import check_space_fits_data
from tuner.provenance import PROVENANCE_ATTR, StudyProvenance
from tuner.records import BASELINE_ATTR, EPOCH_BUDGET_ATTR, FAIL_REASON_ATTR, PORTFOLIO_ATTR
from tuner.results import RunResult, RunStart, Tally, TrialEnded, TrialOutcome, best_outcome, short_of, summarize, up_to_target
from tuner.search import (
    BASELINE_BUDGET_SHARE,
    PortfolioEntry,
    TrialSeededSampler,
    baseline_params,
    make_pruner,
    portfolio_params,
    share_of_epoch_budget,
)
from tuner.storage import database_message, is_connection_error, open_storage
from tuner.storageurl import describe_storage, storage_location
from tuner.warmstart import WarmStart, enqueue_warm_start

__all__ = ["PreparedStudy", "prepare_study", "run_study"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedStudy:
    """A created (or joined) study with its data loaded, ready for workers."""

    study: optuna.Study
    storage: optuna.storages.RDBStorage
    data: TuningData
    start: RunStart
    config: RunConfig  # the run's settings with what it left out taken from the study's record


def prepare_study(config: RunConfig) -> PreparedStudy:
    """Load the data, open the storage and create the study, or join it if another worker made it.

    Data and storage problems both stop here, before the first trial. Only the first worker of a new
    study records its provenance and enqueues the warm start, the portfolio and the baselines, in that
    order (under the study lock). A resume or a joining worker takes the seed, the data path and the
    heartbeat timing it was not given from the study's record, and is refused (``ConfigError``) where
    what it was given would change what the study measures.
    """
    storage = None
    if "data_path" not in config.explicit:  # a resume without --data reads the study's data
        try:
            storage = _open(config, must_exist=True)
        except StudyNotFoundError:
            pass  # no database file yet: nothing to resume
        else:
            config = _adopt(config, _recorded_provenance(storage, config.study_name))
    spec = config.spec
    # Given data is read before the storage is opened: a data mistake creates no database.
    data = load_tuning_data(
        dataset=spec.dataset,
        data_path=config.data_path,
        validation_fraction=spec.validation_fraction,
        split_seed=spec.split_seed,
        options=spec.data_options,
    )
    check_space_fits_data(spec.space, spec.family, data.image_shape, source=spec.source, data=data.source)
    storage = storage or _open(config)
    queued = _Queued()
    with StudyLock(storage, config.study_name):
        recorded = _recorded_provenance(storage, config.study_name)  # another worker may have created it meanwhile
        if recorded is not None:
            config = _adopt(config, recorded)
            recorded.check_same(_provenance(config, data), explicit=config.explicit, study_name=config.study_name)
        storage.heartbeat_interval, storage.grace_period = config.heartbeat_interval, config.grace_period
        spec = config.spec
        study = optuna.create_study(
            study_name=config.study_name,
            storage=storage,
            sampler=TrialSeededSampler(spec.sampler),
            pruner=make_pruner(spec.pruner, max_epochs=spec.max_epochs),
            direction="minimize",
            load_if_exists=True,
        )
        if recorded is None and not study.get_trials(deepcopy=False):
            queued = _queue_first_trials(study, config)
            _provenance(config, data).record(study)  # last: it marks the study as set up for workers that join
    warm = queued.warm
    start = RunStart(
        study_name=config.study_name,
        storage=describe_storage(config.storage_url),
        data_source=data.source,
        n_target=config.n_trials,
        n_finished_before=Tally.of(study.get_trials(deepcopy=False)).finished,
        n_portfolio_enqueued=queued.portfolio,
        n_baselines_enqueued=queued.baselines,
        n_train=len(data.x_train),
        n_val=len(data.x_val),
        n_warm_started=warm.enqueued if warm else 0,
        warm_start_source=warm.source_study if warm else None,
    )
    return PreparedStudy(study=study, storage=storage, data=data, start=start, config=config)


@dataclass(frozen=True)
class _Queued:
    """What a new study's first worker queued before the sampler's own trials."""

    warm: WarmStart | None = None
    portfolio: int = 0
    baselines: int = 0


def _queue_first_trials(study: optuna.Study, config: RunConfig) -> _Queued:
    """A new study's first trials, in this order: the warm start, the portfolio, the baselines (as far as ``n_trials`` allows)."""
    spec = config.spec
    warm = None
    if config.warm_start_from:
        warm = enqueue_warm_start(
            study=study,
            space=spec.space,
            source_storage_url=config.warm_start_storage or config.storage_url,
            source_study_name=config.warm_start_from,
            top_k=up_to_target(config.warm_start_top, config.n_trials),
        )
    portfolio = baselines = 0
    if config.portfolio:
        queued = [(params, _portfolio_attributes(entry, spec.max_epochs)) for entry, params in portfolio_params(spec)]
        portfolio = _enqueue(study, queued, config.n_trials)
    if config.baselines:
        attributes = _budget_attributes({BASELINE_ATTR: True}, share_of_epoch_budget(BASELINE_BUDGET_SHARE, spec.max_epochs))
        baselines = _enqueue(study, [(params, attributes) for params in baseline_params(spec)], config.n_trials)
    return _Queued(warm=warm, portfolio=portfolio, baselines=baselines)


def _open(config: RunConfig, *, must_exist: bool = False) -> optuna.storages.RDBStorage:
    return open_storage(
        config.storage_url, must_exist=must_exist, heartbeat_interval=config.heartbeat_interval, grace_period=config.grace_period
    )


def _recorded_provenance(storage: optuna.storages.RDBStorage, study_name: str) -> StudyProvenance | None:
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:  # a new study
        return None
    return StudyProvenance.from_attrs(storage.get_study_user_attrs(study_id).get(PROVENANCE_ATTR))


def _adopt(config: RunConfig, recorded: StudyProvenance | None) -> RunConfig:
    """The settings the run left out, taken from the study's record (the seed, the data, the heartbeat timing)."""
    if recorded is None:
        return config
    if "seed" not in config.explicit and recorded.seed != config.seed:
        config = replace(config, seed=recorded.seed, spec=replace(config.spec, sampler=replace(config.spec.sampler, seed=recorded.seed)))
    if "data_path" not in config.explicit and recorded.data_path != config.data_path:
        config = replace(config, data_path=recorded.data_path)
    # (A given heartbeat timing that disagrees is refused by check_same.)
    if "heartbeat_interval" not in config.explicit and recorded.heartbeat_interval:
        config = replace(config, heartbeat_interval=int(recorded.heartbeat_interval))
    if "grace_period" not in config.explicit and recorded.grace_period:
        config = replace(config, grace_period=int(recorded.grace_period))
    return config


def _provenance(config: RunConfig, data: TuningData) -> StudyProvenance:
    """What the final training job needs to rebuild the search's data split and training settings, and what a resume must keep."""
    spec = config.spec
    return StudyProvenance(
        study_file=spec.source,
        dataset=spec.dataset,
        data_path=config.data_path,
        data_checksum=data.checksum,
        validation_fraction=spec.validation_fraction,
        split_seed=spec.split_seed,
        data_options=spec.data_options,
        seed=config.seed,
        objectives=tuple(spec.objectives),
        steps_per_execution=spec.training.steps_per_execution,
        jit_compile=spec.training.jit_compile,
        heartbeat_interval=config.heartbeat_interval,
        grace_period=config.grace_period,
        family=spec.family,
    )


def _portfolio_attributes(entry: PortfolioEntry, max_epochs: int) -> dict[str, Any]:
    return _budget_attributes({PORTFOLIO_ATTR: entry.name}, entry.epoch_budget(max_epochs))


def _budget_attributes(attributes: dict[str, Any], budget: int | None) -> dict[str, Any]:
    return attributes if budget is None else {**attributes, EPOCH_BUDGET_ATTR: budget}


def _enqueue(study: optuna.Study, configurations: Sequence[tuple[dict[str, Any], dict[str, Any]]], n_trials: int | None) -> int:
    """Enqueue (params, user attributes) pairs while the study's total allows; returns how many were added."""
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    room = len(configurations) if n_trials is None else max(0, n_trials - waiting)
    for params, attributes in configurations[:room]:
        study.enqueue_trial(params, user_attrs=attributes, skip_if_exists=True)  # a warm start may hold it already
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))) - waiting


def run_study(
    *,
    config: RunConfig,
    on_start: Callable[[RunStart], None] | None = None,
    on_trial_end: Callable[[TrialEnded], None] | None = None,
    on_convergence: Callable[[Convergence], None] | None = None,
) -> RunResult:
    """Create, join or resume the study and run trials until it holds ``config.n_trials`` finished trials
    (None: until ``config.timeout``).

    Any number of processes may run this on one study at once (see ``StudyLock``): each takes a new
    trial only while fewer than ``n_trials`` are finished or running. Once the others hold the last
    trials, a worker waits for them, so that it can retry a trial whose worker died.
    ``on_trial_end`` gets a ``TrialEnded`` after every trial of this process, then
    ``on_convergence`` with the estimate of how much better the study can still get; with
    ``config.until_converged`` the run stops once that estimate says the study has converged.

    Args:
        config: the run's settings (``resolve_run_config``).
        on_start: called once the data is loaded and the study created or joined.
        on_trial_end: called after each trial of this process.
        on_convergence: called after each trial with the convergence estimate.

    Returns a ``RunResult``; raises ``ConfigError``, ``DataError`` or ``StorageError``.

    Example::

        config = resolve_run_config(study_file="studies/mnist_mlp.toml", n_trials=20)
        result = run_study(config=config)
        print(result.best.value if result.best else "no completed trial")
    """
    started = time.perf_counter()
    prepared = prepare_study(config)
    config = prepared.config
    study = prepared.study
    if on_start:
        on_start(prepared.start)

    outcomes: list[TrialOutcome] = []
    converged: list[Convergence] = []

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        from tuner.training import return_free_memory  # loaded by the trial already; TensorFlow stays out of import time

        return_free_memory()
        outcome = TrialOutcome.from_trial(trial)
        outcomes.append(outcome)
        if on_trial_end:
            on_trial_end(TrialEnded(outcome, Tally.of(study.get_trials(deepcopy=False)).finished, best_outcome(study)))
        estimate = estimate_convergence(study, window=config.spec.convergence_window, tolerance=config.spec.convergence_tolerance)
        if on_convergence:
            on_convergence(estimate)
        if config.until_converged and estimate.converged:
            converged.append(estimate)
            study.stop()

    if short_of(config.n_trials, prepared.start.n_finished_before):
        if config.threads:
            from tuner.training import configure_threads

            configure_threads(config.threads)
        from tuner.objective import Objective

        objective = Objective(data=prepared.data, spec=config.spec, seed=config.seed)
        _work(study, objective, StudyLock(prepared.storage, config.study_name), config, after_trial, stop=lambda: bool(converged))
    result = summarize(
        study,
        config.storage_url,
        n_target=config.n_trials,
        new_trials=len(outcomes),
        wall_seconds=time.perf_counter() - started,
        outcomes=outcomes,
    )
    return replace(result, converged=converged[-1] if converged else None)


_RAN, _WAIT, _DONE = "ran", "wait", "done"


def _work(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    lock: StudyLock,
    config: RunConfig,
    after_trial,
    stop: Callable[[], bool],
) -> None:
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    backoff = _Backoff(config.reconnect_timeout, config.storage_url)
    while (deadline is None or time.monotonic() < deadline) and not stop():
        try:
            step = _next_trial(study, objective, lock, config.n_trials, after_trial)
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            backoff.wait(exc)
            continue
        backoff.reset()
        if step == _DONE:
            return
        if step == _WAIT:
            time.sleep(min(5, config.heartbeat_interval))


def _next_trial(study: optuna.Study, objective, lock: StudyLock, n_trials: int | None, after_trial) -> str:
    started: list[optuna.Trial] = []
    interrupted: list[bool] = []
    # Ctrl-C or SIGTERM while Optuna creates the trial would leave it RUNNING with no one to fail and
    # queue it again: it waits until the trial is ours, then lands below.
    held = contextlib.ExitStack()

    def run_unlocked(trial: optuna.Trial) -> float:
        started.append(trial)
        lock.release()  # the trial is RUNNING now and counts for every other worker
        try:
            held.close()
            if trial.user_attrs.get(FAIL_REASON_ATTR) is not None:
                trial.set_user_attr(FAIL_REASON_ATTR, None)  # a retry inherits the attributes of the trial that died
            return objective(trial)
        except KeyboardInterrupt:
            interrupted.append(True)
            # The reason is a courtesy: a database that refuses it now (another worker's sweep failed the
            # trial, or SQLite busy with every worker stopping at once) must not turn the interrupt into an error.
            with contextlib.suppress(Exception):
                trial.set_user_attr(FAIL_REASON_ATTR, "interrupted (Ctrl-C or SIGTERM); queued again with the same parameters")
            raise

    with lock:
        fail_stale_trials(study, lock.storage)  # a dead worker's trial: FAIL, and its retry is queued
        tally = Tally.of(study.get_trials(deepcopy=False))
        if not short_of(n_trials, tally.finished):
            return _DONE
        if not short_of(n_trials, tally.taken):
            return _WAIT  # the last trials run elsewhere; stay to retry one if its worker dies
        held.enter_context(deferred_interrupts())
        try:
            study.optimize(run_unlocked, n_trials=1, callbacks=[after_trial], catch=(Exception,), gc_after_trial=True)
        except KeyboardInterrupt:
            if started:
                _requeue_interrupted(study, started[0])
            raise
        except Exception as exc:
            if started and interrupted:
                # Optuna could not record the interrupted trial (say, SQLite busy with the other workers'
                # stops at the same moment): record and queue it here, then stop as interrupted.
                _requeue_interrupted(study, started[0])
                raise KeyboardInterrupt from exc
            if not started or not _finished_elsewhere(study, started[0]):
                raise
            # Another worker's stale-trial sweep failed (and re-queued) this trial while it trained here:
            # a lost heartbeat, a database blip. Its result cannot be recorded; the study goes on.
            _log.warning(
                "trial %d was marked failed by another worker while this one trained it (%s); dropped it, going on",
                started[0].number,
                database_message(exc),
            )
        finally:
            held.close()  # the trial never started (Optuna could not create it): an interrupt lands here
    return _RAN


def _finished_elsewhere(study: optuna.Study, trial: optuna.Trial) -> bool:
    return study._storage.get_trial(trial._trial_id).state.is_finished()


def _requeue_interrupted(study: optuna.Study, trial: optuna.Trial) -> None:
    """An interrupted trial (Ctrl-C, SIGTERM) is FAIL with its reason; queue it again as a dead worker's trial is.

    The retry records the trial in its ``retry_history``, so the interrupted one does not count towards
    the study's total. Never limited in number: an interrupt is not the configuration's fault.
    """
    frozen = _retrying(lambda: study._storage.get_trial(trial._trial_id))
    if frozen.state == TrialState.RUNNING:  # Optuna's own FAIL did not reach the database
        _retrying(lambda: study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL))
        frozen = _retrying(lambda: study._storage.get_trial(trial._trial_id))
    if frozen.state == TrialState.FAIL:
        _retrying(lambda: optuna.storages.RetryHeartbeatStaleTrialCallback()(study, frozen))


def _retrying(call: Callable[[], Any], *, attempts: int = 5) -> Any:
    """A bookkeeping call made while stopping, retried through a busy or briefly unreachable database.

    Workers stopped together write at the same moment; the parent's grace period (tuner.workers) leaves
    time for these few seconds of retries.
    """
    for attempt in range(attempts):
        try:
            return call()
        except Exception:  # any storage error; the last one is raised
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)


class _Backoff:
    """Waits 1, 2, 4 ... 30 s between attempts while the database is unreachable, for at most ``budget`` seconds in a row."""

    def __init__(self, budget: float, url: str) -> None:
        self.budget = budget
        self.url = url
        self.reset()

    def reset(self) -> None:
        self.since: float | None = None
        self.delay = 1.0

    def wait(self, exc: BaseException) -> None:
        now = time.monotonic()
        self.since = now if self.since is None else self.since
        if now - self.since + self.delay > self.budget:
            raise StorageError(
                f"lost the connection to {storage_location(self.url)} for more than {self.budget:g} s ({database_message(exc)});"
                " finished trials are saved: run the same command again to resume"
            ) from None
        _log.warning("database unreachable (%s); retrying in %g s", database_message(exc), self.delay)
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, 30.0)
