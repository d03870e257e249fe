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

import numpy as np


def main(target: Path) -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())  # the package's defaults, seed 42 among them
    target.mkdir(parents=True, exist_ok=True)
    header = ",".join([*(f"x{i}" for i in range(data["x"].shape[1])), "label"])
    for name, x, y in (("train", data["x"], data["y"]), ("test", data["x_test"], data["y_test"])):
        table = np.column_stack([x, y]).astype(object)
        table[:, -1] = y.astype(int)
        np.savetxt(target / f"{name}.csv", table, delimiter=",", header=header, comments="", fmt=["%.6f"] * x.shape[1] + ["%d"])
        print(f"{target / f'{name}.csv'}: {len(y)} rows, {x.shape[1]} features, classes {sorted(set(y.tolist()))}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
