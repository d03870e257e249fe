"""The wall-clock bounds the tests used to assert, measured as a benchmark.

On a loaded machine a time bound in a test fails for reasons that are not the code's, so the tests
keep what happened and this keeps how long it took.

1. ``tuner --help`` answers in a fresh interpreter within 5 s (it imports neither TensorFlow nor Keras).
2. ``tuner run --trials 8`` of the tests' tiny study on the MNIST fixture finishes within 120 s.
3. ``export-best`` to a read-only file system refuses within 20 s, before any training (needs root to
   mount a tmpfs; otherwise reported as skipped).
4. A trial orphaned before its first heartbeat is failed and retried, and a 2-trial run finishes, within
   60 s (before the fix it waited for the orphan until the run's 90 s timeout).

    python -m benchmarks.wall_clock [--only help,run,read_only,orphan] [--out DIR]

Prints one JSON object; each figure has its seconds, its limit and whether it was met.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, emit
from tests.helpers import MNIST_SMALL, TINY_STUDY

LIMITS_S = {"help": 5.0, "run": 120.0, "read_only": 20.0, "orphan": 60.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default=",".join(LIMITS_S), help="comma-separated figures to measure (default: %(default)s)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON result (default: %(default)s)")
    args = p.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(LIMITS_S))
    if unknown:
        p.error(f"unknown figure(s) {', '.join(unknown)} (expected {', '.join(LIMITS_S)})")
    os.environ.setdefault("TUNER_WORKERS", "1")  # in-process, as the tests ran these
    os.environ.setdefault("TUNER_ENV_FILE", "")
    measures: dict[str, Callable[[Path], dict[str, Any]]] = {
        "help": lambda _: _timed(_cli_help),
        "run": lambda folder: _timed(lambda: _tiny_run(folder)),
        "read_only": _read_only_export,
        "orphan": _orphan_recovery,
    }
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="wall-clock-") as tmp:
        for name in chosen:
            folder = Path(tmp) / name
            folder.mkdir()
            figure = measures[name](folder)
            if "seconds" in figure:
                figure.update(limit_s=LIMITS_S[name], met=figure["seconds"] < LIMITS_S[name])
            figures[name] = figure
            print(f"[wall_clock] {name}: {figure}", file=sys.stderr, flush=True)
    emit("wall_clock", {"figures": figures}, args.out)


def _timed(action: Callable[[], object]) -> dict[str, Any]:
    started = time.perf_counter()
    action()
    return {"seconds": round(time.perf_counter() - started, 2)}


def _cli_help() -> None:
    subprocess.run([sys.executable, "-m", "tuner", "--help"], check=True, capture_output=True)


def _tiny_run(folder: Path) -> str:
    """Eight trials of the tests' tiny study, in-process as tests/test_cli_run.py ran them; returns the storage URL."""
    from click.testing import CliRunner

    from tuner.cli import main

    study_file = folder / "tiny.toml"
    study_file.write_text(TINY_STUDY)
    url = f"sqlite:///{folder / 'study.db'}"
    args = ["run", "--trials", "8", "--study-file", str(study_file), "--storage", url, "--data", str(MNIST_SMALL)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(f"tuner run failed ({result.exit_code}): {result.output[-2000:]}")
    return url


def _read_only_export(folder: Path) -> dict[str, Any]:
    """Export-best into a read-only tmpfs: the refusal must come before the final model trains."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return {"skipped": "mounting a tmpfs needs root"}
    from click.testing import CliRunner

    from tuner.cli import main

    url = _tiny_run(folder)
    mount = folder / "mnt"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,ro", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        return {"skipped": "this machine does not allow mounting a tmpfs"}
    try:
        started = time.perf_counter()
        result = CliRunner().invoke(main, ["export-best", "--storage", url, "--out", str(mount / "model"), "--quiet"])
        seconds = round(time.perf_counter() - started, 2)
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)
    if result.exit_code != 5 or "read-only file system" not in result.stderr:
        raise SystemExit(f"export-best to a read-only file system did not refuse ({result.exit_code}): {result.output[-2000:]}")
    return {"seconds": seconds}


def _orphan_recovery(folder: Path) -> dict[str, Any]:
    """tests/test_stale_trials.py's orphan: a RUNNING trial without a heartbeat, then a 2-trial run."""
    import optuna

    from tuner.config import resolve_run_config
    from tuner.runner import run_study
    from tuner.storage import open_storage

    study_file = folder / "tiny.toml"
    study_file.write_text(TINY_STUDY)
    url = f"sqlite:///{folder / 'study.db'}"
    config = resolve_run_config(
        study_file=study_file,
        storage_url=url,
        data_path=str(MNIST_SMALL),
        n_trials=2,
        baselines=False,
        heartbeat_interval=1,
        grace_period=2,
        timeout=90,
    )
    storage = open_storage(url, heartbeat_interval=1, grace_period=2)
    orphan = optuna.create_study(study_name=config.study_name, storage=storage).ask()
    orphan.suggest_int("n_layers", 0, 2)
    time.sleep(2.5)  # past the grace period, before the clock starts, as in the test
    figure = _timed(lambda: run_study(config=config))
    trials = optuna.load_study(study_name=config.study_name, storage=url).get_trials(deepcopy=False)
    if trials[orphan.number].state != optuna.trial.TrialState.FAIL:
        raise SystemExit(f"the orphaned trial ended {trials[orphan.number].state.name}, not FAIL")
    return figure


if __name__ == "__main__":
    main()
