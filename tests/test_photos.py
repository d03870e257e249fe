"""Photos of a digit on paper, generated here: dim grey paper, bright paper, a speck beside the digit, a thin pen.

Each is converted by ``tuner.images.mnist_style`` and compared with the MNIST digit it was drawn from.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.helpers import MNIST_SMALL
from tuner.data import read_idx
from tuner.images import mnist_style

INDEX = 0  # the fixture's first test digit (a 7)


@pytest.fixture(scope="module")
def digit() -> np.ndarray:
    return read_idx(MNIST_SMALL / "t10k-images-idx3-ubyte.gz")[INDEX] / 255.0


def _photo(digit: np.ndarray, *, paper: tuple[float, float], ink: float, size=(240, 180), side=130, at=(30, 40), seed=0) -> np.ndarray:
    """Dark ink on unevenly lit paper (brightness from paper[0] on the left to paper[1] on the right), noisy."""
    height, width = size
    rng = np.random.default_rng(seed)
    alpha = np.zeros(size)
    enlarged = np.asarray(Image.fromarray(np.round(digit * 255).astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC)) / 255.0
    alpha[at[0] : at[0] + side, at[1] : at[1] + side] = np.clip(enlarged, 0, 1)
    background = np.linspace(paper[0], paper[1], width)[None, :] * np.ones((height, 1))
    return np.clip(background * (1 - alpha) + ink * alpha + rng.normal(0, 0.01, size), 0, 1).astype(np.float32)


def _similarity(converted: np.ndarray, original: np.ndarray) -> float:
    """Correlation with the original, allowing the one-pixel shift that centring by mass may cause."""
    return max(np.corrcoef(np.roll(converted, (dy, dx), (0, 1)).ravel(), original.ravel())[0, 1] for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def _centre(field: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(field.shape)
    return float((ys * field).sum() / field.sum()), float((xs * field).sum() / field.sum())


@pytest.mark.parametrize("paper", [(0.40, 0.48), (0.44, 0.44), (0.85, 0.95)], ids=["dim-uneven", "dim-even", "bright"])
def test_dark_ink_on_dim_or_bright_paper_is_found(digit, paper):
    converted = mnist_style(_photo(digit, paper=paper, ink=0.08))  # before: dim paper was not inverted, "no digit found"
    assert _similarity(converted, digit) > 0.9
    assert _centre(converted) == pytest.approx((14.0, 14.0), abs=0.6)


def test_a_speck_beside_the_digit_is_ignored(digit):
    photo = _photo(digit, paper=(0.9, 0.9), ink=0.1, size=(260, 260), at=(60, 60))
    photo[225:233, 225:233] = 0.1  # a speck of dirt in a corner
    converted = mnist_style(photo)
    assert _similarity(converted, digit) > 0.9
    assert _centre(converted) == pytest.approx((14.0, 14.0), abs=0.6)
    rows = np.flatnonzero(converted.any(axis=1))
    assert rows[-1] - rows[0] + 1 >= 19  # the digit alone fills the 20-pixel box, not the digit and the speck


def _drawn_seven(width: int) -> np.ndarray:
    image = Image.new("L", (300, 300), 235)
    ImageDraw.Draw(image).line([(80, 70), (220, 70), (130, 240)], fill=20, width=width, joint="curve")
    return np.asarray(image, dtype=np.float32) / 255.0


def test_thin_pen_strokes_are_thickened_to_mnist_width():
    thin, thick = mnist_style(_drawn_seven(3)), mnist_style(_drawn_seven(30))
    # MNIST strokes are about 2.5 pixels wide in the 20-pixel box: a 3-pixel pen on 170 pixels is 0.35 wide there.
    assert (thin > 0.5).sum() >= 0.6 * (thick > 0.5).sum()
    assert np.corrcoef(thin.ravel(), thick.ravel())[0, 1] > 0.8
