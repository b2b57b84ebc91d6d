"""Writers of tiny datasets in the real on-disk formats, for the loader tests (written into pytest's tmp_path).

- idx (Fashion-MNIST, MNIST): big-endian magic 2049 (labels, 1 dim) or 2051 (images, 3 dims), the dims as big-endian
  uint32, then the uint8 values; optionally gzipped.
- CIFAR python pickles, as torchvision downloads them: dicts with bytes keys (b"data" an (N, 3072) uint8 array of
  1024 red, 1024 green, 1024 blue values per row, b"labels" / b"fine_labels" a list of int), and a meta file with
  b"label_names" / b"fine_label_names".
- image folders: ``<split>/<class>/<i>.png``.
"""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    """An idx file of ``array`` (uint8 (N,) labels or (N, H, W) images); ``gz`` appends ``.gz`` and gzips it."""
    magic = {1: 2049, 3: 2051}[array.ndim]
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_fashion_mnist(folder: Path, n_train: int = 30, n_test: int = 20, gz: bool = True,
                        seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four Fashion-MNIST idx files in ``folder``; returns {"train"/"t10k": (images (N, 28, 28), labels (N,))}."""
    rng = np.random.default_rng(seed)
    out = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{stem}-images-idx3-ubyte", x, gz)
        write_idx(folder / f"{stem}-labels-idx1-ubyte", y, gz)
        out[stem] = (x, y)
    return out


def write_cifar(root: Path, fine: bool, n_per_batch: int = 6,
                seed: int = 0) -> dict[str, list[tuple[np.ndarray, list[int]]]]:
    """CIFAR-10 (``fine=False``: ``root/cifar-10-batches-py``, five train batches and a test batch) or CIFAR-100
    (``fine=True``: ``root/cifar-100-python/{train,test,meta}``). Class names are ``c0``, ``c1``, ...

    Returns {"train"/"test": [(data (n, 3072) uint8, labels), one per batch file]}.
    """
    rng = np.random.default_rng(seed)
    k = 100 if fine else 10
    folder = root / ("cifar-100-python" if fine else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    files = ({"train": ["train"], "test": ["test"]} if fine else
             {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]})
    out: dict[str, list] = {"train": [], "test": []}
    for split, names in files.items():
        for name in names:
            data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
            labels = rng.integers(0, k, n_per_batch).tolist()
            batch = {b"batch_label": f"{name} of 1".encode(), b"data": data,
                     b"filenames": [f"img_{i}.png".encode() for i in range(n_per_batch)]}
            if fine:
                batch |= {b"fine_labels": labels, b"coarse_labels": [c // 5 for c in labels]}
            else:
                batch[b"labels"] = labels
            with open(folder / name, "wb") as f:
                pickle.dump(batch, f, protocol=2)
            out[split].append((data, labels))
    names = [f"c{i}".encode() for i in range(k)]
    meta = ({b"fine_label_names": names, b"coarse_label_names": [f"s{i}".encode() for i in range(20)]} if fine else
            {b"label_names": names, b"num_cases_per_batch": n_per_batch, b"num_vis": 3072})
    with open(folder / ("meta" if fine else "batches.meta"), "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return out


def write_image_folder(folder: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 3, size: int = 32,
                       mode: str = "RGB", seed: int = 0) -> np.ndarray:
    """``folder/<class>/<i>.png`` images of ``mode`` ("RGB" or "L"); returns them stacked (N, H, W, 3) or (N, H, W)
    in the order written: classes as given, then file index."""
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    arrays = []
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(arr).save(folder / name / f"{i}.png")
            arrays.append(arr)
    return np.stack(arrays)


def write_jpeg_tree(root: Path, classes: tuple[str, ...] = ("n01", "n02", "n03"), per_class: dict | None = None,
                    seed: int = 0) -> Path:
    """An ImageNet-layout tree of real JPEG files: ``root/{train,val}/<class>/<i>.JPEG``, images of varied sizes
    (40..72 px a side) whose mean colour depends on the class (so a network can learn them). ``per_class`` maps split
    to images per class (default train 12, val 4). Returns ``root``."""
    rng = np.random.default_rng(seed)
    per_class = per_class or {"train": 12, "val": 4}
    for split, n in per_class.items():
        for k, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                h, w = (int(v) for v in rng.integers(40, 73, 2))
                base = np.zeros(3)
                base[k % 3] = 170
                arr = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(root / split / name / f"{i}.JPEG", quality=90)
    return root
