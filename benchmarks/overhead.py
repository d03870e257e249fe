"""Items 1 and 2: what a trial costs on top of ``model.fit``, and how well training uses the CPU.

1. Per-trial overhead: a trial run by tuner's Objective (Optuna ask/tell on SQLite, reporting and
   pruning checks every epoch, the EpochMonitor) versus the same model, data, batch size and
   compile settings trained with plain ``model.fit`` in the same process. Target: at most 1.05x.
2. Compute efficiency: for two 1024-unit layers at batch 256, the training FLOP rate
   (6 x parameters x samples/s) over numpy's float32 matmul rate, measured in the same run (target
   at least 50%); for the default small model (2 x 128, batch 128), the epoch time with tuner's
   training settings over plain ``model.fit`` with Keras' default settings (target at most 0.6x).

Arms alternate (A, B, A, B, ...) and the figures are medians of per-pair ratios.

    python -m benchmarks.overhead [--quick] [--repeats N] [--epochs N]
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import Clock, emit, epoch_clock, matmul_gflops, median, parser, start_tensorflow, tuning_data, versions
from tuner.records import EPOCHS_TRAINED_ATTR

SMALL = {"n_layers": 2, "units": 128, "dropout": 0.0, "optimizer": "adam", "learning_rate": 1e-3, "batch_size": 128, "l2": 1e-8}
WIDE = {"n_layers": 2, "units": 1024, "dropout": 0.0, "optimizer": "adam", "learning_rate": 1e-3, "batch_size": 256, "l2": 1e-8}


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=None, help="pairs of arms per figure, one more for item 1 (default 2 quick, 3 full)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per fit (default 3 quick, 5 full)")
    args = p.parse_args()
    start_tensorflow(args.threads)
    repeats = args.repeats or (2 if args.quick else 3)
    epochs = args.epochs or (3 if args.quick else 5)
    data = tuning_data(args.data, train_limit=15_000 if args.quick else None)

    from tuner.studyfile import default_study_file, load_study_file

    spec = load_study_file(path=default_study_file())
    result: dict[str, Any] = {
        "n_train": len(data.x_train),
        "n_val": len(data.x_val),
        "epochs": epochs,
        "repeats": repeats,
        "tuner_training": vars(spec.training) | {},
        "versions": versions(),
    }
    result["trial_overhead"] = trial_overhead(data, spec, epochs=epochs, repeats=repeats + 1)
    result["small_model"] = small_model(data, spec, epochs=epochs, repeats=repeats)
    result["wide_model"] = wide_model(data, spec, epochs=max(2, epochs - 1), repeats=max(1, repeats - 1))
    emit("overhead", result, args.out)


def trial_overhead(data, spec, *, epochs: int, repeats: int) -> dict[str, Any]:
    """Item 1: whole trial (ask, build, fit, report, prune checks, tell) versus build + fit alone."""
    from dataclasses import replace

    # No early stopping here, so both arms train exactly the same number of epochs.
    spec = replace(spec, training=replace(spec.training, patience=0))
    params = SMALL | {"epochs": epochs}
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            tuner_wall, tuner_cpu = _tuner_trial(data, spec, params, f"sqlite:///{Path(tmp) / f'overhead{repeat}.db'}")
            plain_wall, plain_cpu = _plain_fit(data, spec.training, params)
            pairs.append({"tuner_s": tuner_wall, "plain_s": plain_wall, "tuner_cpu_s": tuner_cpu, "plain_cpu_s": plain_cpu})
    return {
        "model": params,
        "pairs": _rounded(pairs),
        "tuner_s_per_epoch": median([p["tuner_s"] for p in pairs]) / epochs,
        "plain_s_per_epoch": median([p["plain_s"] for p in pairs]) / epochs,
        # Sums rather than a median of pair ratios: a trial's overhead is small next to the noise of a shared CPU.
        "ratio_wall": sum(p["tuner_s"] for p in pairs) / sum(p["plain_s"] for p in pairs),
        "ratio_cpu": sum(p["tuner_cpu_s"] for p in pairs) / sum(p["plain_cpu_s"] for p in pairs),
        "target": "ratio at most 1.05",
    }


def _tuner_trial(data, spec, params, storage_url: str) -> tuple[float, float]:
    import optuna

    from tuner.objective import Objective
    from tuner.search import make_pruner, make_sampler
    from tuner.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=open_storage(storage_url),
        sampler=make_sampler(spec.sampler),
        pruner=make_pruner(spec.pruner, max_epochs=spec.max_epochs),
        direction="minimize",
    )
    study.enqueue_trial(params)
    clock = Clock()
    study.optimize(Objective(data=data, spec=spec, seed=0), n_trials=1)
    wall, cpu = clock.read()
    trial = study.trials[0]
    if trial.state != optuna.trial.TrialState.COMPLETE or trial.user_attrs.get(EPOCHS_TRAINED_ATTR) != params["epochs"]:
        raise RuntimeError(f"the tuner trial did not train {params['epochs']} epochs: {trial.state.name} {trial.user_attrs}")
    return wall, cpu


def _plain_fit(data, training, params) -> tuple[float, float]:
    import keras

    from tuner.model import rebuild_model

    clock = Clock()
    keras.backend.clear_session(free_memory=True)
    keras.utils.set_random_seed(0)
    model, _ = rebuild_model(params, input_dim=data.input_dim, n_classes=data.n_classes, n_samples=len(data.x_train), training=training)
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=params["batch_size"],
        epochs=params["epochs"],
        validation_data=(data.x_val, data.y_val),
        validation_batch_size=training.validation_batch_size,
        shuffle=True,
        verbose=0,
    )
    return clock.read()


def small_model(data, spec, *, epochs: int, repeats: int) -> dict[str, Any]:
    """Item 2, small model: tuner's training settings versus Keras' defaults (one step per call, no XLA)."""
    from tuner.studyfile import TrainingSpec

    params = SMALL | {"epochs": epochs}
    keras_defaults = TrainingSpec(steps_per_execution=1, jit_compile=False)
    pairs = []
    for _ in range(repeats):
        tuned = _timed_fit(data, params, spec.training, validation_batch_size=spec.training.validation_batch_size)
        default = _timed_fit(data, params, keras_defaults, validation_batch_size=None)
        pairs.append({"tuner": tuned, "keras_default": default})
    steady = [median(p["tuner"]["epoch_s"][1:]) / median(p["keras_default"]["epoch_s"][1:]) for p in pairs]
    whole = [p["tuner"]["fit_s"] / p["keras_default"]["fit_s"] for p in pairs]
    cpu = [p["tuner"]["fit_cpu_s"] / p["keras_default"]["fit_cpu_s"] for p in pairs]
    return {
        "model": params,
        "pairs": _rounded(pairs),
        "tuner_epoch_s": median([median(p["tuner"]["epoch_s"][1:]) for p in pairs]),
        "keras_default_epoch_s": median([median(p["keras_default"]["epoch_s"][1:]) for p in pairs]),
        "ratio_steady_epoch_wall": median(steady),
        "ratio_whole_fit_wall": median(whole),
        "ratio_steady_epoch_cpu": median(
            [median(p["tuner"]["epoch_cpu_s"][1:]) / median(p["keras_default"]["epoch_cpu_s"][1:]) for p in pairs]
        ),
        "ratio_whole_fit_cpu": median(cpu),
        "target": "steady epoch ratio at most 0.6",
    }


def wide_model(data, spec, *, epochs: int, repeats: int) -> dict[str, Any]:
    """Item 2, wide model: achieved training FLOP rate over numpy's matmul rate, measured around each fit."""
    params = WIDE | {"epochs": epochs}
    rows = []
    for _ in range(repeats):
        before = matmul_gflops()
        fit = _timed_fit(data, params, spec.training, validation_batch_size=spec.training.validation_batch_size)
        after = matmul_gflops()
        samples_per_s = len(data.x_train) / median(fit["train_s"][1:])
        gflops = 6 * fit["n_params"] * samples_per_s / 1e9
        rows.append({"matmul_gflops": (before + after) / 2, "training_gflops": gflops, "samples_per_s": samples_per_s, "fit": fit})
    return {
        "model": params,
        "rows": _rounded(rows),
        "n_params": rows[0]["fit"]["n_params"],
        "matmul_gflops": median([r["matmul_gflops"] for r in rows]),
        "training_gflops": median([r["training_gflops"] for r in rows]),
        "fraction_of_matmul": median([r["training_gflops"] / r["matmul_gflops"] for r in rows]),
        "target": "fraction at least 0.5",
    }


def _timed_fit(data, params, training, *, validation_batch_size) -> dict[str, Any]:
    import keras

    from tuner.model import rebuild_model

    keras.backend.clear_session(free_memory=True)
    keras.utils.set_random_seed(0)
    model, _ = rebuild_model(params, input_dim=data.input_dim, n_classes=data.n_classes, n_samples=len(data.x_train), training=training)
    clock_cb = epoch_clock()
    clock = Clock()
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=params["batch_size"],
        epochs=params["epochs"],
        validation_data=(data.x_val, data.y_val),
        validation_batch_size=validation_batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[clock_cb],
    )
    wall, cpu = clock.read()
    return {
        "n_params": int(model.count_params()),
        "fit_s": wall,
        "fit_cpu_s": cpu,
        "epoch_s": clock_cb.total,
        "train_s": clock_cb.train,
        "epoch_cpu_s": clock_cb.cpu,
    }


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


if __name__ == "__main__":
    main()
