"""Warm starts: seed a new study with the best configurations of another one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from tuner.errors import ConfigError
from tuner.records import WARM_START_ATTR
from tuner.storage import load_study
from tuner.studyfile import Choice, Fixed, ParamSpec, fit_into_range
from tuner.trials import ranked_by_value

__all__ = ["WarmStart", "warm_start_params", "enqueue_warm_start"]


@dataclass(frozen=True)
class WarmStart:
    source_study: str
    source_trials: tuple[int, ...]
    enqueued: int


def warm_start_params(params: Mapping[str, Any], space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """One old configuration fitted into a new space.

    Parameters the new space lacks or fixes are skipped; numbers are clipped into the new range (onto its step); a
    categorical value the new space does not offer is left for the sampler to choose.
    """
    fitted: dict[str, Any] = {}
    for name, value in params.items():
        spec = space.get(name)
        if spec is None or isinstance(spec, Fixed):
            continue
        if isinstance(spec, Choice):
            if value in spec.choices:
                fitted[name] = value
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        fitted[name] = fit_into_range(spec, value)
    return fitted


def enqueue_warm_start(
    *, study: optuna.Study, space: Mapping[str, ParamSpec], source_storage_url: str, source_study_name: str, top_k: int
) -> WarmStart:
    """Enqueue the ``top_k`` best completed trials of the source study as the next trials of ``study``."""
    if top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}")
    source = load_study(storage_url=source_storage_url, study_name=source_study_name)
    if source.study_name == study.study_name and source._storage is study._storage:
        raise ConfigError(f"the warm start's source is study {study.study_name!r} itself; give another study")
    best = ranked_by_value(source.get_trials(deepcopy=False), direction=source.direction)[:top_k]
    seen: list[dict[str, Any]] = []
    for trial in best:
        params = warm_start_params(trial.params, space)
        if params in seen:
            continue
        seen.append(params)
        study.enqueue_trial(params, user_attrs={WARM_START_ATTR: f"{source.study_name}#{trial.number}"})
    return WarmStart(source_study=source.study_name, source_trials=tuple(t.number for t in best), enqueued=len(seen))
