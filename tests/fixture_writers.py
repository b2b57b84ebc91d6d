"""Writers of tiny datasets in the real on-disk formats, for the loader tests."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    """An idx file: magic 0x00000803 for (N, H, W) uint8 images or 0x00000801 for (N,) uint8 labels."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def write_fashion_mnist(folder: Path, n_train=30, n_test=20, gz=True, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{stem}-images-idx3-ubyte", x, gz)
        write_idx(folder / f"{stem}-labels-idx1-ubyte", y, gz)
        out[stem] = (x, y)
    return out


def write_cifar(root: Path, fine: bool, n_per_batch=6, seed=0) -> dict[str, np.ndarray]:
    """CIFAR-10 (``fine=False``: cifar-10-batches-py) or CIFAR-100 (``fine=True``: cifar-100-python) pickles."""
    rng = np.random.default_rng(seed)
    k = 100 if fine else 10
    folder = root / ("cifar-100-python" if fine else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    files = {"train": ["train"], "test": ["test"]} if fine else {"train": [f"data_batch_{i}" for i in range(1, 6)],
                                                                 "test": ["test_batch"]}
    key = b"fine_labels" if fine else b"labels"
    out = {"train": [], "test": []}
    for split, names in files.items():
        for name in names:
            data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
            labels = list(rng.integers(0, k, n_per_batch))
            with open(folder / name, "wb") as f:
                pickle.dump({b"data": data, key: labels, b"batch_label": name.encode()}, f)
            out[split].append((data, labels))
    meta = {b"fine_label_names": [f"c{i}".encode() for i in range(k)]} if fine else \
        {b"label_names": [f"c{i}".encode() for i in range(k)]}
    with open(folder / ("meta" if fine else "batches.meta"), "wb") as f:
        pickle.dump(meta, f)
    return out


def write_image_folder(folder: Path, classes=("cat", "dog"), per_class=3, size=32, seed=0) -> np.ndarray:
    """``folder/<class>/<i>.png`` RGB images; returns them stacked (N, H, W, 3) in class then file order."""
    rng = np.random.default_rng(seed)
    arrays = []
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(folder / name / f"{i}.png")
            arrays.append(arr)
    return np.stack(arrays)
