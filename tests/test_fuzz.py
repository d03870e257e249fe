"""Property-based fuzzing of every parser of user input: each bad input ends in one of our own errors,
as one line, never a traceback, a hang or a partial write. The counts (max_examples) are in the README."""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.helpers import examples, invoke
from tuner.data import load_tuning_data, read_idx
from tuner.errors import ConfigError, DataError, StorageError, TunerError
from tuner.storage import open_storage
from tuner.studyfile import PARAMETERS, StudySpec, load_study_file, parse_study

# Shares of the Hypothesis profile's example count (200 under "ci"): the pure functions take more examples.
FUZZ = examples(1.5)
FUZZ_SLOW = examples(1.0)

KNOWN_KEYS = [
    "study",
    "data",
    "sampler",
    "pruner",
    "training",
    "space",
    "name",
    "kind",
    "seed",
    "low",
    "high",
    "log",
    "step",
    "choices",
    *PARAMETERS,
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["adam", "sgd", "tpe", "median", "mnist", "", "é", "\u202e", "x" * 300]),
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=12))
documents = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=6)), max_leaves=25
)


def _one_clean_line(error: TunerError) -> None:
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message


@FUZZ
@given(st.dictionaries(keys, documents, max_size=6))
def test_random_study_documents_validate_or_fail_with_a_config_error(document):
    try:
        spec = parse_study(document=document)
    except ConfigError as error:
        _one_clean_line(error)
    else:
        assert isinstance(spec, StudySpec) and set(spec.space) == set(PARAMETERS)


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            name: st.one_of(
                scalars,
                st.fixed_dictionaries({"low": scalars, "high": scalars}, optional={"log": scalars, "step": scalars}),
                st.fixed_dictionaries({"choices": st.lists(scalars, max_size=4)}),
            )
            for name in PARAMETERS
        },
    )
)
def test_random_search_spaces_validate_or_fail_with_a_config_error(space):
    try:
        spec = parse_study(document={"space": space})
    except ConfigError as error:
        _one_clean_line(error)
        assert "space." in str(error)
    else:
        for rule_name, param in spec.space.items():
            low, high = (getattr(param, "low", None), getattr(param, "high", None))
            if low is not None:
                assert high is not None and low <= high and math.isfinite(low) and math.isfinite(high), rule_name


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_random_study_file_bytes(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("study") / "fuzz.toml"
    path.write_bytes(raw)
    try:
        load_study_file(path=path)
    except ConfigError as error:
        _one_clean_line(error)


schemes = st.sampled_from(
    ["sqlite", "postgresql", "postgresql+psycopg2", "mysql+pymysql", "mariadb+pymysql", "oracle", "nosuch", "http", "sqlite+nosuchdriver"]
)
url_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20)


@FUZZ_SLOW
@given(
    scheme=schemes,
    password=st.text(alphabet="abcdefghijklmnop0123456789", min_size=6, max_size=12).map(lambda s: "pw" + s),
    port=st.integers(min_value=1, max_value=1023),
    database=url_text,
    junk=st.one_of(st.just(""), url_text),
)
def test_random_storage_urls_fail_cleanly_and_never_show_the_password(
    tmp_path_factory, monkeypatch, scheme, password, port, database, junk
):
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    # Ports below 1024 on loopback are closed here, so network URLs fail fast without leaving the machine.
    url = (
        f"{scheme}://user:{password}@127.0.0.1:{port}/{database}{junk}"
        if scheme != "sqlite"
        else f"sqlite:///nonexistent-dir/{database}{junk}/x.db"
    )
    try:
        open_storage(url, must_exist=scheme == "sqlite", heartbeat_interval=None)
    except (ConfigError, StorageError) as error:
        _one_clean_line(error)
        assert password not in str(error)


@FUZZ
@given(st.text(max_size=80))
def test_random_text_as_storage_url(tmp_path_factory, monkeypatch, text):
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        open_storage(text, must_exist=True, heartbeat_interval=None)
    except TunerError as error:
        _one_clean_line(error)


def _idx(payload: bytes, path):
    with gzip.open(path, "wb") as handle:
        handle.write(payload)
    return path


@FUZZ
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=64))
def test_random_and_truncated_idx_files(tmp_path_factory, raw, cut):
    directory = tmp_path_factory.mktemp("idx")
    valid = b"\x00\x00\x08\x03" + struct.pack(">III", 2, 2, 2) + bytes(8)
    for name, payload in (("random.gz", raw), ("cut.gz", valid[: min(cut, len(valid))]), ("magic.gz", raw[:4] + valid[4:])):
        try:
            array = read_idx(_idx(payload, directory / name))
        except DataError as error:
            _one_clean_line(error)
        else:
            assert array.size * array.dtype.itemsize == len(payload) - 4 - 4 * payload[3]


array_dtypes = st.sampled_from([np.uint8, np.int16, np.int64, np.float32, np.float64, np.bool_, np.complex64])


@FUZZ_SLOW
@given(
    x=hnp.arrays(array_dtypes, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6), elements=None),
    y=hnp.arrays(array_dtypes, hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=6)),
    drop=st.sets(st.sampled_from(["x_train", "y_train", "x_test", "y_test"]), max_size=2),
)
def test_random_npz_archives(tmp_path_factory, x, y, drop):
    path = tmp_path_factory.mktemp("npz") / "data.npz"
    arrays = {"x_train": x, "y_train": y, "x_test": x, "y_test": y}
    np.savez(path, **{k: v for k, v in arrays.items() if k not in drop})
    try:
        data = load_tuning_data(dataset="mnist", data_path=str(path), validation_fraction=0.5, split_seed=0)
    except DataError as error:
        _one_clean_line(error)
    else:
        assert np.isfinite(data.x_train).all() and np.isfinite(data.x_val).all()
        if data.kind != "table":  # pixels are scaled into [0, 1]; other numbers are standardised features
            assert data.x_train.min() >= 0 and data.x_train.max() <= 1
        assert len(data.x_train) + len(data.x_val) == len(x)


option_values = st.one_of(
    st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=40),  # argv cannot hold NUL
    st.sampled_from(
        ["0", "-1", "1e309", "nan", "inf", "-inf", "3.5", "99999999999999999999", "", " ", "a b", "../../etc", "x" * 400, "'\"", "é/ü"]
    ),
)


@FUZZ_SLOW
@given(
    option=st.sampled_from(["--trials", "--timeout", "--study", "--seed", "--threads", "--storage", "--study-file", "--data"]),
    value=option_values,
)
def test_random_cli_option_values(tmp_path_factory, monkeypatch, option, value):
    directory = tmp_path_factory.mktemp("cli")
    monkeypatch.chdir(directory)
    from click.testing import CliRunner

    args = ["run", "--trials", "1", "--data", str(directory / "absent"), "--storage", f"sqlite:///{directory / 'fuzz.db'}", option, value]
    result = invoke(CliRunner(), *args)
    # Every case fails before training (the data path is missing, or the value is bad): one error line.
    assert result.exit_code in (1, 2, 3, 4), result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
