"""What a study measures, recorded when it is created: the one owner of the study's ``tuner`` attribute.

A resume or a joining worker must measure the same thing, so the seed, the data (by checksum), the
validation split, the data options and the heartbeat timing are kept here and compared with what a
later run was explicitly given (``check_same``). What a later run leaves out, it takes from here.
Each trial also records the seed it trained with (``TRIAL_SEED_ATTR``), which ``export-best`` reuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from tuner.errors import ConfigError, StorageError
from tuner.studyfile import MAX_SEED
from tuner.userdata import DataOptions, data_options_from

__all__ = ["PROVENANCE_ATTR", "TRIAL_SEED_ATTR", "StudyProvenance", "trial_seed", "recorded_trial_seed"]

PROVENANCE_ATTR = "tuner"  # study user attribute
TRIAL_SEED_ATTR = "seed"  # trial user attribute: the seed the trial's training used


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``: seeds stay below 2**32 however many trials a study holds."""
    return (seed + number) % (MAX_SEED + 1)


def recorded_trial_seed(trial: FrozenTrial, study_seed: int) -> int:
    """The seed a finished trial recorded; trials from before the record get what their run computed."""
    seed = trial.user_attrs.get(TRIAL_SEED_ATTR)
    return int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else trial_seed(study_seed, trial.number)


@dataclass(frozen=True)
class StudyProvenance:
    study_file: str
    dataset: str
    data_path: str | None
    data_checksum: str | None
    validation_fraction: float
    split_seed: int
    data_options: DataOptions
    seed: int
    objectives: tuple[str, ...] = ("val_loss", "params", "latency")
    steps_per_execution: int = 1
    jit_compile: bool = False
    heartbeat_interval: int | None = None
    grace_period: int | None = None
    family: str = "mlp"  # the study file's [model] family; studies recorded before it were MLPs
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys written by other versions, kept as they were

    def to_attrs(self) -> dict[str, Any]:
        return {
            **self.extra,
            "study_file": self.study_file,
            "dataset": self.dataset,
            "data_path": self.data_path,
            "data_checksum": self.data_checksum,
            "validation_fraction": self.validation_fraction,
            "split_seed": self.split_seed,
            "data_options": asdict(self.data_options),
            "objectives": list(self.objectives),
            "seed": self.seed,
            "steps_per_execution": self.steps_per_execution,
            "jit_compile": self.jit_compile,
            "heartbeat_interval": self.heartbeat_interval,
            "grace_period": self.grace_period,
            "family": self.family,
        }

    @classmethod
    def from_attrs(cls, attrs: Any) -> StudyProvenance | None:
        needed = ("dataset", "validation_fraction", "split_seed")
        if not isinstance(attrs, dict) or any(key not in attrs for key in needed):
            return None
        known = set(cls.__dataclass_fields__) - {"extra"}
        return cls(
            study_file=str(attrs.get("study_file", "")),
            dataset=str(attrs["dataset"]),
            data_path=attrs.get("data_path"),
            data_checksum=attrs.get("data_checksum"),
            validation_fraction=float(attrs["validation_fraction"]),
            split_seed=int(attrs["split_seed"]),
            data_options=data_options_from(attrs),
            seed=int(attrs.get("seed", 0)),
            objectives=tuple(attrs.get("objectives") or cls.objectives),
            steps_per_execution=int(attrs.get("steps_per_execution", 1)),
            jit_compile=bool(attrs.get("jit_compile", False)),
            heartbeat_interval=attrs.get("heartbeat_interval"),
            grace_period=attrs.get("grace_period"),
            family=str(attrs.get("family", "mlp")),
            extra={key: value for key, value in attrs.items() if key not in known},
        )

    @classmethod
    def from_study(cls, study: optuna.Study) -> StudyProvenance | None:
        """The study's record, or None for a study that 'tuner run' did not create (or not yet)."""
        return cls.from_attrs(study.user_attrs.get(PROVENANCE_ATTR))

    @classmethod
    def required(cls, study: optuna.Study) -> StudyProvenance:
        provenance = cls.from_study(study)
        if provenance is None:
            raise StorageError(
                f"study {study.study_name!r} lacks the 'tuner' attribute that 'tuner run' records; cannot tell which data it was tuned on"
            )
        return provenance

    def record(self, study: optuna.Study) -> None:
        study.set_user_attr(PROVENANCE_ATTR, self.to_attrs())

    def check_same(self, other: StudyProvenance, *, explicit: frozenset[str], study_name: str) -> None:
        """Refuse, in one line, a run whose settings would change what study ``study_name`` measures.

        The data and its split are always compared (they are what the run loaded); the seed, the data
        path and the heartbeat timing only when the run was given them explicitly.
        """
        compared = [
            ("data_checksum", "data (checksum)"),
            ("validation_fraction", "validation fraction"),
            ("split_seed", "split seed"),
            ("data_options", "data options"),
            ("family", "model family"),
        ]
        compared += [
            (name, label)
            for name, label in (("seed", "seed"), ("heartbeat_interval", "heartbeat interval"), ("grace_period", "grace period"))
            if name in explicit
        ]
        for name, label in compared:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine is None or mine == theirs:
                continue  # a study from before the record: nothing to compare with
            if name == "data_options":
                mine, theirs = _differing_options(mine, theirs)
            raise ConfigError(
                f"study {study_name!r} was created with {label} {_show(mine)}, this run has {_show(theirs)};"
                f" a resumed or joined study keeps its {label}",
                remedy="use the same, or another {study_name}",
            )


def _differing_options(mine: DataOptions, theirs: DataOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    a, b = asdict(mine), asdict(theirs)
    names = [name for name in a if a[name] != b[name]]
    return {name: a[name] for name in names}, {name: b[name] for name in names}


def _show(value: Any) -> str:
    if isinstance(value, str) and value.startswith("sha256:"):
        return value[:19] + "..."
    return repr(value) if isinstance(value, str) else str(value)
