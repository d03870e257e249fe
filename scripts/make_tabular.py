"""Write a synthetic tabular classification task as a CSV folder (train.csv, test.csv) for ``tuner run --data``.

    pip install scikit-learn
    python scripts/make_tabular.py /tmp/tabular

scikit-learn's ``make_classification`` is the generator Guyon (2003) designed for the NIPS feature
selection challenge's Madelon dataset: each class is a few Gaussian clusters on the vertices of a
hypercube in an informative subspace, with redundant linear combinations, pure-noise columns and a
share of flipped labels. The settings here are fixed before any run and not tuned to tuner: 12,000
rows of 40 features (16 informative, 8 redundant, 16 noise), 6 classes of 2 clusters each, class
separation 1.0, 2% of labels flipped, seed 0; the last 2,000 rows are the test set. Unlike MNIST the
columns are not pixels (input dropout and wide layers have nothing to smooth), some are noise, and
the flipped labels put the ceiling below 100%.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_csv_folder  # noqa: E402 - after the sys.path line, so the script runs from a checkout

N_TEST = 2_000


def main(target: Path) -> None:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=12_000,
        n_features=40,
        n_informative=16,
        n_redundant=8,
        n_classes=6,
        n_clusters_per_class=2,
        class_sep=1.0,
        flip_y=0.02,
        random_state=0,
    )
    write_csv_folder(target, {"train": (x[:-N_TEST], y[:-N_TEST]), "test": (x[-N_TEST:], y[-N_TEST:])}, feature_prefix="x")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
