"""A worker's memory stays flat over trials: no trial's traced graphs outlive it.

Counts objects, not bytes, so the check is exact on a noisy machine; benchmarks/memory.py and
benchmarks/soak.py measure the resident set over hundreds of trials.
"""

from __future__ import annotations

import gc

import pytest

from tests.helpers import MNIST_SMALL
from tuner.config import resolve_run_config
from tuner.runner import run_study

# Runs real trials to measure what they leave behind.
pytestmark = pytest.mark.slow


def _live_graphs() -> int:
    from tensorflow.python.framework.func_graph import FuncGraph

    gc.collect()
    return sum(isinstance(obj, FuncGraph) for obj in gc.get_objects())


def _custom_gradients() -> int:
    from tensorflow.python.framework import ops

    return sum(name.startswith("CustomGradient-") for name in ops._gradient_registry._registry)


def test_trials_leave_no_traced_graphs_or_gradient_functions_behind(tiny_study_file, sqlite_url):
    readings: list[tuple[int, int]] = []
    config = resolve_run_config(study_file=tiny_study_file, storage_url=sqlite_url, data_path=str(MNIST_SMALL), n_trials=6, baselines=False)
    run_study(config=config, on_trial_end=lambda ended: readings.append((_live_graphs(), _custom_gradients())))
    assert len(readings) == 6
    # The first trials may warm caches TensorFlow keeps for the process; after that, nothing accumulates.
    # Before the fix each trial left about 7 graphs and their gradient functions (tensorflow#97697).
    assert readings[-1] <= readings[2], readings
