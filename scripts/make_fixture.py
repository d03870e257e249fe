"""Cut the committed test fixture from the original MNIST files.

    python scripts/make_fixture.py ../shared/data/mnist tests/fixtures/mnist-small

Takes the first 2,400 training and the first 600 test images (the files' own order) and writes them
as IDX .gz files with the original names, so the fixture exercises the real IDX loader.
"""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

N_TRAIN, N_TEST = 2400, 600


def cut(source: Path, target: Path, stem: str, count: int) -> None:
    with gzip.open(source / f"{stem}.gz", "rb") as handle:
        raw = handle.read()
    n_dims = raw[3]
    shape = list(struct.unpack(f">{n_dims}I", raw[4 : 4 + 4 * n_dims]))
    item = 1
    for dim in shape[1:]:
        item *= dim
    shape[0] = count
    body = raw[4 + 4 * n_dims : 4 + 4 * n_dims + count * item]
    with gzip.GzipFile(target / f"{stem}.gz", "wb", compresslevel=9, mtime=0) as out:
        out.write(raw[:4] + struct.pack(f">{n_dims}I", *shape) + body)


def main(source: str, target: str) -> None:
    src, dst = Path(source), Path(target)
    dst.mkdir(parents=True, exist_ok=True)
    for stem, count in (
        ("train-images-idx3-ubyte", N_TRAIN),
        ("train-labels-idx1-ubyte", N_TRAIN),
        ("t10k-images-idx3-ubyte", N_TEST),
        ("t10k-labels-idx1-ubyte", N_TEST),
    ):
        cut(src, dst, stem, count)


if __name__ == "__main__":
    main(*sys.argv[1:3])
