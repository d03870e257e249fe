"""Make the committed fixtures for users' own data from the committed MNIST cut.

    python scripts/make_userdata_fixtures.py

* tests/fixtures/digits-7x7.csv: the first 600 training digits of tests/fixtures/mnist-small, each
  averaged over 4x4 blocks into 49 numeric columns, with the label spelled out ("zero".."nine") in a
  `digit` column, as a CSV table of someone's own would look.
* tests/fixtures/digit-folders/<name>/NNN.png: the first 15 training digits of each class as PNGs,
  one sub-folder per class, some enlarged to 56x56 so the loader's resizing is exercised.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tuner.data import read_idx  # noqa: E402 - after the sys.path line, so the script runs from a checkout without installing tuner

ROOT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def main() -> None:
    images = read_idx(ROOT / "mnist-small" / "train-images-idx3-ubyte.gz")
    labels = read_idx(ROOT / "mnist-small" / "train-labels-idx1-ubyte.gz")

    pooled = images[:600].reshape(600, 7, 4, 7, 4).mean(axis=(2, 4))
    with (ROOT / "digits-7x7.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"p{i}" for i in range(49)] + ["digit"])
        for row, label in zip(pooled.reshape(600, 49), labels[:600], strict=True):
            writer.writerow([f"{v:.1f}" for v in row] + [NAMES[label]])

    folders = ROOT / "digit-folders"
    shutil.rmtree(folders, ignore_errors=True)
    for digit, name in enumerate(NAMES):
        (folders / name).mkdir(parents=True)
        for count, index in enumerate(np.flatnonzero(labels == digit)[:15]):
            image = Image.fromarray(images[index])
            if count % 3 == 0:
                image = image.resize((56, 56), Image.Resampling.BILINEAR)
            image.save(folders / name / f"{count:03d}.png", optimize=True)


if __name__ == "__main__":
    main()
