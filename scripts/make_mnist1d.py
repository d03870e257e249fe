"""Write MNIST-1D as a CSV folder (train.csv, test.csv) that ``tuner run --data`` reads.

    pip install mnist1d
    python scripts/make_mnist1d.py /tmp/mnist1d

MNIST-1D (Greydanus 2020, arXiv:2011.14439) is a procedurally generated 1-D analogue of MNIST: ten
digit templates of 12 points, padded, translated, scaled, sheared and noised into 40-point signals.
The package generates it locally (no download) with its published defaults: 5,000 samples, seed 42,
the first 4,000 for training and the last 1,000 for testing, the same arrays as its reference
``mnist1d_data.pkl``. An MLP reaches about 68% and a CNN about 94% on its test set, so unlike MNIST
a search there is far from the ceiling. tuner's defaults were never run on it before they were fixed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_csv_folder  # noqa: E402 - after the sys.path line, so the script runs from a checkout


def main(target: Path) -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())  # the package's defaults, seed 42 among them
    splits = {"train": (data["x"], data["y"]), "test": (data["x_test"], data["y_test"])}
    write_csv_folder(target, splits, feature_prefix="x")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
