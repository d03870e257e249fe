"""Render the committed digit images that the predict tests classify.

    python scripts/make_digit_images.py ../shared/data/mnist tests/fixtures/digits

One image per class, each drawn from an MNIST *test* digit among the first 600 test images (the
ones in tests/fixtures/mnist-small, so a test can compare against the original array). The digit
chosen for a class is its most typical one: the highest cosine similarity to the mean of that
class over the full training set. The choice depends on the data alone, never on a trained model.

The images are rendered in several styles, some like a phone photo of a digit on paper (enlarged,
dark ink on an unevenly lit grey background, off-centre, noisy, JPEG). Files are named
``<digit>-test<index>-<style>.<ext>``. The output is deterministic for a given Pillow version.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tuner.data import read_idx  # noqa: E402 - after the sys.path line, so the script runs from a checkout without installing tuner

N_FIXTURE_TEST = 600
STYLES = ("mnist", "large", "inverted", "photo", "photo", "blue-ink", "inverted-bmp", "transparent", "photo", "photo")
PHOTO_CANVAS = {3: (120, 160), 4: (150, 110), 8: (160, 120), 9: (110, 150)}


def typical_digits(source: Path) -> dict[int, int]:
    """Class -> index of its most typical digit among the fixture's test images."""
    x_train = read_idx(source / "train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float64)
    y_train = read_idx(source / "train-labels-idx1-ubyte.gz")
    x_test = read_idx(source / "t10k-images-idx3-ubyte.gz")[:N_FIXTURE_TEST].reshape(-1, 784).astype(np.float64)
    y_test = read_idx(source / "t10k-labels-idx1-ubyte.gz")[:N_FIXTURE_TEST]
    unit = x_test / np.linalg.norm(x_test, axis=1, keepdims=True)
    chosen = {}
    for digit in range(10):
        mean = x_train[y_train == digit].mean(axis=0)
        similarity = unit @ (mean / np.linalg.norm(mean))
        similarity[y_test != digit] = -1.0
        chosen[digit] = int(similarity.argmax())
    return chosen


def photo(digit: np.ndarray, canvas: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Dark ink on unevenly lit grey paper, enlarged and off-centre, slightly blurred and noisy."""
    width, height = canvas
    side = int(min(width, height) * rng.uniform(0.6, 0.8))
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float64) / 255.0
    alpha = np.zeros((height, width))
    top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    alpha[top : top + side, left : left + side] = np.clip(ink, 0.0, 1.0)
    light = np.linspace(-25, 20, width)[None, :] + np.linspace(10, -10, height)[:, None]
    paper = np.array([200.0, 196.0, 184.0])[None, None, :] + light[:, :, None]
    pen = np.array([35.0, 38.0, 60.0])
    pixels = paper * (1 - alpha[:, :, None]) + pen * alpha[:, :, None] + rng.normal(0, 4, (height, width, 1))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return image.filter(ImageFilter.GaussianBlur(0.8))


def render(digit: np.ndarray, style: str, label: int, rng: np.random.Generator) -> tuple[Image.Image, str]:
    gray = Image.fromarray(digit, "L")
    if style == "mnist":
        return gray, "png"
    if style == "large":
        return gray.resize((112, 112), Image.Resampling.BICUBIC), "png"
    if style == "inverted":
        return Image.fromarray(255 - digit, "L"), "png"
    if style == "inverted-bmp":
        return Image.fromarray(255 - digit, "L").resize((42, 42), Image.Resampling.BICUBIC), "bmp"
    if style == "blue-ink":
        ink = np.asarray(gray.resize((64, 64), Image.Resampling.BICUBIC), dtype=np.float64)[:, :, None] / 255.0
        pixels = 255.0 * (1 - ink) + np.array([20.0, 40.0, 170.0]) * ink
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB"), "png"
    if style == "transparent":
        alpha = gray.resize((56, 56), Image.Resampling.BICUBIC)
        image = Image.new("RGBA", alpha.size, (20, 20, 20, 0))
        image.putalpha(alpha)
        return image, "png"
    return photo(digit, PHOTO_CANVAS[label], rng), "jpg"


def main(source: str, target: str) -> None:
    src, dst = Path(source), Path(target)
    dst.mkdir(parents=True, exist_ok=True)
    x_test = read_idx(src / "t10k-images-idx3-ubyte.gz")
    rng = np.random.default_rng(2024)
    for label, index in typical_digits(src).items():
        style = STYLES[label]
        image, ext = render(np.ascontiguousarray(x_test[index]), style, label, rng)
        options = {"quality": 80} if ext == "jpg" else {"optimize": True} if ext == "png" else {}
        image.save(dst / f"{label}-test{index:03d}-{style}.{ext}", **options)


if __name__ == "__main__":
    main(*sys.argv[1:3])
