"""Shared pieces of the benchmarks: arguments, data, clocks, the machine's matmul rate and JSON output.

Every benchmark compares arms measured in the same process run, interleaved where it can, because
the figures are ratios: absolute seconds on a shared machine are context, not results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Optuna's advice (fixed values outside a range, heartbeats outside optimize) is noise in a benchmark's output.
warnings.filterwarnings("ignore", message=r"(Fixed parameter .* out of range|Heartbeat of storage|.*is experimental)")

RESULTS = Path(__file__).parent / "results"
REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_DATA = os.environ.get("TUNER_DATA", "/work/shared/data/mnist")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", default=DEFAULT_DATA, help="MNIST IDX directory or .npz (default: $TUNER_DATA or %(default)s)")
    p.add_argument("--quick", action="store_true", help="the small size used by run_all --quick")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON result (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0: TensorFlow's choice)")
    return p


def start_tensorflow(threads: int) -> None:
    """Import TensorFlow with the requested pools; must run before any other TensorFlow call."""
    if threads:
        from tuner.training import configure_threads

        configure_threads(threads)


def tuning_data(data_path: str, *, train_limit: int | None = None):
    """The tuning split every benchmark uses (10% validation, split seed 0), optionally cut for a quick run."""
    from tuner.data import load_tuning_data

    data = load_tuning_data(dataset="mnist", data_path=data_path, validation_fraction=0.1, split_seed=0)
    if train_limit and train_limit < len(data.x_train):
        data = replace(data, x_train=data.x_train[:train_limit], y_train=data.y_train[:train_limit])
    return data


def small_dataset(data_path: str, n_samples: int, folder: Path) -> str:
    """The first ``n_samples`` training images (and 100 test images) as an .npz, for runs that load data themselves."""
    from tuner.data import load_final_data

    final = load_final_data(dataset="mnist", data_path=data_path, validation_fraction=0.1, split_seed=0)
    path = folder / f"mnist-{n_samples}.npz"
    x = np.concatenate([final.tuning.x_train, final.tuning.x_val])[:n_samples]
    y = np.concatenate([final.tuning.y_train, final.tuning.y_val])[:n_samples]
    np.savez(path, x_train=x, y_train=y, x_test=final.x_test[:100], y_test=final.y_test[:100])
    return str(path)


def matmul_gflops(*, n: int = 2048, seconds: float = 2.0) -> float:
    """This machine's float32 matrix-multiply rate through numpy, best of repeated n x n products."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm the BLAS thread pool
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


class Clock:
    """Wall and process-CPU seconds since creation: CPU time is steadier when other jobs share the cores."""

    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall0, time.process_time() - self.cpu0


def epoch_clock():
    """A Keras callback timing each epoch's training part (up to validation) and the whole epoch."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.train: list[float] = []
            self.total: list[float] = []
            self.cpu: list[float] = []
            self._clock: Clock | None = None
            self._train_done: float | None = None

        def on_epoch_begin(self, epoch, logs=None):
            self._clock = Clock()
            self._train_done = None

        def on_test_begin(self, logs=None):
            if self._clock is not None and self._train_done is None:
                self._train_done = self._clock.read()[0]

        def on_epoch_end(self, epoch, logs=None):
            assert self._clock is not None, "on_epoch_begin starts the clock"
            wall, cpu = self._clock.read()
            self.train.append(self._train_done if self._train_done is not None else wall)
            self.total.append(wall)
            self.cpu.append(cpu)
            self._clock = None

    return EpochClock()


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def machine() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_average_1m_at_end": round(load[0], 2),
    }


def code_version(root: Path = REPOSITORY) -> dict[str, Any]:
    """The commit the benchmark ran from and the tracked files changed since it: a result measured on an
    edited copy (an experiment with another default) says so itself. None where ``root`` is not a git checkout."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    # NUL-separated paths: git quotes no name, and a renamed file is listed once, by its new path.
    changed = git("diff", "--name-only", "-z", "-M", "HEAD") if commit else None
    return {
        "commit": commit.strip() if commit else None,
        "changed_files": sorted(path for path in changed.split("\0") if path) if changed is not None else None,
    }


class FreshStorage:
    """A new SQLite file, or a new PostgreSQL database dropped afterwards (its name is generated here, never given)."""

    def __init__(self, backend: str, admin_url: str, folder: Path) -> None:
        self.backend, self.admin_url, self.folder = backend, admin_url, folder
        self.database = f"tuner_bench_{secrets.token_hex(4)}"

    def __enter__(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.folder / (self.database + '.db')}"
        self._admin(f"CREATE DATABASE {self.database}")
        from sqlalchemy.engine import make_url

        return make_url(self.admin_url).set(database=self.database).render_as_string(hide_password=False)

    def __exit__(self, *exc_info) -> None:
        if self.backend != "sqlite":
            self._admin(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")

    def _admin(self, statement: str) -> None:
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.exec_driver_sql(statement)
        engine.dispose()


def write_csv_folder(
    target: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], *, feature_prefix: str, integer_features: bool = False
) -> None:
    """One CSV per split (``train``, ``test``): a column per feature, then ``label``, the folder ``tuner run --data`` reads."""
    target.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in splits.items():
        header = ",".join([*(f"{feature_prefix}{i}" for i in range(x.shape[1])), "label"])
        table = np.column_stack([x.astype(int) if integer_features else x, y]).astype(object)
        table[:, -1] = y.astype(int)
        feature_format = "%d" if integer_features else "%.6f"
        np.savetxt(target / f"{name}.csv", table, delimiter=",", header=header, comments="", fmt=[feature_format] * x.shape[1] + ["%d"])
        print(f"{target / f'{name}.csv'}: {len(y)} rows, {x.shape[1]} features, classes {sorted(set(y.tolist()))}")


def emit(name: str, result: dict[str, Any], out: Path | None) -> dict[str, Any]:
    """Print the result as JSON on stdout (the benchmark's output) and keep a copy under ``out``."""
    result = {"benchmark": name, **result, "machine": machine(), "code": code_version()}
    text = json.dumps(result, indent=2, default=float)
    print(text, flush=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(text + "\n")
    return result


def versions() -> dict[str, str]:
    import keras
    import optuna
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__, "optuna": optuna.__version__, "numpy": np.__version__}
