"""The final training job: retrain a finished trial, score it once on the test set, save it.

The library call behind ``tuner export-best``. The model is rebuilt from the trial's recorded
parameters with ``optuna.trial.FixedTrial``, trained for as many epochs as the trial took to its
highest validation accuracy (tuner.selection) on the training data (plus the validation part with
``refit_full``) and evaluated on the test set exactly once.
Files are written to a temporary directory next to the target and renamed into place at the end.
"""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from tuner.data import FinalData, load_final_data
from tuner.errors import ConfigError, ExportError, StorageError, StudyNotFoundError
from tuner.exportmeta import METADATA_FILE, ExportMetadata, ExportRecord, FinalModelScore, ModelInput
from tuner.pareto import best_within_budget
from tuner.predict import MODEL_FILE
from tuner.provenance import TRIAL_SEED_ATTR, StudyProvenance, recorded_trial_seed
from tuner.records import BEST_EPOCH_ATTR, EPOCHS_TRAINED_ATTR, VAL_ACCURACY_ATTR, trained_params
from tuner.selection import final_epochs, most_accurate
from tuner.storage import load_study
from tuner.storageurl import describe_storage, mask_url
from tuner.studyfile import TrainingSpec
from tuner.swap import install_directory

if TYPE_CHECKING:
    import keras

__all__ = [
    "METADATA_FILE",
    "MODEL_FILE",
    "EpochProgress",
    "ExportStart",
    "ExportResult",
    "default_export_dir",
    "export_best",
]

_EVAL_BATCH = 2048


@dataclass(frozen=True)
class ExportStart:
    study_name: str
    storage: str
    trial_number: int
    is_best: bool
    params: dict[str, Any]
    epochs: int
    n_train: int
    n_test: int
    data_source: str
    out: Path


@dataclass(frozen=True)
class EpochProgress:
    epoch: int
    epochs: int
    loss: float
    accuracy: float


@dataclass(frozen=True)
class ExportResult:
    study_name: str
    trial_number: int
    is_best: bool
    params: dict[str, Any]
    val_loss: float
    val_accuracy: float | None
    test_loss: float
    test_accuracy: float
    n_test: int
    epochs: int
    seed: int
    out: Path
    model_path: Path
    metadata_path: Path
    replaced: bool
    wall_seconds: float


def default_export_dir(study_name: str) -> Path:
    """``artifacts/<study>`` under the working directory, the name made safe for a path."""
    return Path("artifacts") / (re.sub(r"[^A-Za-z0-9._-]+", "_", study_name).strip("._") or "study")


def export_best(
    *,
    storage_url: str,
    study_name: str | None = None,
    trial_number: int | None = None,
    out: str | Path | None = None,
    data_path: str | None = None,
    refit_full: bool = True,
    force: bool = False,
    max_params: int | None = None,
    max_latency_ms: float | None = None,
    allow_other_data: bool = False,
    on_start: Callable[[ExportStart], None] | None = None,
    on_epoch: Callable[[EpochProgress], None] | None = None,
) -> ExportResult:
    """Train the most accurate completed trial (or ``trial_number``) as the final model and write it to ``out``.

    Args:
        storage_url: SQLAlchemy URL of the study database.
        study_name: the study; None for the storage's only study.
        trial_number: export this completed trial instead of the most accurate one.
        out: the export directory (default ``artifacts/<study>``).
        data_path: train on this data instead of the study's; data other than the study's (by checksum)
            is refused unless ``allow_other_data``, and model.json then records both checksums.
        refit_full: train on the validation part too.
        force: replace an existing export at ``out``.
        max_params, max_latency_ms: export the most accurate trial within this budget instead.
        on_start, on_epoch: progress callbacks.

    The trial is the completed one of highest validation accuracy (tuner.selection), within the budget
    if one is given; the model trains with the seed its trial trained with. Raises ``ConfigError``,
    ``StudyNotFoundError``, ``StorageError``, ``DataError`` or ``ExportError``.

    Example::

        result = export_best(storage_url="sqlite:///tuner.db", out="artifacts/mnist")
        print(result.test_accuracy, result.model_path)
    """
    started, started_at = time.perf_counter(), _now()
    if data_path is not None and not data_path.strip():
        raise ConfigError("data_path must not be empty (None trains on the data the study was tuned on)")
    if trial_number is not None and (max_params is not None or max_latency_ms is not None):
        raise ConfigError("trial_number cannot be combined with max_params or max_latency_ms")
    if out is not None:
        _check_target(Path(out), force=force)  # fail before anything slow
    study = load_study(storage_url=storage_url, study_name=study_name)
    chosen = _choose_trial(study, trial_number=trial_number, max_params=max_params, max_latency_ms=max_latency_ms)
    target = Path(out) if out is not None else default_export_dir(study.study_name)
    _check_target(target, force=force)
    job = _prepare_job(study, chosen, data_path=data_path, allow_other_data=allow_other_data, refit_full=refit_full)
    if on_start:
        on_start(_export_start(job, storage_url, target))
    model, history, train_seconds = _train(job, on_epoch=on_epoch)
    test = _evaluate(model, job.final)
    metadata = _metadata(job, storage_url, test=test, history=history, train_seconds=train_seconds, started_at=started_at)
    replaced = _write_export(target, model, metadata, force=force)
    _record(study, target, chosen.trial.number, test, metadata.finished_at)
    return _result(job, test, target=target, replaced=replaced, wall_seconds=time.perf_counter() - started)


@dataclass(frozen=True)
class _Chosen:
    """The trial to export and why it was chosen."""

    trial: FrozenTrial
    is_best: bool  # the study's most accurate trial (within the budget, if one was given)
    selected: str  # model.json's "selected": "best", "within-budget" or "chosen"


@dataclass(frozen=True)
class _Job:
    """Everything the final training needs, settled before it starts."""

    study_name: str
    chosen: _Chosen
    provenance: StudyProvenance
    final: FinalData
    other_data: bool  # trains on data other than the study's (allowed by allow_other_data)
    epochs: int
    seed: int
    refit_full: bool
    x_fit: np.ndarray
    y_fit: np.ndarray

    @property
    def trial(self) -> FrozenTrial:
        return self.chosen.trial


def _choose_trial(study: optuna.Study, *, trial_number: int | None, max_params: int | None, max_latency_ms: float | None) -> _Chosen:
    if max_params is not None or max_latency_ms is not None:
        trial = best_within_budget(study=study, max_params=max_params, max_latency_ms=max_latency_ms)
        return _Chosen(trial=trial, is_best=True, selected="within-budget")  # the best of those the budget allows
    trial = _pick_trial(study, trial_number)
    is_best = trial_number is None or trial.number == _pick_trial(study, None).number
    return _Chosen(trial=trial, is_best=is_best, selected="best" if is_best else "chosen")


def _prepare_job(study: optuna.Study, chosen: _Chosen, *, data_path: str | None, allow_other_data: bool, refit_full: bool) -> _Job:
    """The study's record, the data (refused if it is not the study's, unless allowed), the epochs and the seed."""
    provenance = StudyProvenance.required(study)
    epochs = _final_epochs(chosen.trial)
    final = load_final_data(
        dataset=provenance.dataset,
        data_path=data_path or provenance.data_path,
        validation_fraction=provenance.validation_fraction,
        split_seed=provenance.split_seed,
        options=provenance.data_options,
    )
    tuned = provenance.data_checksum
    other_data = tuned is not None and final.tuning.checksum != tuned
    if tuned is not None and other_data and not allow_other_data:
        raise ConfigError(
            f"the data at {final.tuning.source} is not what study {study.study_name!r} was tuned on"
            f" (checksum {final.tuning.checksum[:19]}... instead of {tuned[:19]}...)",
            remedy="leave out {data_path}, or pass {allow_other_data}",
        )
    x_fit, y_fit = _fit_data(final, refit_full)
    return _Job(
        study_name=study.study_name,
        chosen=chosen,
        provenance=provenance,
        final=final,
        other_data=other_data,
        epochs=epochs,
        seed=recorded_trial_seed(chosen.trial, provenance.seed),
        refit_full=refit_full,
        x_fit=x_fit,
        y_fit=y_fit,
    )


def _export_start(job: _Job, storage_url: str, target: Path) -> ExportStart:
    return ExportStart(
        study_name=job.study_name,
        storage=describe_storage(storage_url),
        trial_number=job.trial.number,
        is_best=job.chosen.is_best,
        params=dict(job.trial.params),
        epochs=job.epochs,
        n_train=len(job.x_fit),
        n_test=len(job.final.x_test),
        data_source=job.final.tuning.source,
        out=target,
    )


def _metadata(
    job: _Job, storage_url: str, *, test: FinalModelScore, history: list[dict[str, float]], train_seconds: float, started_at: str
) -> ExportMetadata:
    trial, provenance, tuning = job.trial, job.provenance, job.final.tuning
    return ExportMetadata(
        study_name=job.study_name,
        storage=mask_url(storage_url),
        trial_number=trial.number,
        selected=job.chosen.selected,
        params=trained_params(trial),  # what the model was built from (a quick lead's epochs are its budget)
        trial={
            "val_loss": trial.value,
            "val_accuracy": _peak_accuracy(trial),
            "best_epoch": job.epochs,  # the epoch of that accuracy, which the final model trains to
            "lowest_loss_epoch": trial.user_attrs.get(BEST_EPOCH_ATTR),
            "epochs_trained": trial.user_attrs.get(EPOCHS_TRAINED_ATTR),
        },
        test=test,
        training={
            "epochs": job.epochs,
            "batch_size": trial.params["batch_size"],
            "refit_full": job.refit_full,
            "n_samples": len(job.x_fit),
            "seed": job.seed,
            "seed_source": "the trial's own" if TRIAL_SEED_ATTR in trial.user_attrs else "the study's seed + trial number",
            "seconds": round(train_seconds, 3),
        },
        history=history,
        data={
            "dataset": provenance.dataset,
            "source": tuning.source,
            "checksum": tuning.checksum,
            "tuned_checksum": provenance.data_checksum if job.other_data else None,  # set only with allow_other_data
            "validation_fraction": provenance.validation_fraction,
            "split_seed": provenance.split_seed,
        },
        model_input=_model_input(tuning, provenance),
        family=provenance.family,
        versions=_versions(),
        started_at=started_at,
        finished_at=_now(),
    )


def _result(job: _Job, test: FinalModelScore, *, target: Path, replaced: bool, wall_seconds: float) -> ExportResult:
    trial = job.trial
    return ExportResult(
        study_name=job.study_name,
        trial_number=trial.number,
        is_best=job.chosen.is_best,
        params=dict(trial.params),
        val_loss=float(trial.value) if trial.value is not None else math.nan,
        val_accuracy=trial.user_attrs.get(VAL_ACCURACY_ATTR),
        test_loss=test.loss,
        test_accuracy=test.accuracy,
        n_test=test.n_samples,
        epochs=job.epochs,
        seed=job.seed,
        out=target,
        model_path=target / MODEL_FILE,
        metadata_path=target / METADATA_FILE,
        replaced=replaced,
        wall_seconds=wall_seconds,
    )


def _pick_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if number is None:
        if not complete:
            raise StudyNotFoundError(
                f"study {study.study_name!r} has no completed trial yet ({len(trials)} trials in all); run 'tuner run' first"
            )
        selection = most_accurate(complete)
        if selection is None:
            raise StudyNotFoundError(f"study {study.study_name!r} has no completed trial with a value")
        return selection.trial
    chosen = next((t for t in trials if t.number == number), None)
    if chosen is None:
        raise StudyNotFoundError(
            f"study {study.study_name!r} has no trial {number} (trials are numbered 0 to {len(trials) - 1})"
            if trials
            else f"study {study.study_name!r} has no trials"
        )
    if chosen.state != TrialState.COMPLETE:
        numbers = ", ".join(str(t.number) for t in complete[:20]) or "none"
        raise StudyNotFoundError(
            f"trial {number} of study {study.study_name!r} is {chosen.state.name}, not COMPLETE; completed trials: {numbers}"
        )
    return chosen


def _model_input(tuning, provenance: StudyProvenance) -> ModelInput:
    """What predict must know to feed this model: its kind of input, class names, standardisation, image size."""
    options = provenance.data_options
    return ModelInput(
        kind=tuning.kind,
        input_dim=tuning.input_dim,
        n_classes=tuning.n_classes,
        class_names=tuple(tuning.class_names) if tuning.class_names else tuple(str(i) for i in range(tuning.n_classes)),
        feature_names=tuning.feature_names,
        label_column=options.label_column if tuning.kind == "table" else None,
        feature_mean=None if tuning.feature_mean is None else tuple(float(v) for v in tuning.feature_mean),
        feature_std=None if tuning.feature_std is None else tuple(float(v) for v in tuning.feature_std),
        image_size=(options.image_size[0], options.image_size[1]) if tuning.kind == "images" else None,
        color=options.color if tuning.kind == "images" else False,
    )


def _peak_accuracy(trial: FrozenTrial) -> float | None:
    selection = most_accurate([trial])
    return selection.val_accuracy if selection is not None else trial.user_attrs.get(VAL_ACCURACY_ATTR)


def _final_epochs(trial: FrozenTrial) -> int:
    epochs = final_epochs(trial)
    if epochs is None:
        raise StorageError(f"trial {trial.number} has no epoch log and no 'best_epoch' attribute (was it run by 'tuner run'?)")
    return epochs


def _fit_data(final: FinalData, refit_full: bool) -> tuple[np.ndarray, np.ndarray]:
    data = final.tuning
    if not refit_full:
        return data.x_train, data.y_train
    return np.concatenate([data.x_train, data.x_val]), np.concatenate([data.y_train, data.y_val])


def _train(job: _Job, *, on_epoch: Callable[[EpochProgress], None] | None) -> tuple[keras.Model, list[dict[str, float]], float]:
    import keras

    from tuner.model import missing_params, rebuild_model

    trial, final, x, y, epochs = job.trial, job.final, job.x_fit, job.y_fit, job.epochs
    missing = missing_params(trial.params, job.provenance.family)
    if missing:
        raise StorageError(f"trial {trial.number} does not record {', '.join(missing)}; it was not run by this version of tuner")
    keras.backend.clear_session(free_memory=True)
    keras.utils.set_random_seed(job.seed)
    training = TrainingSpec(steps_per_execution=job.provenance.steps_per_execution, jit_compile=job.provenance.jit_compile)
    # The schedule spans the trial's whole epoch budget over this (larger) training set, and the job
    # trains the trial's best epoch count of it: the same learning rate at every epoch as in the search.
    model, _ = rebuild_model(
        trained_params(trial),
        input_dim=final.tuning.input_dim,
        n_classes=final.tuning.n_classes,
        n_samples=len(x),
        training=training,
        family=job.provenance.family,
        image_shape=final.tuning.image_shape,
    )

    def epoch_end(epoch: int, logs: dict[str, Any] | None) -> None:
        logs = logs or {}
        loss = float(logs.get("loss", np.nan))
        if not np.isfinite(loss):
            raise ExportError(f"the final training diverged: loss became {loss} at epoch {epoch + 1}; nothing was written")
        if on_epoch:
            on_epoch(EpochProgress(epoch=epoch + 1, epochs=epochs, loss=loss, accuracy=float(logs.get("accuracy", np.nan))))

    validation = None if job.refit_full else (final.tuning.x_val, final.tuning.y_val)
    started = time.perf_counter()
    fit = model.fit(
        x,
        y,
        batch_size=trial.params["batch_size"],
        epochs=epochs,
        validation_data=validation,
        validation_batch_size=_EVAL_BATCH,
        callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=epoch_end)],
        shuffle=True,
        verbose=0,
    )
    seconds = time.perf_counter() - started
    history = [
        {"epoch": i + 1, **{name: float(values[i]) for name, values in fit.history.items()}} for i in range(len(fit.history["loss"]))
    ]
    return model, history, seconds


def _evaluate(model: keras.Model, final: FinalData) -> FinalModelScore:
    """The one look at the test set: cross-entropy (without the L2 penalty, like the objective), accuracy, confusion."""
    probabilities = np.asarray(model.predict(final.x_test, batch_size=_EVAL_BATCH, verbose=0), dtype=np.float64)
    labels = final.y_test
    predicted = probabilities.argmax(axis=1)
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)  # Keras' own epsilon
    n_classes = final.tuning.n_classes
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    return FinalModelScore(
        loss=float(-np.log(picked).mean()),
        accuracy=float((predicted == labels).mean()),
        n_samples=int(len(labels)),
        confusion_matrix=confusion.tolist(),
    )


def _check_target(target: Path, *, force: bool) -> None:
    """Refuse before training what the final rename would refuse, and never replace a non-export."""
    try:
        _check_target_path(target, force=force)
    except OSError as exc:  # e.g. a name too long for the file system
        raise ExportError(f"cannot use output path {target}: {exc.strerror or exc}") from None


def _check_target_path(target: Path, *, force: bool) -> None:
    writable = next((p for p in target.resolve().parents if p.exists()), None)
    if writable is not None and not os.access(writable, os.W_OK):  # a read-only mount refuses even root
        raise ExportError(f"cannot write to {writable} (read-only file system or no permission); any earlier export is unchanged")
    if not target.resolve().name:
        raise ExportError(f"output path {target} is a file system root; choose a directory for the export")
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ExportError(f"output path {target} exists and is not a directory", remedy="choose another {out}")
    if not target.exists() or not any(target.iterdir()):
        return
    metadata = target / METADATA_FILE
    if not metadata.is_file():
        raise ExportError(
            f"output directory {target} is not empty and holds no {METADATA_FILE}; refusing to replace it", remedy="choose another {out}"
        )
    if not force:
        raise ExportError(f"{target} already holds an export", remedy="pass {force} to replace it")


def _write_export(target: Path, model: keras.Model, metadata: ExportMetadata, *, force: bool) -> bool:
    """Write into a sibling temp dir, then rename into place; on any failure the old export stays."""
    try:
        target = target.resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        # Same parent, so the final rename stays on one file system; mkdir keeps the user's umask.
        staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        staging.mkdir()
    except OSError as exc:
        raise ExportError(f"cannot create {target.parent}: {exc.strerror or exc}") from None
    try:
        model.save(staging / MODEL_FILE)
        _write_json(staging / METADATA_FILE, metadata)
        _check_target(target, force=force)  # it may have appeared while we trained
        return install_directory(staging, target)
    except OSError as exc:
        raise ExportError(f"cannot write {target}: {exc.strerror or exc}; the previous contents are unchanged") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_json(path: Path, metadata: ExportMetadata) -> None:
    metadata.write(path)


def _record(study: optuna.Study, target: Path, trial_number: int, test: FinalModelScore, when: str) -> None:
    record = ExportRecord(
        path=str(target.resolve()), trial=trial_number, test_accuracy=test.accuracy, test_loss=test.loss, exported_at=when
    )
    try:
        record.save(study)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StorageError(f"the export was written to {target}, but recording it in the study failed: {exc}") from None


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    import tuner

    return {
        "tuner": tuner.__version__,
        "optuna": optuna.__version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
