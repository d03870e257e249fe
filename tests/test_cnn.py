"""The convolutional family: its study file, its network, its one-line refusals, and the whole path on the fixture.

Everything after the model (pruning, storage, export, predict, report, pareto) is the MLP's code; the
end-to-end test checks that it serves a CNN study as it serves an MLP one.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from click.testing import CliRunner

from tuner.data import load_final_data, load_tuning_data
from tuner.errors import ConfigError, ModelError
from tuner.exportmeta import METADATA_FILE, ExportMetadata
from tuner.model import build_model, missing_params, rebuild_model
from tuner.search import CNN_PORTFOLIO, baseline_params, portfolio_params
from tuner.studyfile import CNN_PARAMETERS, OPEN_SPACES, PARAMETERS, Choice, Fixed, TrainingSpec, load_study_file, parse_study
from tuner.userdata import DataOptions

FIXTURES = Path(__file__).parent / "fixtures"
MNIST_SMALL = FIXTURES / "mnist-small"
STUDIES = Path(__file__).parent.parent / "studies"
TRAINING = TrainingSpec()

# Small enough that a trial takes a few seconds on the fixture: one or two thin blocks, two epochs.
TINY_CNN_STUDY = """
[study]
name = "tiny-cnn"

[model]
family = "cnn"

[pruner]
kind = "none"

[sampler]
seed = 3
n_startup_trials = 2

[space]
n_blocks = { low = 1, high = 2 }
filters = { low = 4, high = 8 }
kernel_size = { choices = [3, 5] }
batch_norm = { choices = [false, true] }
pooling = { choices = ["max", "average"] }
head = { choices = ["flatten", "global_average"] }
dense_units = { choices = [0, 16] }
dropout = { low = 0.0, high = 0.3 }
batch_size = 128
epochs = 2
learning_rate = { low = 1e-3, high = 1e-2, log = true }
optimizer = "adam"
"""

KERAS_CONVNET = dict(CNN_PORTFOLIO[0].params, epochs=15, l2=0.0, schedule="cosine")


def _invoke(*args: object):
    from tuner.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _error_line(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def _cnn(params, *, image_shape=(28, 28, 1), n_classes=10):
    return rebuild_model(
        params,
        input_dim=int(np.prod(image_shape)),
        n_classes=n_classes,
        n_samples=1000,
        training=TRAINING,
        family="cnn",
        image_shape=image_shape,
    )


# --- The study file -----------------------------------------------------------------------------------------


def test_family_defaults_to_mlp_and_each_family_has_its_own_space():
    assert parse_study(document={}).family == "mlp"
    assert set(parse_study(document={}).space) == set(PARAMETERS)
    spec = parse_study(
        document={"model": {"family": "cnn"}, "space": {"batch_norm": {"choices": [False, True]}, "n_blocks": {"low": 1, "high": 3}}}
    )
    assert spec.family == "cnn" and set(spec.space) == set(CNN_PARAMETERS)
    assert spec.space["batch_norm"] == Choice((False, True)) and spec.space["filter_growth"] == Fixed("double")
    # The training parameters are the MLP's very rules.
    assert parse_study(document={"model": {"family": "cnn"}, "space": {"optimizer": "sgd"}}).space["optimizer"] == Fixed("sgd")


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"model": {"family": "rnn"}}, "model.family: unknown value 'rnn' (expected one of: mlp, cnn)"),
        ({"model": {"kind": "cnn"}}, "model.kind: unknown key in [model]"),
        ({"model": "cnn"}, "model: must be a table"),
        ({"model": {"family": "cnn"}, "space": {"n_layers": 2}}, "space.n_layers: is a parameter of [model] family = 'mlp'"),
        ({"space": {"kernel_size": 3}}, "space.kernel_size: is a parameter of [model] family = 'cnn'; this study's family is 'mlp'"),
        ({"model": {"family": "cnn"}, "space": {"batch_norm": 1}}, "space.batch_norm: must be true or false, got integer 1"),
        ({"model": {"family": "cnn"}, "space": {"batch_norm": {"low": 0, "high": 1}}}, "space.batch_norm: is categorical"),
        ({"model": {"family": "cnn"}, "space": {"pooling": "median"}}, "space.pooling: unknown value 'median'"),
        ({"model": {"family": "cnn"}, "space": {"n_blocks": {"low": 0, "high": 2}}}, "space.n_blocks.low: must be at least 1"),
        ({"model": {"family": "cnn"}, "space": {"filters": {"low": 64, "high": 16}}}, "space.filters: low (64) is greater than high (16)"),
        ({"model": {"family": "cnn"}, "space": {"dense_units": {"low": 0, "high": 64, "log": True}}}, "a log-scale range needs low > 0"),
    ],
)
def test_cnn_study_mistakes_are_one_line(document, fragment):
    with pytest.raises(ConfigError) as caught:
        parse_study(document=document, source="cnn.toml")
    message = str(caught.value)
    assert fragment in message and message.startswith("cnn.toml: ") and "\n" not in message


def test_the_committed_cnn_study_and_its_portfolio():
    spec = load_study_file(path=STUDIES / "mnist_cnn.toml")
    packaged = Path(__file__).parent.parent / "tuner" / "studies" / "mnist_cnn.toml"
    assert packaged.read_text() == (STUDIES / "mnist_cnn.toml").read_text()
    assert spec.family == "cnn" and spec.name == "mnist-cnn" and spec.max_epochs == 15
    fitted = portfolio_params(spec)
    assert [entry.name for entry, _ in fitted] == ["keras-convnet", "keras-convnet-bn"]
    # Fitted into the space like a warm start: fixed parameters keep the study's value, numbers are clipped.
    convnet = fitted[0][1]
    assert convnet["n_blocks"] == 2 and convnet["filters"] == 32 and convnet["kernel_size"] == 3 and convnet["dropout"] == 0.5
    assert "filter_growth" not in convnet and convnet["weight_decay"] == 1e-6
    assert fitted[1][1]["batch_norm"] is True and fitted[1][1]["dense_units"] == 128
    assert baseline_params(spec) == []  # the tutorial's baselines are MLPs


# --- The network ----------------------------------------------------------------------------------------------


def test_keras_convnet_is_the_keras_example_with_same_padding():
    model, params = _cnn(KERAS_CONVNET)
    assert [layer.name for layer in model.layers] == [
        "pixels",
        "image",
        "conv_1",
        "pool_1",
        "conv_2",
        "pool_2",
        "features",
        "dropout",
        "classes",
    ]
    assert model.input_shape == (None, 784) and model.get_layer("image").output.shape == (None, 28, 28, 1)
    # 3x3 convolutions of 32 and 64 filters, 7x7 maps after two poolings, softmax over 10 classes.
    assert model.count_params() == (9 * 32 + 32) + (9 * 32 * 64 + 64) + (7 * 7 * 64 * 10 + 10)
    assert model.optimizer.__class__.__name__ == "Adam" and params["dropout"] == 0.5


def test_batch_norm_average_pooling_global_head_and_colour_images():
    params = dict(
        KERAS_CONVNET,
        n_blocks=3,
        filters=8,
        filter_growth="same",
        kernel_size=5,
        batch_norm=True,
        pooling="average",
        head="global_average",
        dense_units=16,
        dropout=0.2,
    )
    model, _ = _cnn(params, image_shape=(10, 14, 3), n_classes=4)
    names = [layer.name for layer in model.layers]
    assert {"batch_norm_1", "batch_norm_3", "relu_2", "features_dropout", "dense", "dropout"} <= set(names)
    assert model.get_layer("pool_1").__class__.__name__ == "AveragePooling2D"
    assert model.get_layer("features").__class__.__name__ == "GlobalAveragePooling2D"
    assert not model.get_layer("conv_1").use_bias  # the normalisation's offset replaces it
    assert model.get_layer("conv_3").output.shape == (None, 2, 3, 8)  # 10x14 -> 5x7 -> 2x3, filters kept
    assert model.output_shape == (None, 4)


def test_a_cnn_trial_records_its_whole_configuration():
    spec = load_study_file(path=STUDIES / "mnist_cnn.toml")
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    model, params = build_model(
        trial, spec.space, input_dim=784, n_classes=10, n_samples=1000, training=TRAINING, family="cnn", image_shape=(28, 28, 1)
    )
    assert set(trial.params) == set(CNN_PARAMETERS) == set(params)
    assert missing_params(trial.params, "cnn") == [] and missing_params({"n_blocks": 2}, "cnn")
    assert model.name == "cnn"


def test_every_value_of_the_open_space_is_accepted_by_the_builder():
    assert OPEN_SPACES["cnn"]["batch_norm"] == Choice((False, True))
    assert set(OPEN_SPACES["cnn"]) == set(CNN_PARAMETERS) and set(OPEN_SPACES["mlp"]) == set(PARAMETERS)


# --- Data with and without an image shape ---------------------------------------------------------------------


def test_the_data_records_the_image_shape_it_flattened():
    assert load_tuning_data(dataset="mnist", data_path=str(MNIST_SMALL), validation_fraction=0.1, split_seed=0).image_shape == (28, 28, 1)
    folders = FIXTURES / "digit-folders"

    def folder_shape(**options):
        data = load_final_data(
            dataset="mnist", data_path=str(folders), validation_fraction=0.1, split_seed=0, options=DataOptions(**options)
        ).tuning
        return data.image_shape

    assert folder_shape(image_size=(14, 10)) == (10, 14, 1)  # [width, height] -> (height, width, channels)
    assert folder_shape(image_size=(8, 8), color=True) == (8, 8, 3)
    table = load_tuning_data(
        dataset="mnist",
        data_path=str(FIXTURES / "digits-7x7.csv"),
        validation_fraction=0.1,
        split_seed=0,
        options=DataOptions(label_column="digit"),
    )
    assert table.image_shape is None


def test_flat_npz_rows_have_no_image_shape(tmp_path):
    rng = np.random.default_rng(0)
    x_train, x_test = rng.integers(0, 255, (40, 16), dtype=np.uint8), rng.integers(0, 255, (10, 16), dtype=np.uint8)
    np.savez(tmp_path / "flat.npz", x_train=x_train, y_train=np.arange(40) % 2, x_test=x_test, y_test=np.arange(10) % 2)
    assert (
        load_tuning_data(dataset="mnist", data_path=str(tmp_path / "flat.npz"), validation_fraction=0.1, split_seed=0).image_shape is None
    )


def test_a_table_or_a_too_deep_space_is_one_line_before_any_storage(tmp_path):
    study = tmp_path / "cnn.toml"
    study.write_text(TINY_CNN_STUDY + '\n[data]\nlabel_column = "digit"\n')
    url = f"sqlite:///{tmp_path / 'study.db'}"
    line = _error_line(_invoke("run", "--study-file", study, "--data", FIXTURES / "digits-7x7.csv", "--storage", url, "--trials", 2), 2)
    assert "family = 'cnn' needs images" in line and "digits-7x7.csv" in line and "family = 'mlp'" in line

    study.write_text(TINY_CNN_STUDY.replace("n_blocks = { low = 1, high = 2 }", "n_blocks = { low = 1, high = 5 }"))
    line = _error_line(_invoke("run", "--study-file", study, "--data", MNIST_SMALL, "--storage", url, "--trials", 2), 2)
    assert "space.n_blocks: 5 blocks of 2x2 pooling need images of at least 32x32 pixels" in line and "28x28" in line
    assert "at most 4 blocks fit" in line
    assert not (tmp_path / "study.db").exists()  # refused before the storage was opened


def test_the_builder_refuses_images_it_would_pool_away():
    with pytest.raises(ConfigError, match="5 blocks of 2x2 pooling do not fit 28x28 images"):
        _cnn(dict(KERAS_CONVNET, n_blocks=5))
    with pytest.raises(ConfigError, match="needs the data's image shape"):
        rebuild_model(KERAS_CONVNET, input_dim=49, n_classes=10, n_samples=100, training=TRAINING, family="cnn", image_shape=None)


# --- model.json -------------------------------------------------------------------------------------------------


def test_model_json_family_is_read_back_and_checked(tmp_path):
    digits = {"kind": "mnist", "input_dim": 784, "n_classes": 10, "class_names": [str(i) for i in range(10)]}
    document = {"format": "tuner-export/2", "study_name": "s", "trial_number": 0, "data": digits}
    path = tmp_path / METADATA_FILE
    path.write_text(json.dumps(document))
    assert ExportMetadata.from_dir(tmp_path).family == "mlp"  # exports from before the field were MLPs
    path.write_text(json.dumps({**document, "family": "cnn"}))
    assert ExportMetadata.from_dir(tmp_path).family == "cnn"
    path.write_text(json.dumps({**document, "family": "transformer"}))
    with pytest.raises(ModelError, match="unknown model family 'transformer'"):
        ExportMetadata.from_dir(tmp_path)


# --- The whole path ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_search_export_predict_report_and_pareto_of_a_cnn_study(tmp_path):
    import keras

    from tuner.config import resolve_run_config
    from tuner.runner import run_study

    study_file = tmp_path / "cnn.toml"
    study_file.write_text(TINY_CNN_STUDY)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    config = resolve_run_config(study_file=study_file, storage_url=url, data_path=str(MNIST_SMALL), n_trials=3)
    run_study(config=config)
    study = optuna.load_study(study_name="tiny-cnn", storage=url)
    assert study.user_attrs["tuner"]["family"] == "cnn"
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert study.trials[0].user_attrs["portfolio"] == "keras-convnet"  # the family's own portfolio comes first
    assert all(set(t.params) == set(CNN_PARAMETERS) and t.user_attrs["latency_ms"] > 0 for t in study.trials)

    out = tmp_path / "model"
    result = _invoke("export-best", "--storage", url, "--out", out)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["family"] == "cnn" and meta["data"]["kind"] == "mnist" and meta["data"]["input_dim"] == 784
    final = load_final_data(dataset="mnist", data_path=str(MNIST_SMALL), validation_fraction=1 / 6, split_seed=0)
    model = keras.models.load_model(out / "model.keras", safe_mode=True)
    assert model.name == "cnn"
    predicted = model.predict(final.x_test, verbose=0).argmax(axis=1)
    assert float((predicted == final.y_test).mean()) == pytest.approx(meta["test"]["accuracy"])

    # predict converts an image as training did, and feeds the same rows an MLP export takes.
    digit = FIXTURES / "digits" / "0-test440-mnist.png"
    result = _invoke("predict", "--model", out, digit, "--json")
    assert result.exit_code == 0, result.output
    (prediction,) = json.loads(result.stdout)["predictions"]
    assert len(prediction["probabilities"]) == 10 and prediction["label"] == str(prediction["class_index"])

    report = tmp_path / "report.html"
    result = _invoke("report", "--storage", url, "--out", report)
    assert result.exit_code == 0, result.output
    page = report.read_text()
    assert "Contour: learning_rate vs filters" in page and "learning_rate vs units" not in page

    result = _invoke("pareto", "--storage", url)
    assert result.exit_code == 0 and "blocks x filters" in result.stdout, result.output

    # A resume must search the family the study was created with.
    mlp = tmp_path / "mlp.toml"
    mlp.write_text('[study]\nname = "tiny-cnn"\n')
    line = _error_line(_invoke("run", "--study-file", mlp, "--storage", url, "--trials", 4), 2)
    assert "model family 'cnn', this run has 'mlp'" in line


@pytest.mark.slow
def test_cnn_trials_leave_no_traced_graphs_behind(tmp_path):
    from tensorflow.python.framework.func_graph import FuncGraph

    from tuner.config import resolve_run_config
    from tuner.runner import run_study

    def live_graphs() -> int:
        gc.collect()
        return sum(isinstance(obj, FuncGraph) for obj in gc.get_objects())

    study_file = tmp_path / "cnn.toml"
    study_file.write_text(TINY_CNN_STUDY.replace("epochs = 2", "epochs = 1"))
    config = resolve_run_config(
        study_file=study_file, storage_url=f"sqlite:///{tmp_path / 'study.db'}", data_path=str(MNIST_SMALL), n_trials=5, portfolio=False
    )
    readings: list[int] = []
    run_study(config=config, on_trial_end=lambda ended: readings.append(live_graphs()))
    assert len(readings) == 5
    assert readings[-1] <= readings[2], readings  # after the first trials warm TensorFlow's caches, nothing accumulates


@pytest.mark.slow
def test_a_cnn_on_colour_image_folders_exports_and_predicts_their_images(tmp_path):
    from tuner.config import resolve_run_config
    from tuner.runner import run_study

    folders = FIXTURES / "digit-folders"
    study_file = tmp_path / "cnn.toml"
    study_file.write_text(
        TINY_CNN_STUDY.replace("epochs = 2", "epochs = 1") + "\n[data]\nimage_size = [16, 12]\ncolor = true\nvalidation_fraction = 0.2\n"
    )
    url = f"sqlite:///{tmp_path / 'study.db'}"
    run_study(config=resolve_run_config(study_file=study_file, storage_url=url, data_path=str(folders), n_trials=1, portfolio=False))
    out = tmp_path / "model"
    result = _invoke("export-best", "--storage", url, "--out", out)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["family"] == "cnn" and meta["data"]["kind"] == "images" and meta["data"]["input_dim"] == 12 * 16 * 3
    image = sorted((folders / "seven").iterdir())[0]
    result = _invoke("predict", "--model", out, image, "--json")
    assert result.exit_code == 0, result.output
    (prediction,) = json.loads(result.stdout)["predictions"]
    assert prediction["label"] in meta["data"]["class_names"] and len(prediction["probabilities"]) == len(meta["data"]["class_names"])
