"""Which arm found the better model: each arm's winning configuration from a time_to_accuracy result,
trained again by tuner with other seeds and scored once on the test set.

An arm's "best validation accuracy" is the maximum over every epoch of every trial it trained, so a
configuration can win it by the luck of its seed (one net's seed moves it by up to a quarter point on
MNIST). This benchmark takes the configuration behind each arm's figure (``best_params`` of each run of
the result file), fixes it as a one-trial study (the default study with every parameter fixed, no
portfolio, no baselines, no pruner) and, once per seed, runs it with ``tuner run --trials 1`` and exports
it with ``tuner export-best`` (trained to its most accurate epoch on the training and validation parts,
scored on the test set), exactly as a user would. Every arm's configuration is trained by the same code,
so what differs is the configuration alone.

    python -m benchmarks.retrain_best benchmarks/results/time_to_accuracy_budget_20261202-004229.json --seeds 0,1
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.common import emit, median, parser

# Keys a rival logs beside the parameters (KerasTuner's bookkeeping), not part of tuner's space.
_NOT_PARAMETERS = ("tuner/",)


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("result", type=Path, help="a time_to_accuracy result file (its runs' best_params)")
    p.add_argument("--seeds", default="0,1", help="comma-separated training seeds per configuration (default %(default)s)")
    p.add_argument("--arms", default="", help="comma-separated arms of the result to retrain (default: all)")
    args = p.parse_args()
    result = json.loads(args.result.read_text())
    wanted = [arm.strip() for arm in args.arms.split(",") if arm.strip()] or list(result["arms"])
    missing = [arm for arm in wanted if arm not in result["arms"]]
    if missing:
        p.error(f"{args.result} holds no arm {', '.join(missing)} (it holds {', '.join(result['arms'])})")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    arms: dict[str, Any] = {}
    for arm in wanted:
        for index, run in enumerate(result["arms"][arm]["runs"]):
            if not run.get("best_params"):
                print(f"[retrain_best] {arm} run {index}: no best_params recorded, skipped", file=sys.stderr, flush=True)
                continue
            retrains = [retrain(run["best_params"], seed=seed, data=args.data, quick=args.quick) for seed in seeds]
            arms.setdefault(arm, []).append(
                {
                    "run_seed": run.get("seed"),
                    "best_accuracy_in_run": run.get("best_accuracy"),
                    "params": fixed_params(run["best_params"]),
                    "retrains": retrains,
                    "median_val_accuracy": _median_of(retrains, "best_val_accuracy"),
                    "median_test_accuracy": _median_of(retrains, "test_accuracy"),
                }
            )
    name = f"retrain_best_{time.strftime('%Y%m%d-%H%M%S')}"
    emit(name, {"source": args.result.name, "data": args.data, "seeds": seeds, "arms": arms}, args.out)


def fixed_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A run's winning parameters without a rival's bookkeeping keys."""
    return {key: value for key, value in params.items() if not key.startswith(_NOT_PARAMETERS)}


def study_text(params: Mapping[str, Any], *, name: str, base: Mapping[str, Any], epochs: int | None = None) -> str:
    """A study file: ``base`` (a parsed study file) with every parameter of its space fixed, those of
    ``params`` first, then any the parameters leave out (``epochs`` for a KerasTuner trial) at the
    base's fixed value; one trial, so no portfolio, baselines or pruner."""
    space = dict(base.get("space", {}))
    for key, value in fixed_params(params).items():
        if key in space:
            space[key] = value
    if epochs is not None:
        space["epochs"] = epochs
    open_keys = sorted(key for key, value in space.items() if isinstance(value, Mapping))
    if open_keys:
        raise SystemExit(f"the configuration leaves {', '.join(open_keys)} unfixed; it is not a trial of this study's space")
    sections = {
        **{key: value for key, value in base.items() if key not in ("space", "sampler", "pruner")},
        "study": {**base.get("study", {}), "name": name, "portfolio": False, "baselines": False},
        "pruner": {"kind": "none"},
        "space": space,
    }
    lines = []
    for section, table in sections.items():
        lines += [f"[{section}]", *(f"{key} = {_toml(value)}" for key, value in table.items())]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string for the names a study holds
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    raise ValueError(f"cannot write {value!r} into a study file")


def retrain(params: Mapping[str, Any], *, seed: int, data: str, quick: bool) -> dict[str, Any]:
    """One configuration, one seed: ``tuner run --trials 1`` then ``tuner export-best``, in a fresh folder."""
    from benchmarks.time_to_accuracy import tuner_epochs
    from tuner.exportmeta import ExportMetadata
    from tuner.studyfile import default_study_file

    base = tomllib.loads(default_study_file().read_text())
    print(f"[retrain_best] seed {seed}: {json.dumps(fixed_params(params))}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="retrain-best-") as folder:
        workdir = Path(folder)
        (workdir / "study.toml").write_text(study_text(params, name="retrain", base=base, epochs=2 if quick else None))
        env = {k: v for k, v in os.environ.items() if not k.startswith("TUNER_")}
        env.update(TUNER_ENV_FILE="", TF_CPP_MIN_LOG_LEVEL="3")
        data_path = str(Path(data).resolve())
        started = time.perf_counter()
        run = [sys.executable, "-m", "tuner", "run", "--trials", "1", "--workers", "1", "--study-file", "study.toml"]
        _call([*run, "--data", data_path, "--seed", str(seed), "-q"], workdir, env)
        trained = time.perf_counter()
        _call([sys.executable, "-m", "tuner", "export-best", "--out", "final", "-q"], workdir, env)
        exported = time.perf_counter()
        metadata = ExportMetadata.from_dir(workdir / "final")
        epochs = tuner_epochs(workdir / "tuner.db")
    return {
        "seed": seed,
        "best_val_accuracy": max((epoch["val_accuracy"] for epoch in epochs), default=None),
        "epochs_trained": len(epochs),
        "export_epochs": len(metadata.history),  # one record per epoch the final model trained
        "test_accuracy": None if metadata.test is None else metadata.test.accuracy,
        "train_seconds": round(trained - started, 1),
        "export_seconds": round(exported - trained, 1),
    }


def _call(command: list[str], workdir: Path, env: dict[str, str]) -> None:
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command[1:4])} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")


def _median_of(retrains: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in retrains if r[key] is not None]
    return median(values) if values else None


if __name__ == "__main__":
    main()
