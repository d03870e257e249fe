"""Property-based fuzzing of `predict`'s images and of the other commands' option values.

Every bad input ends in one of our own errors as one line (a click usage error for a value of the
wrong type) and a non-zero exit: never a traceback, never a hang (each example runs under an alarm),
never a partial write. Valid but unusual inputs (RGBA, 16-bit, animated GIF) are checked against
their plain 8-bit equivalents. tests/test_fuzz.py covers study files, storage URLs, data files and
`tuner run`'s first options; the counts (max_examples) of both files are in the README.
"""

from __future__ import annotations

import io
import signal
import sqlite3
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import event, given
from hypothesis import strategies as st
from PIL import GifImagePlugin, Image, ImageDraw

from tests.helpers import FIXTURES, examples, invoke, sqlite_file
from tuner.errors import ConfigError, InputImageError, TunerError
from tuner.images import load_inputs, read_image

# Shares of the Hypothesis profile's example count (200 under "ci"): a CLI call per example takes fewer.
FUZZ = examples(1.0)
FUZZ_CLI = examples(0.4)
EXAMPLE_LIMIT_S = 60  # generous on a loaded 2-core machine; a hang never returns at all

DIGITS = sorted((FIXTURES / "digits").iterdir())
# Pillow warns about the damaged TIFF tags it skips; the result (an image or our error) is what is checked.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")


class _Hang(BaseException):
    """Not an Exception, so that no ``except OSError`` in the code under test can turn a hang into a clean error."""


@contextmanager
def _no_hang(seconds: float = EXAMPLE_LIMIT_S):
    def expired(signum, frame):
        raise _Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _one_clean_line(error: TunerError) -> None:
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message


def _image_or_clean_error(path: Path) -> np.ndarray | None:
    """The 784 pixels ``predict`` would see, or None after checking that the refusal is one clean line naming the file."""
    try:
        with _no_hang():
            pixels = load_inputs(path).pixels
    except InputImageError as error:
        _one_clean_line(error)
        assert str(path) in str(error)
        event(f"refused: {str(error).removeprefix(f'{path}: ').split(' (')[0][:40]}")  # --hypothesis-show-statistics
        return None
    event("read")
    assert pixels.shape == (1, 28 * 28) and pixels.dtype == np.float32
    assert np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1
    return pixels


# --- Images: random pictures in every mode and format Pillow writes -------------------------------------------

# Which modes each format can store as such (Pillow converts or refuses the others).
FORMAT_MODES = {
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
    "TIFF": ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"],
    "BMP": ["1", "L", "P", "RGB"],
    "JPEG": ["L", "RGB", "CMYK"],
    "GIF": ["L", "P"],
    "WEBP": ["RGB", "RGBA"],
}
EXTENSIONS = {"PNG": ".png", "TIFF": ".tiff", "BMP": ".bmp", "JPEG": ".jpg", "GIF": ".gif", "WEBP": ".webp"}


@st.composite
def pictures(draw) -> tuple[Image.Image, str]:
    """A picture of strokes on a background, with noise, in a random mode and size, and a format that stores that mode."""
    fmt = draw(st.sampled_from(sorted(FORMAT_MODES)))
    mode = draw(st.sampled_from(FORMAT_MODES[fmt]))
    width, height = draw(st.integers(1, 90)), draw(st.integers(1, 90))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    gray = Image.new("L", (width, height), draw(st.integers(0, 255)))
    pen = ImageDraw.Draw(gray)
    for _ in range(draw(st.integers(0, 4))):
        box = sorted(rng.integers(0, width, 2).tolist()), sorted(rng.integers(0, height, 2).tolist())
        pen.line([(box[0][0], box[1][0]), (box[0][1], box[1][1])], fill=int(rng.integers(0, 256)), width=int(rng.integers(1, 6)))
    pixels = np.asarray(gray, dtype=np.float64) + rng.normal(0, draw(st.sampled_from([0.0, 5.0, 60.0])), (height, width))
    gray = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if mode == "I;16":
        picture = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    elif mode == "I":
        picture = Image.fromarray(np.asarray(gray).astype(np.int32) * draw(st.sampled_from([1, 257])), mode="I")
    elif mode == "F":
        picture = Image.fromarray(np.asarray(gray).astype(np.float32) / draw(st.sampled_from([1.0, 255.0])))
    elif mode in ("LA", "RGBA"):
        alpha = (
            Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
            if draw(st.booleans())
            else Image.new("L", gray.size, 255)
        )
        picture = gray.convert(mode)
        picture.putalpha(alpha)
    else:
        picture = gray.convert(mode)
    return picture, fmt


def _encode(picture: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt)
    return buffer.getvalue()


@FUZZ
@given(pictures())
def test_random_pictures_become_mnist_pixels_or_one_clean_error(tmp_path_factory, drawn):
    picture, fmt = drawn
    path = tmp_path_factory.mktemp("img") / f"picture{EXTENSIONS[fmt]}"
    path.write_bytes(_encode(picture, fmt))
    pixels = _image_or_clean_error(path)
    if pixels is not None:
        assert pixels.max() == 1.0  # the digit is scaled to full contrast


@FUZZ
@given(pictures(), st.floats(0, 1, exclude_max=True))
def test_truncated_pictures(tmp_path_factory, drawn, keep):
    picture, fmt = drawn
    raw = _encode(picture, fmt)
    path = tmp_path_factory.mktemp("img") / f"cut{EXTENSIONS[fmt]}"
    path.write_bytes(raw[: int(len(raw) * keep)])
    _image_or_clean_error(path)


@FUZZ
@given(pictures(), st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8))
def test_corrupted_pictures(tmp_path_factory, drawn, damage):
    picture, fmt = drawn
    raw = bytearray(_encode(picture, fmt))
    for where, value in damage:
        raw[int(len(raw) * where)] = value
    path = tmp_path_factory.mktemp("img") / f"damaged{EXTENSIONS[fmt]}"
    path.write_bytes(bytes(raw))
    _image_or_clean_error(path)


MAGIC = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"GIF87a",
    b"BM",
    b"\xff\xd8\xff",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBP",
    b"\x93NUMPY",
]


@FUZZ
@given(st.sampled_from(MAGIC), st.binary(max_size=400), st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".tiff", ".webp", ".npy", ""]))
def test_random_bytes_behind_image_signatures(tmp_path_factory, magic, tail, extension):
    path = tmp_path_factory.mktemp("img") / f"random{extension}"
    path.write_bytes(magic + tail)
    assert _image_or_clean_error(path) is None


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


side = st.one_of(st.integers(0, 64), st.integers(0, 2**31 - 1), st.sampled_from([0, 1, 9_459, 9_460, 13_378, 65_535, 2**31 - 1]))


@FUZZ
@given(
    width=side,
    height=side,
    depth_and_colour=st.sampled_from([(1, 0), (8, 0), (16, 0), (8, 2), (16, 2), (8, 3), (8, 4), (8, 6), (16, 6), (3, 0), (8, 7)]),
    payload=st.one_of(st.binary(max_size=200), st.integers(0, 200_000).map(lambda n: bytes(n))),
)
def test_png_headers_with_any_dimensions(tmp_path_factory, width, height, depth_and_colour, payload):
    """Zero, tiny and huge declared sizes, decompression bombs included: a result or one clean line, quickly."""
    depth, colour = depth_and_colour
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(payload)) + _png_chunk(b"IEND", b"")
    path = tmp_path_factory.mktemp("img") / "crafted.png"
    path.write_bytes(raw)
    pixels = _image_or_clean_error(path)
    if width * height > Image.MAX_IMAGE_PIXELS:
        assert pixels is None


gif_side = st.one_of(st.integers(0, 64), st.integers(0, 65_535), st.sampled_from([0, 1, 9_459, 65_535]))


@FUZZ
@given(
    screen=st.tuples(gif_side, gif_side),
    frame=st.tuples(gif_side, gif_side, gif_side, gif_side),
    code_size=st.integers(0, 12),
    body=st.binary(max_size=100),
)
def test_gif_headers_with_any_dimensions(tmp_path_factory, screen, frame, code_size, body):
    """A logical screen and one frame of any size, with random LZW data."""
    blocks = b"".join(bytes([len(body[i : i + 255])]) + body[i : i + 255] for i in range(0, len(body), 255)) + b"\x00"
    raw = b"GIF89a" + struct.pack("<HHBBB", *screen, 0, 0, 0) + b"," + struct.pack("<HHHHB", *frame, 0) + bytes([code_size]) + blocks + b";"
    path = tmp_path_factory.mktemp("img") / "crafted.gif"
    path.write_bytes(raw)
    _image_or_clean_error(path)


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    """A real bomb just over Pillow's pixel limit (where Pillow itself only warns) and a header claiming 4 gigapixels of RGBA."""
    width, limit = 10_000, Image.MAX_IMAGE_PIXELS
    assert limit is not None, "Pillow's pixel limit is on by default"
    height = limit // width + 1
    rows = (b"\x00" + bytes(width)) * height
    bomb = tmp_path / "bomb.png"
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(rows, 9)) + _png_chunk(b"IEND", b"")
    )
    assert bomb.stat().st_size < 200_000
    claim = tmp_path / "claim.png"
    header = struct.pack(">IIBBBBB", 65_535, 65_535, 8, 6, 0, 0, 0)
    claim.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"")) + _png_chunk(b"IEND", b"")
    )
    for path in (bomb, claim):
        with pytest.raises(InputImageError, match="too large") as caught, _no_hang(10):
            load_inputs(path)
        _one_clean_line(caught.value)


def test_empty_and_zero_size_files(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    zero = tmp_path / "zero.png"
    zero.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 0, 0, 0, 0)) + _png_chunk(b"IEND", b""))
    for path in (empty, zero):
        with pytest.raises(InputImageError, match="not an image"):
            load_inputs(path)


# --- Valid but unusual pictures: the same digit must give the same pixels ------------------------------------


def _digit_gray(index: int) -> np.ndarray:
    """A committed digit as 8-bit grayscale (the transparent one drawn on white)."""
    with Image.open(DIGITS[index]) as image:
        rgba = image.convert("RGBA")
    return np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("L"))


def _outcome(path: Path) -> np.ndarray | str:
    """The pixels, or the reason for refusing, without the file name."""
    try:
        return read_image(path)
    except InputImageError as error:
        return str(error).removeprefix(f"{path}: ")


def _same(a: np.ndarray | str, b: np.ndarray | str, *, nearly: bool = False) -> bool:
    """The same refusal, or the same pixels; ``nearly``: rounding may move a pixel across the ink threshold."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    difference = np.abs(a - b)
    return bool(difference.mean() < 0.005 and difference.max() < 0.1) if nearly else bool(difference.max() < 1e-6)


def _save(tmp: Path, name: str, image: Image.Image, **options) -> Path:
    path = tmp / name
    image.save(path, **options)
    return path


@FUZZ
@given(index=st.integers(0, len(DIGITS) - 1), offset=st.integers(0, 256))
def test_sixteen_bit_and_float_pictures_match_their_eight_bit_version(tmp_path_factory, index, offset):
    tmp = tmp_path_factory.mktemp("wide")
    gray = _digit_gray(index)
    reference = _outcome(_save(tmp, "eight.png", Image.fromarray(gray)))
    variants = [
        _save(tmp, "sixteen.png", Image.fromarray(gray.astype(np.uint16) * 257)),
        # Not a multiple of 257: the low byte must not matter either.
        _save(tmp, "sixteen.tiff", Image.fromarray(np.minimum(gray.astype(np.uint32) * 257 + offset, 65535).astype(np.uint16))),
        _save(tmp, "int32.tiff", Image.fromarray(gray.astype(np.int32), mode="I")),
        _save(tmp, "float.tiff", Image.fromarray(gray.astype(np.float32) / 255)),
    ]
    assert Image.open(variants[0]).mode.startswith("I;16")
    for path in variants:
        assert _same(_outcome(path), reference, nearly=True), path


def test_float_pictures_with_nan_or_out_of_range_values(tmp_path):
    for name, values in (
        ("nan.tiff", np.full((20, 20), np.nan, dtype=np.float32)),
        ("negative.tiff", np.full((20, 20), -5.0, dtype=np.float32)),
    ):
        path = _save(tmp_path, name, Image.fromarray(values))
        with pytest.raises(InputImageError) as caught:
            read_image(path)
        _one_clean_line(caught.value)
        assert str(path) in str(caught.value)


@FUZZ
@given(
    index=st.integers(0, len(DIGITS) - 1), ink=st.just((0, 0, 0)) | st.tuples(st.integers(0, 90), st.integers(0, 90), st.integers(0, 200))
)
def test_rgba_drawn_on_transparency_matches_the_same_drawing_on_white(tmp_path_factory, index, ink):
    tmp = tmp_path_factory.mktemp("rgba")
    gray = _digit_gray(index)
    if np.median(np.concatenate([gray[0], gray[-1]])) < 128:
        gray = 255 - gray  # make it dark ink on light paper
    alpha = 255 - gray  # the ink is opaque, the paper transparent
    rgba = np.dstack([np.full_like(gray, c) for c in ink] + [alpha])
    on_white = Image.alpha_composite(Image.new("RGBA", gray.shape[::-1], (255, 255, 255, 255)), Image.fromarray(rgba, "RGBA")).convert("L")
    transparent = _outcome(_save(tmp, "transparent.png", Image.fromarray(rgba, "RGBA")))
    assert _same(transparent, _outcome(_save(tmp, "white.png", on_white)))
    if ink == (0, 0, 0):  # black ink: the drawing on white is the original picture
        assert _same(transparent, _outcome(_save(tmp, "gray.png", Image.fromarray(gray))), nearly=True)


@FUZZ
@given(
    first=st.integers(0, len(DIGITS) - 1),
    others=st.lists(st.integers(0, len(DIGITS) - 1), min_size=1, max_size=4),
    durations=st.integers(10, 500),
)
def test_animated_gif_reads_its_first_frame(tmp_path_factory, first, others, durations):
    tmp = tmp_path_factory.mktemp("gif")
    # Black and white only: GIF's palette keeps them exactly, so the first frame alone is the same picture.
    frames = [Image.fromarray(np.where(_digit_gray(i) > 127, 255, 0).astype(np.uint8)).resize((60, 60)) for i in (first, *others)]
    animated = _save(tmp, "animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=durations, loop=0)
    assert cast(GifImagePlugin.GifImageFile, Image.open(animated)).n_frames >= 1
    assert _same(_outcome(animated), _outcome(_save(tmp, "first.png", frames[0])))


# --- `tuner predict` end to end on fuzzed files and option values -------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained softmax layer: predict only needs a loadable model of the right shape, and its model.json."""
    import keras

    from tuner.exportmeta import ExportMetadata, FinalModelScore, ModelInput

    path = tmp_path_factory.mktemp("model") / "model.keras"
    inputs = keras.Input((28 * 28,))
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(inputs)).save(path)
    digits = ModelInput(kind="mnist", input_dim=784, n_classes=10, class_names=tuple(str(i) for i in range(10)))
    ExportMetadata(
        study_name="fuzz",
        storage="",
        trial_number=0,
        selected="best",
        params={},
        trial={},
        test=FinalModelScore(loss=2.3, accuracy=0.1, n_samples=10, confusion_matrix=[[1] * 10 for _ in range(10)]),
        training={},
        history=[],
        data={},
        model_input=digits,
    ).write(path.parent / "model.json")
    return path


def _clean_failure(result, *codes: int) -> str:
    """The last stderr line of a failed command; ours are one line, click's usage errors start with Usage:."""
    assert result.exit_code != 0 and (not codes or result.exit_code in codes), (result.exit_code, result.output)
    stderr = result.stderr.strip()
    assert "Traceback" not in result.output
    lines = stderr.splitlines()
    assert lines and lines[-1].startswith("Error: "), stderr
    if not stderr.startswith("Usage:"):
        assert len(lines) == 1, stderr
    return lines[-1]


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@st.composite
def input_files(draw) -> tuple[str, bytes]:
    """(extension, bytes): a picture, a picture cut short, or random bytes behind a file signature."""
    kind = draw(st.sampled_from(["picture", "truncated", "random"]))
    if kind == "random":
        return draw(st.sampled_from([".png", ".jpg", ".gif", ".npy"])), draw(st.sampled_from(MAGIC)) + draw(st.binary(max_size=200))
    picture, fmt = draw(pictures())
    raw = _encode(picture, fmt)
    return EXTENSIONS[fmt], raw if kind == "picture" else raw[: int(len(raw) * draw(st.floats(0, 0.9)))]


@FUZZ_CLI
@given(files=st.lists(input_files(), min_size=1, max_size=3))
def test_predict_cli_on_fuzzed_files(tmp_path_factory, tiny_model, files):
    tmp = tmp_path_factory.mktemp("predict")
    paths = []
    for i, (extension, raw) in enumerate(files):
        paths.append(tmp / f"input{i}{extension}")
        paths[-1].write_bytes(raw)
    readable = all(_image_or_clean_error(p) is not None for p in paths)
    with _no_hang():
        result = invoke(CliRunner(), "predict", "--model", tiny_model, *paths)
    if result.exit_code == 0:
        assert readable and len(result.stdout.strip().splitlines()) == len(paths)
    else:
        assert not readable
        assert _clean_failure(result, 7).startswith(f"Error: {tmp}")
        assert result.stdout == ""  # all inputs are read before anything is printed
    assert _snapshot(tmp) == {p.name: raw for p, (_, raw) in zip(paths, files, strict=True)}


option_values = st.one_of(
    st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=40),  # argv cannot hold NUL
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.sampled_from(
        [
            "0",
            "-1",
            "1",
            "1e309",
            "nan",
            "inf",
            "-inf",
            "3.5",
            "",
            " ",
            "a b",
            "../../etc",
            "/",
            ".",
            "x" * 400,
            "'\"",
            "é/ü",
            "--help",
            "-",
            "~",
        ]
    ),
)


@FUZZ_CLI
@given(option=st.sampled_from(["--model", "--top", "FILE"]), value=option_values)
def test_predict_cli_option_values(tmp_path_factory, monkeypatch, tiny_model, option, value):
    directory = tmp_path_factory.mktemp("cli")
    monkeypatch.chdir(directory)
    good = DIGITS[0]
    args = {
        "--model": ["--model", value, str(good)],
        "--top": ["--model", str(tiny_model), "--top", value, str(good)],
        "FILE": ["--model", str(tiny_model), "--", value],
    }[option]
    with _no_hang():
        result = invoke(CliRunner(), "predict", *args)
    if result.exit_code != 0:
        _clean_failure(result, 2, 6, 7)
    else:  # --top with a valid count
        assert option == "--top" and int(value) >= 1 and result.stdout.startswith(str(good))
    assert _snapshot(directory) == {}


@pytest.fixture(scope="module")
def study_copy(trained_study, tmp_path_factory) -> tuple[str, str]:
    url, name = trained_study
    copy = tmp_path_factory.mktemp("fuzzed-study") / "study.db"
    with sqlite3.connect(sqlite_file(url)) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    return f"sqlite:///{copy}", name


def _study_state(url: str) -> tuple:
    """What a command could have written to the study: its trials and its attributes (read directly: Optuna is slow to open)."""
    with sqlite3.connect(f"file:{sqlite_file(url)}?mode=ro", uri=True) as connection:
        return tuple(
            tuple(connection.execute(query).fetchall())
            for query in (
                "SELECT number, state FROM trials ORDER BY number",
                "SELECT key, value_json FROM study_user_attributes ORDER BY key",
            )
        )


@pytest.mark.slow
@FUZZ_CLI
@given(
    option=st.sampled_from(["--study", "--trial", "--out", "--data", "--max-params", "--max-latency-ms", "--threads", "--storage"]),
    value=option_values,
)
def test_export_best_option_values(tmp_path_factory, monkeypatch, study_copy, option, value):
    """Every case stops before training (the data path is missing, or the value is bad), and writes nothing."""
    url, _ = study_copy
    directory = tmp_path_factory.mktemp("cli")
    monkeypatch.chdir(directory)
    before = _study_state(url)
    args = ["export-best", "--quiet", "--storage", url, "--data", str(directory / "absent"), option, value]
    with _no_hang():
        result = invoke(CliRunner(), *args)
    _clean_failure(result, 2, 3, 4, 5)
    assert _snapshot(directory) == {} and not list(directory.iterdir())
    assert _study_state(url) == before


@pytest.mark.slow
@FUZZ_CLI
@given(option=st.sampled_from(["--study", "--storage", "--out"]), value=option_values)
def test_report_option_values(tmp_path_factory, monkeypatch, study_copy, option, value):
    url, _ = study_copy
    directory = tmp_path_factory.mktemp("cli")
    monkeypatch.chdir(directory)
    args = {"--study": ["--storage", url, "--out", "r.html"], "--storage": ["--out", "r.html"], "--out": ["--storage", url]}[option]
    with _no_hang():
        result = invoke(CliRunner(), "report", *args, option, value)
    written = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
    if result.exit_code == 0:
        # "wrote PATH (0.1 MB); open URI": PATH may hold line breaks (an --out of "\n"), so no splitting on them
        written_line = result.stdout[result.stdout.rindex("wrote ") + len("wrote ") :]
        report = Path(written_line[: written_line.rindex(" (")])
        page = report.read_text(encoding="utf-8")
        assert page.rstrip().endswith("</html>")  # complete, not cut off
        assert not [p for p in report.parent.iterdir() if p.name.startswith(".tuner-report-")]
        if report.is_relative_to(directory):
            assert written == [str(report.relative_to(directory))]
        else:  # an absolute --out elsewhere (such as /tmp/x): tidy up
            report.unlink()
    else:
        _clean_failure(result, 2, 4)
        assert written == []  # nothing half-written
    assert len(_study_state(url)[0]) == 6


@pytest.mark.slow
@FUZZ_CLI
@given(option=st.sampled_from(["--study", "--storage", "--objectives"]), value=option_values, as_json=st.booleans())
def test_pareto_option_values(tmp_path_factory, monkeypatch, study_copy, option, value, as_json):
    url, _ = study_copy
    monkeypatch.chdir(tmp_path_factory.mktemp("cli"))
    args = ["pareto", *(["--storage", url] if option != "--storage" else []), option, value, *(["--json"] if as_json else [])]
    with _no_hang():
        result = invoke(CliRunner(), *args)
    if result.exit_code != 0:
        _clean_failure(result, 2, 4)
    else:  # a valid objective list, or a storage URL that happens to work
        assert option in ("--objectives", "--study") or value == url


@FUZZ_CLI
@given(option=st.sampled_from(["--host", "--port", "--storage"]), value=option_values)
def test_dashboard_option_values_fail_before_serving(tmp_path_factory, monkeypatch, option, value):
    """With no study database every value is refused (nothing is served, nothing created); type errors come first."""
    directory = tmp_path_factory.mktemp("cli")
    monkeypatch.chdir(directory)
    args = ["dashboard", "--storage", f"sqlite:///{directory / 'none.db'}", option, value]
    with _no_hang():
        result = invoke(CliRunner(), *args)
    _clean_failure(result, 2, 4)
    assert not list(directory.iterdir())


@pytest.mark.slow
@FUZZ_CLI
@given(host=option_values, port=st.one_of(st.integers(-5, 70_000), st.just(0)))
def test_dashboard_binds_any_host_and_port_or_fails_with_one_line(study_copy, host, port):
    """The library behind the CLI, with a study to serve: a bound server (closed again) or one ConfigError line."""
    from tuner.dashboard import prepare_dashboard

    url, _ = study_copy
    try:
        with _no_hang():
            server = prepare_dashboard(storage_url=url, host=host, port=port)
    except ConfigError as error:
        _one_clean_line(error)
    else:
        server.close()
        assert 0 <= port <= 65535 and server.port > 0


@FUZZ_CLI
@given(
    option=st.sampled_from(
        ["--workers", "--heartbeat", "--grace-period", "--reconnect-timeout", "--warm-start-from", "--warm-start-storage", "--top"]
    ),
    value=option_values,
)
def test_run_option_values_not_covered_by_test_fuzz(tmp_path_factory, monkeypatch, option, value):
    directory = tmp_path_factory.mktemp("cli")
    monkeypatch.chdir(directory)
    args = ["run", "--trials", "1", "--data", str(directory / "absent"), "--storage", f"sqlite:///{directory / 'fuzz.db'}", option, value]
    with _no_hang():
        result = invoke(CliRunner(), *args)
    _clean_failure(result, 2, 3, 4)
    assert not list(directory.iterdir())  # neither a database nor anything else


@FUZZ_CLI
@given(value=option_values)
def test_studies_storage_values(tmp_path_factory, monkeypatch, value):
    directory = tmp_path_factory.mktemp("cli")
    monkeypatch.chdir(directory)
    with _no_hang():
        result = invoke(CliRunner(), "studies", "--storage", value)
    if result.exit_code != 0:
        _clean_failure(result, 2, 4)
    else:  # an in-memory or other empty storage that opens
        assert "no studies" in result.stdout
    assert not list(directory.iterdir())
