#!/usr/bin/env python3
"""Regenerates the small data fixtures the data-layer tests read (numpy needed; outputs are
committed, so tests do not need this script). Run from the repository root."""
import gzip, json, os, struct
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))

def idx(path, array, code):
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)

d = os.path.join(here, "tiny-idx"); os.makedirs(d, exist_ok=True)
images = np.arange(5 * 2 * 3, dtype=np.uint8).reshape(5, 2, 3) * 8
labels = np.array([0, 1, 2, 1, 0], dtype=np.uint8)
idx(os.path.join(d, "train-images.gz"), images, 0x08)
idx(os.path.join(d, "train-labels.gz"), labels, 0x08)
idx(os.path.join(d, "test-images"), images[:2], 0x08)
idx(os.path.join(d, "test-labels"), labels[:2], 0x08)

d = os.path.join(here, "npy"); os.makedirs(d, exist_ok=True)
x = (np.arange(12, dtype=np.float64).reshape(4, 3) / 4.0)
np.save(os.path.join(d, "f4.npy"), x.astype("<f4"))
np.save(os.path.join(d, "f8.npy"), x.astype("<f8"))
np.save(os.path.join(d, "u1.npy"), (x * 4).astype("|u1"))
np.save(os.path.join(d, "i4.npy"), np.array([3, 0, 2, 1], dtype="<i4"))
np.save(os.path.join(d, "i8.npy"), np.array([3, 0, 2, 1], dtype="<i8"))
np.save(os.path.join(d, "be-f4.npy"), x.astype(">f4"))
np.save(os.path.join(d, "fortran.npy"), np.asfortranarray(x.astype("<f4")))
np.save(os.path.join(d, "f2.npy"), x.astype("<f2"))
with open(os.path.join(d, "v2-f4.npy"), "wb") as f:
    np.lib.format.write_array(f, x.astype("<f4"), version=(2, 0))
