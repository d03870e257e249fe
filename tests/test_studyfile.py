"""Study-file validation: the default file is valid, and every bad case stops with one line naming the key."""

from __future__ import annotations

import tomllib

import pytest

from tuner.errors import ConfigError
from tuner.studyfile import Choice, Fixed, FloatRange, IntRange, default_study_file, load_study_file, parse_study


def test_default_study_file_covers_the_tutorial_space():
    spec = load_study_file(path=default_study_file())
    assert spec.name == "mnist-mlp"
    assert spec.space["n_layers"] == IntRange(0, 3)
    assert isinstance(spec.space["learning_rate"], FloatRange) and spec.space["learning_rate"].log
    assert isinstance(spec.space["weight_decay"], FloatRange) and spec.space["weight_decay"].log
    assert spec.space["l2"] == Fixed(0.0)  # decoupled weight decay takes its place in the search
    assert isinstance(spec.space["optimizer"], Choice) and set(spec.space["optimizer"].choices) == {
        "sgd",
        "sgd_momentum",
        "rmsprop",
        "adam",
    }
    assert spec.space["schedule"] == Fixed("cosine") and spec.space["epochs"] == Fixed(30)  # the budget, not a searched value
    assert spec.sampler.kind == "tpe" and spec.pruner.kind == "successive_halving" and spec.pruner.min_resource == 1
    assert spec.portfolio and spec.baselines
    assert spec.max_epochs == 30


def test_missing_parameters_are_fixed_at_defaults_and_plain_values_fix_a_parameter():
    spec = parse_study(document={"space": {"optimizer": "adam", "dropout": 0.25, "batch_size": {"choices": [32, 64]}}})
    assert spec.space["optimizer"] == Fixed("adam")
    assert spec.space["dropout"] == Fixed(0.25)
    assert spec.space["batch_size"] == Choice((32, 64))
    assert spec.space["n_layers"] == Fixed(2)


@pytest.mark.parametrize(
    ("toml", "key", "words"),
    [
        ("[study]\nnmae = 'x'", "study.nmae", "unknown key"),
        ("colour = 1", "colour", "unknown key"),
        ("[space]\nwidth = 3", "space.width", "unknown key"),
        ("[space]\ndropout = { low = 0.6, high = 0.5 }", "space.dropout", "greater than high"),
        ("[space]\nunits = { low = 64, high = 32 }", "space.units", "greater than high"),
        ("[space]\noptimizer = { choices = ['adam', 'lbfgs'] }", "space.optimizer.choices", "unknown value 'lbfgs'"),
        ("[space]\noptimizer = 'adagrad'", "space.optimizer", "unknown value"),
        ("[space]\nn_layers = { low = 0.5, high = 2 }", "space.n_layers.low", "must be an integer"),
        ("[space]\nepochs = '10'", "space.epochs", "must be an integer"),
        ("[space]\nlearning_rate = { low = 0, high = 0.1, log = true }", "space.learning_rate", "log-scale range needs low > 0"),
        ("[space]\ndropout = 1.0", "space.dropout", "below 1.0"),
        ("[space]\nl2 = { low = 1e-6 }", "space.l2", "needs both 'low' and 'high'"),
        ("[space]\nbatch_size = { choices = [] }", "space.batch_size.choices", "non-empty list"),
        ("[space]\noptimizer = { low = 1, high = 2 }", "space.optimizer", "categorical"),
        ("[space]\nunits = true", "space.units", "must be an integer"),
        ("[sampler]\nkind = 'cmaes'", "sampler.kind", "unknown value 'cmaes'"),
        ("[sampler]\nseed = -1", "sampler.seed", "between 0 and 4294967295"),
        ("[pruner]\nkind = 'asha'", "pruner.kind", "unknown value"),
        ("[data]\ndataset = 'cifar10'", "data.dataset", "unknown value"),
        ("[data]\nvalidation_fraction = 1.5", "data.validation_fraction", "between 0 and 1"),
        ("[training]\njit_compile = 'yes'", "training.jit_compile", "true or false"),
        ("study = 3", "study", "must be a table"),
        ("[study]\nname = ''", "study.name", "1 to 200 characters"),
    ],
)
def test_bad_study_files_name_the_key(tmp_path, toml, key, words):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_study_file(path=path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}:"), message
    assert words in message


def test_invalid_toml_and_missing_file_are_config_errors(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[space\nunits = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_study_file(path=broken)
    with pytest.raises(ConfigError, match="study file not found"):
        load_study_file(path=tmp_path / "absent.toml")


def test_study_files_are_data_not_code(tmp_path):
    # TOML has no way to run code; a Python-looking value is just an invalid string.
    path = tmp_path / "evil.toml"
    path.write_text("[space]\noptimizer = \"__import__('os').system('touch pwned')\"")
    with pytest.raises(ConfigError):
        load_study_file(path=path)
    assert not (tmp_path / "pwned").exists()
    assert tomllib.loads(path.read_text())  # it parses as plain data
