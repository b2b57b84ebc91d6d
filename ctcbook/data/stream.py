"""Streaming image folders: data that does not fit in memory, read from disk by DataLoader worker processes.

An ImageFolder tree (ImageNet layout) is decoded in the workers with torchvision's presets; each image's crop and flip
are seeded by (run seed, epoch, image index), so they depend neither on the workers, the world size nor a resume; the
order comes from a DistributedSampler. A user's ImageFolder ``folder:<name>`` can be a transfer target.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torch.utils.data.distributed import DistributedSampler

from .images import ImageSet, stratified_indices, to_format
from .sources import (DataCorruptError, DataNotFoundError, in_threads, list_image_folder, open_image, places,
                      sub_folders)

#: ImageNet's per-channel mean and std in [0, 1] units (torchvision's references), the model's normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP, RESIZE = 224, 256
STREAM_SUFFIXES = (".jpg", ".jpeg", ".png")  # compared lower-case: ImageNet's .JPEG included

#: Streamed datasets: name -> (folder names tried under $CTCBOOK_DATA, {engine split: folder split}, how to get it).
STREAMED: dict[str, tuple[tuple[str, ...], dict[str, str], str]] = {
    "imagenet": (("imagenet", "ILSVRC2012", "imagenet-1k"), {"train": "train", "test": "val"},
                 "download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org (an account "
                 "is needed), unpack them into $CTCBOOK_DATA/imagenet/train/<wnid>/*.JPEG and "
                 "$CTCBOOK_DATA/imagenet/val/<wnid>/*.JPEG (the validation images sorted into class folders, e.g. "
                 "with the valprep.sh script of the PyTorch examples repository)"),
}


def is_streamed(name: str) -> bool:
    """True for datasets the engine streams from disk rather than keeping them in memory."""
    return name in STREAMED


def find_split(name: str, split: str) -> Path:
    """The folder of ``split`` of streamed dataset ``name`` under ``$CTCBOOK_DATA`` (else DataNotFoundError)."""
    if name not in STREAMED:
        raise ValueError(f"name must be one of the streamed datasets {tuple(STREAMED)}, got {name!r}")
    folders, splits, how = STREAMED[name]
    if split not in splits:
        raise ValueError(f"split of streamed dataset {name!r} must be one of {tuple(splits)}, got {split!r}")
    tried = places(None, [], [f"{f}/{splits[split]}" for f in folders])
    for folder in tried:
        if folder.is_dir():
            return folder
    have = [p.parent for p in tried if p.parent.is_dir()]
    note = f" ({', '.join(map(str, have))} exists but has no {splits[split]!r} folder)" if have else ""
    raise DataNotFoundError(name, tried, how + note + ("" if tried else " (CTCBOOK_DATA is not set)"))


def train_transform(size: int = CROP):
    """RandomResizedCrop(size) + horizontal flip, to a uint8 (3, size, size) tensor (torchvision's train preset)."""
    from torchvision import transforms as T

    return T.Compose([T.RandomResizedCrop(size, antialias=True), T.RandomHorizontalFlip(), T.PILToTensor()])


def eval_transform(size: int = CROP, resize: int = RESIZE):
    """Resize(resize) of the shorter side + CenterCrop(size), to a uint8 (3, size, size) tensor."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(resize, antialias=True), T.CenterCrop(size), T.PILToTensor()])


class StreamFolder(Dataset):
    """The images of ``folder/<class>/*.{jpg,jpeg,png}``, read on demand as RGB: ``ds[i]`` or ``ds[(epoch, i)]`` ->
    (uint8 image after ``transform``, label, i), with an epoch the transform seeded by (``seed``, epoch, i)."""

    def __init__(self, folder: Path, transform, *, seed: int = 0, dataset: str = "imagefolder"):
        self.folder, self.transform, self.seed, self.dataset = Path(folder), transform, seed, dataset
        self.classes, paths, labels = list_image_folder(self.folder, dataset, STREAM_SUFFIXES,
                                                        " (expected <split>/<class>/*.JPEG)")
        self.samples = list(zip(paths, labels))
        self.targets = torch.tensor(labels, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load(self, path: str):
        return open_image(path, self.dataset)

    def __getitem__(self, item):
        epoch, i = item if isinstance(item, tuple) else (None, item)
        path, label = self.samples[i]
        img = self.load(path)
        if epoch is None:
            return self.transform(img), label, i
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 100_003 + epoch) * 10_000_019 + i)
            return self.transform(img), label, i


class _EpochSampler(Sampler):
    """Yields (epoch, index) pairs from a DistributedSampler, so workers know the epoch of each item."""

    def __init__(self, sampler: DistributedSampler):
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, int(i)) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class StreamBatches:
    """This rank's training batches (``batch_size`` per rank, tail dropped) as ``(x, y, index)`` on ``device``."""

    def __init__(self, dataset: StreamFolder, *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 device: torch.device | str = "cpu", workers: int = 0,
                 memory_format: torch.memory_format = torch.contiguous_format):
        self.dataset, self.device, self.memory_format = dataset, torch.device(device), memory_format
        self.labels = dataset.targets
        self.sampler = _EpochSampler(DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                                        seed=seed, drop_last=True))
        more = {"persistent_workers": True, "prefetch_factor": 4} if workers > 0 else {}
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, drop_last=True,
                                 num_workers=workers, pin_memory=self.device.type == "cuda", **more)

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        self.sampler.set_epoch(epoch)
        for x, y, index in self.loader:
            x = x.to(self.device, non_blocking=True).float().div_(255)
            yield (x.contiguous(memory_format=self.memory_format), y.to(self.device, non_blocking=True),
                   index.to(self.device, non_blocking=True))


def eval_loader(dataset: StreamFolder, *, batch_size: int, rank: int = 0, world_size: int = 1,
                device: torch.device | str = "cpu", workers: int = 0) -> DataLoader:
    """This rank's share of an evaluation set: every ``world_size``-th image from ``rank``, no padding, in order."""
    return DataLoader(Subset(dataset, range(rank, len(dataset), world_size)), batch_size=batch_size,
                      num_workers=workers, pin_memory=torch.device(device).type == "cuda")


# --- a user's ImageFolder as a transfer target --------------------------------------------------------------
USER_PREFIX = "folder:"
#: engine split -> folder names tried, in order (ImageNet's layout calls its test split "val")
USER_SPLITS = {"train": ("train",), "test": ("test", "val")}


def is_user_folder(name: str) -> bool:
    """True for ``folder:<name>``: an ImageFolder tree the user put under ``$CTCBOOK_DATA/<name>``."""
    return isinstance(name, str) and name.startswith(USER_PREFIX)


def user_folder_split(name: str, split: str) -> Path:
    """The folder of ``split`` ("train", or "test": ``test/`` else ``val/``) of the user's ImageFolder ``name``."""
    bare = name.removeprefix(USER_PREFIX)
    if not bare or bare in (".", "..") or "/" in bare or os.sep in bare:
        raise ValueError(f"name of a user ImageFolder must be 'folder:<a folder name under $CTCBOOK_DATA>', "
                         f"got {name!r}")
    if split not in USER_SPLITS:
        raise ValueError(f"split of user ImageFolder {name!r} must be one of {tuple(USER_SPLITS)}, got {split!r}")
    tried = places(None, [], [f"{bare}/{f}" for f in USER_SPLITS[split]])
    for folder in tried:
        if folder.is_dir():
            return folder
    raise DataNotFoundError(USER_PREFIX + bare, tried,
                            f"put the images in $CTCBOOK_DATA/{bare}/train/<class>/*.jpg and "
                            f"$CTCBOOK_DATA/{bare}/test/<class>/*.jpg (or val/ for the test split; the same class "
                            "folders in both)" + ("" if tried else " (CTCBOOK_DATA is not set)"))


def load_user_folder(name: str, split: str, *, channels: int, size: int, cap: int | None = None,
                     seed: int = 0) -> ImageSet:
    """Split ``split`` of the user's ImageFolder in memory at a source's format (the evaluation transform scaled to
    ``size``, then :func:`ctcbook.data.to_format`); ``cap``: the stratified subset, chosen before decoding."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    bare = USER_PREFIX + name.removeprefix(USER_PREFIX)
    folder = StreamFolder(user_folder_split(name, split), eval_transform(size, round(size * RESIZE / CROP)),
                          dataset=bare)
    if split != "train":
        train = user_folder_split(name, "train")
        if folder.classes != (classes := sub_folders(train)):
            raise DataCorruptError(bare, folder.folder, f"its class folders {list(folder.classes)} differ from those "
                                                        f"of the train split {train} {list(classes)}")
    return to_format(_in_memory(folder, cap, seed), channels, size)


def _in_memory(folder: StreamFolder, cap: int | None, seed: int) -> ImageSet:
    """The items of ``folder`` as one uint8 ImageSet; ``cap``: a stratified subset, chosen before decoding."""
    keep = range(len(folder)) if cap is None else stratified_indices(folder.targets, folder.num_classes, cap,
                                                                     seed).tolist()
    images = in_threads(lambda i: folder[i][0], keep)
    return ImageSet(f"{folder.dataset}/{folder.folder.name}" + ("" if cap is None else f"(n={len(keep)},seed={seed})"),
                    torch.stack(images), folder.targets[list(keep)].clone(), folder.classes)


def load_streamed(name: str, split: str, *, cap: int | None, seed: int = 0) -> ImageSet:
    """A stratified ``cap`` of a streamed split in memory, in evaluation transforms (None: all, 150 KB an image)."""
    return _in_memory(StreamFolder(find_split(name, split), eval_transform(), dataset=name), cap, seed)


def user_target(name: str) -> dict:
    """The fields of the transfer-target spec of the user's ImageFolder ``folder:<name>``."""
    train = user_folder_split(name, "train")
    bare = name.removeprefix(USER_PREFIX)
    return {"dataset": USER_PREFIX + bare, "train_split": "train", "test_split": "test",
            "description": f"the user's ImageFolder {train.parent} (train/ and {user_folder_split(name, 'test').name}"
                           f"/, resized and centre-cropped to the source's format)"}
