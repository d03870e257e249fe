"""Write scikit-learn's handwritten digits as a CSV folder (train.csv, test.csv) that ``tuner run --data`` reads.

    pip install scikit-learn
    python scripts/make_digits.py /tmp/digits

The data is the test part of UCI's "Optical Recognition of Handwritten Digits" (Alpaydin & Kaynak
1998), as scikit-learn ships it inside its wheel (no download): 1,797 images of 8 x 8 pixels, each a
count of 0-16, 10 classes. This script shuffles them with seed 0 and keeps the last 360 (a fifth) as
the test set, stratified by class, so that 1,437 images remain for tuning. Small and coarse where
MNIST is large and fine: an epoch of 1,437 rows is a handful of optimizer steps, the regime where a
default batch size or epoch budget chosen on 54,000 rows would show its limits. tuner's defaults were
never run on it before they were fixed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_csv_folder  # noqa: E402 - after the sys.path line, so the script runs from a checkout

TEST_FRACTION = 0.2
SEED = 0


def main(target: Path) -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SEED, stratify=y)
    write_csv_folder(target, {"train": (x_train, y_train), "test": (x_test, y_test)}, feature_prefix="pixel", integer_features=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
