"""Inputs for ``predict``: images and ``.npy`` arrays turned into MNIST-style pixel rows.

An image is converted the way MNIST itself was made: grayscale, the digit white on black (dark ink
on lighter paper, however dim, is inverted), fitted into a 20x20 box and placed in a 28x28 field
with its centre of mass in the middle, scaled to [0, 1]. For photos: only the largest group of
strokes is kept (a speck elsewhere does not widen the crop), and thin pen strokes are thickened to
MNIST's stroke width. An array is taken as already in that form (like MNIST's own
arrays) and only scaled.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuner.errors import InputImageError
from tuner.text import first_line

__all__ = ["IMAGE_SIDE", "InputBatch", "load_inputs", "read_image", "read_array", "read_numeric_npy", "mnist_style"]

IMAGE_SIDE = 28
_BOX = 20  # MNIST digits fill a 20x20 box inside the 28x28 field
_CENTRE = 14.0  # where MNIST puts the centre of mass (row and column, pixel indices)
_INK = 0.15  # share of the digit's contrast below which a pixel counts as paper, not ink
_MIN_CONTRAST = 0.1  # less than this between paper and darkest stroke: there is no digit to read
_PAPER_SIZE = 64  # background estimation works on a copy this small
_STROKE_SHARE = 0.3  # the filter spans this share of the picture: wider than any stroke of a digit
_WORKING_SIZE = 512  # phone photos are shrunk to this first; a digit needs far fewer pixels
_INK_SHARE = 0.1  # percent of the pixels at each end of the histogram that decide which side is ink
_STROKE_GAP = 0.04  # strokes closer than this share of the picture's side belong to one digit
_MNIST_STROKE = 2.5  # MNIST's stroke width, in pixels of the 20x20 box
_THIN = 0.6  # strokes thinner than this share of MNIST's are thickened
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # more than 8 bits per pixel


@dataclass(frozen=True, eq=False)
class InputBatch:
    """The rows of one input file: one name per row (``file`` or ``file[i]`` for a batch)."""

    path: Path
    names: tuple[str, ...]
    pixels: np.ndarray  # (rows, features), float32 in [0, 1]


def load_inputs(path: str | Path, *, input_dim: int = IMAGE_SIDE * IMAGE_SIDE) -> InputBatch:
    """Read one image or ``.npy`` file as rows of ``input_dim`` features."""
    path = Path(path)
    try:
        if not path.exists():
            raise InputImageError(f"{path}: no such file")
        if path.is_dir():
            raise InputImageError(f"{path}: is a directory, not an image or .npy file")
    except (OSError, ValueError) as exc:  # e.g. a name too long for the file system
        raise InputImageError(f"{path}: cannot read this path ({getattr(exc, 'strerror', None) or exc})") from None
    if path.suffix.lower() == ".npy":
        pixels = read_array(path, input_dim=input_dim)
        names = (str(path),) if len(pixels) == 1 else tuple(f"{path}[{i}]" for i in range(len(pixels)))
        return InputBatch(path=path, names=names, pixels=pixels)
    if input_dim != IMAGE_SIDE * IMAGE_SIDE:
        raise InputImageError(
            f"{path}: the model expects {input_dim} features,"
            f" but images become {IMAGE_SIDE}x{IMAGE_SIDE} = {IMAGE_SIDE * IMAGE_SIDE}; pass a .npy array"
        )
    return InputBatch(path=path, names=(str(path),), pixels=read_image(path).reshape(1, -1))


def read_image(path: str | Path) -> np.ndarray:
    """A PNG/JPEG/BMP (any format Pillow reads, any size) as one 28x28 MNIST-style array.

    8-bit, 16-bit and float pixels are scaled by their range; an animation gives its first frame.
    A picture over Pillow's pixel limit (about 89 megapixels) is refused before it is decoded.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Pillow's notes on damaged metadata (corrupt EXIF) would add lines to predict's one-line errors.
            warnings.simplefilter("ignore", UserWarning)
            # Pillow only warns between its pixel limit and twice that; a picture that large is refused here, not decoded.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.draft("L", (_WORKING_SIZE, _WORKING_SIZE))  # JPEG only: decode at reduced size
                image = ImageOps.exif_transpose(opened)  # phone photos store their rotation in EXIF
                image.thumbnail((_WORKING_SIZE, _WORKING_SIZE))
                gray = _grayscale(image)
    except InputImageError as exc:
        raise InputImageError(f"{path}: {exc}") from None
    except UnidentifiedImageError:
        raise InputImageError(f"{path}: not an image (expected PNG, JPEG, BMP or a .npy array)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputImageError(f"{path}: the image is too large (over {Image.MAX_IMAGE_PIXELS:,} pixels); scale it down first") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        # Pillow reports truncated or corrupt files with any of these.
        raise InputImageError(f"{path}: cannot read the image ({first_line(exc)})") from None
    try:
        return mnist_style(gray)
    except InputImageError as exc:
        raise InputImageError(f"{path}: {exc}") from None


def _grayscale(image) -> np.ndarray:
    from PIL import Image

    if image.mode in _WIDE_MODES:
        return _wide_grayscale(image)
    if "A" in image.getbands() or "transparency" in image.info:
        # Transparent areas are paper: put the drawing on white before dropping colour.
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def _wide_grayscale(image) -> np.ndarray:
    """16-bit, 32-bit and float grayscale, scaled by its range: Pillow's conversion to 8 bits clips at 255."""
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        raise InputImageError("the image holds NaN or infinite pixel values")
    low, high = float(values.min()), float(values.max())
    if image.mode.startswith("I;16"):
        full = 65535.0
    elif low < 0 or high > 65535:
        raise InputImageError(f"pixel values must lie in [0, 1], [0, 255] or [0, 65535], got [{low:g}, {high:g}]")
    elif image.mode == "F" and high <= 1:
        full = 1.0
    else:  # 32-bit integers or floats: no fixed range, so the smallest usual one that holds the values
        full = 255.0 if high <= 255 else 65535.0
    return (values / full).astype(np.float32)


def mnist_style(gray: np.ndarray) -> np.ndarray:
    """A grayscale array in [0, 1] of any size as a 28x28 MNIST digit: white ink on black, centred."""
    from PIL import Image

    gray = _ink_bright(gray)
    ink = np.clip(gray - _paper(gray), 0.0, None)
    peak = float(ink.max())
    if peak < _MIN_CONTRAST:
        raise InputImageError("no digit found (the image is almost uniform)")
    ink /= peak
    ink[ink < _INK] = 0.0
    ink = _largest_stroke_group(ink)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = _thickened(ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])

    height, width = crop.shape
    scale = _BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(np.round(crop * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    patch = np.asarray(resized, dtype=np.float32)
    patch /= patch.max()

    ys, xs = np.indices(patch.shape)
    total = patch.sum()
    top = _place(_CENTRE - float((ys * patch).sum() / total), patch.shape[0])
    left = _place(_CENTRE - float((xs * patch).sum() / total), patch.shape[1])
    field = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    field[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    return field


def _ink_bright(gray: np.ndarray) -> np.ndarray:
    """The picture with its ink brighter than its paper, decided by contrast, not by absolute brightness.

    The paper is what surrounds the digit (the border's median); the ink is whichever end of the
    histogram lies further from it. Dark ink on dim grey paper (0.4) is inverted like ink on white.
    """
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    paper = float(np.median(border))
    darkest, brightest = np.percentile(gray, [_INK_SHARE, 100.0 - _INK_SHARE])
    return 1.0 - gray if paper - darkest > brightest - paper else gray


def _largest_stroke_group(ink: np.ndarray) -> np.ndarray:
    """Only the group of nearby strokes with the most ink: a speck or a smudge elsewhere is not part of the digit."""
    from scipy import ndimage

    strokes = ink > 0
    near = ndimage.distance_transform_edt(~strokes) <= max(1.0, _STROKE_GAP * max(ink.shape))
    groups, count = ndimage.label(near, structure=np.ones((3, 3)))
    if count <= 1:
        return ink
    mass = ndimage.sum(ink, groups, index=np.arange(1, count + 1))
    return np.where(groups == int(np.argmax(mass)) + 1, ink, 0.0)


def _thickened(crop: np.ndarray) -> np.ndarray:
    """Strokes widened to MNIST's width (relative to the digit's size) where a thin pen drew them.

    The stroke width is twice the typical distance from a stroke's middle to its edge; thin strokes
    grow by copying each pixel's nearest ink outwards.
    """
    from scipy import ndimage

    target = _MNIST_STROKE * max(crop.shape) / _BOX
    solid = crop >= 0.5
    if not solid.any():
        return crop
    width = 2.0 * float(np.percentile(ndimage.distance_transform_edt(solid)[solid], 90))
    if width >= _THIN * target:
        return crop
    grow = (target - width) / 2.0
    margin = int(np.ceil(grow))
    padded = np.pad(crop, margin)
    distance, (near_rows, near_cols) = ndimage.distance_transform_edt(np.pad(~solid, margin, constant_values=True), return_indices=True)
    return np.where(distance <= grow, np.maximum(padded, padded[near_rows, near_cols]), padded)


def _paper(gray: np.ndarray) -> np.ndarray:
    """The paper's brightness under the ink, which uneven light makes vary across a photo.

    A grey-scale opening (minimum, then maximum filter) wider than any pen stroke removes the
    strokes and keeps the slowly varying background. It runs on a small copy for speed.
    """
    from PIL import Image, ImageFilter

    image = Image.fromarray(np.round(gray * 255).astype(np.uint8))
    small = image.copy()
    small.thumbnail((_PAPER_SIZE, _PAPER_SIZE), Image.Resampling.BOX)
    size = max(3, round(min(small.size) * _STROKE_SHARE) | 1)
    opened = small.filter(ImageFilter.MinFilter(size)).filter(ImageFilter.MaxFilter(size))
    paper = opened.filter(ImageFilter.BoxBlur(size // 2)).resize(image.size, Image.Resampling.BILINEAR)
    return np.asarray(paper, dtype=np.float32) / 255.0


def _place(offset: float, length: int) -> int:
    return int(min(max(round(offset), 0), IMAGE_SIDE - length))


def read_array(path: str | Path, *, input_dim: int = IMAGE_SIDE * IMAGE_SIDE) -> np.ndarray:
    """A ``.npy`` of one sample or a batch, as (rows, input_dim) float32 in [0, 1].

    Accepted: one sample as any shape of input_dim values ((input_dim,), (28, 28), (32, 32, 3)); a batch
    as (N, ...) of such samples ((N, input_dim), (N, 28, 28), (N, 28, 28, 1)). Values in [0, 1] are kept,
    values in [0, 255] are divided by 255.
    """
    path = Path(path)
    array = read_numeric_npy(path)
    rows = _as_rows(array, input_dim)
    if rows is None:
        side = int(round(input_dim**0.5))
        square = f" or ({side}, {side})" if side * side == input_dim else ""
        raise InputImageError(
            f"{path}: array of shape {array.shape} is not one sample or a batch"
            f" (expected one sample of {input_dim} values, such as ({input_dim},){square}, or (N, ...) of them)"
        )
    if rows.shape[0] == 0:
        raise InputImageError(f"{path}: the array holds no samples")
    return _scaled(rows, path)


def read_numeric_npy(path: Path) -> np.ndarray:
    """A .npy file's array, refused (one InputImageError line) unless it is readable, unpickled and numeric."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputImageError(f"{path}: not a readable .npy array ({first_line(exc)})") from None
    if not isinstance(array, np.ndarray) or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputImageError(f"{path}: expected a numeric array, got {getattr(array, 'dtype', type(array).__name__)}")
    return array


def _as_rows(array: np.ndarray, input_dim: int) -> np.ndarray | None:
    shape = array.shape
    if array.ndim >= 1 and int(np.prod(shape)) == input_dim:
        return array.reshape(1, input_dim)  # one sample in any shape of input_dim values: (784,), (28, 28), (32, 32, 3)
    if array.ndim >= 2 and int(np.prod(shape[1:])) == input_dim:
        return array.reshape(shape[0], input_dim)  # a batch of such samples, as the training .npz held them
    return None


def _scaled(rows: np.ndarray, path: Path) -> np.ndarray:
    values = rows.astype(np.float64)
    if not np.isfinite(values).all():
        raise InputImageError(f"{path}: the array holds NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 255:
        raise InputImageError(f"{path}: values must lie in [0, 1] or [0, 255], got [{low:g}, {high:g}]")
    integer = np.issubdtype(rows.dtype, np.integer)
    return (values / (255.0 if integer or high > 1.0 else 1.0)).astype(np.float32)
