"""ImageSet, the in-memory labelled uint8 image set every loader returns, and the operations on it.

Every operation returns a new :class:`ImageSet` (or its input when there is nothing to do), never modifying its input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

#: ITU-R BT.601 luma weights for R, G, B (as PIL's ``convert("L")`` and torchvision's ``rgb_to_grayscale`` use).
LUMA_601 = (0.299, 0.587, 0.114)


@dataclass(frozen=True, eq=False)
class ImageSet:
    """uint8 images (N, C, H, W) and int64 labels on the CPU, class names, and a ``name`` each operation extends.
    Equality is identity: comparing tensors field by field has no single truth value."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        who = f"ImageSet {self.name!r}"
        if not isinstance(self.images, torch.Tensor) or not isinstance(self.labels, torch.Tensor):
            raise ValueError(f"{who}: images and labels must be torch.Tensors, got {type(self.images).__name__} and "
                             f"{type(self.labels).__name__}")
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"{who}: images must be uint8 of shape (N, C, H, W), got {self.images.dtype} of shape "
                             f"{tuple(self.images.shape)}")
        if self.images.device.type != "cpu" or self.labels.device.type != "cpu":
            raise ValueError(f"{who}: images and labels must be on the CPU, got {self.images.device} and "
                             f"{self.labels.device} (move batches to the device where they are used)")
        n = self.images.shape[0]
        if self.labels.dtype != torch.int64 or tuple(self.labels.shape) != (n,):
            raise ValueError(f"{who}: labels must be int64 of shape ({n},), got {self.labels.dtype} of shape "
                             f"{tuple(self.labels.shape)}")
        if not isinstance(self.classes, tuple) or not self.classes or not all(isinstance(c, str) for c in self.classes):
            raise ValueError(f"{who}: classes must be a non-empty tuple of str, got {self.classes!r}")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise ValueError(f"{who}: labels must lie in 0..{len(self.classes) - 1} ({len(self.classes)} classes), "
                             f"got {int(self.labels.min())}..{int(self.labels.max())}")
        for name in ("images", "labels"):  # contiguous() returns the tensor itself where it already is
            object.__setattr__(self, name, getattr(self, name).contiguous())

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"ImageSet({self.name!r}, {len(self)} images {tuple(self.images.shape[1:])}, "
                f"{self.num_classes} classes)")


def select_classes(ds: ImageSet, classes: Sequence[int]) -> ImageSet:
    """The images of ``classes``, relabelled 0..k-1 in the given order ([7, 2]: 7 -> 0, 2 -> 1); image order kept."""
    try:
        wanted = [int(c) for c in classes]
        if any(isinstance(c, (bool, float, str)) for c in classes):
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"classes must be a sequence of int labels, got {classes!r}") from None
    bad = [c for c in wanted if not 0 <= c < ds.num_classes]
    if not wanted or bad or len(set(wanted)) != len(wanted):
        raise ValueError(f"classes must be distinct labels in 0..{ds.num_classes - 1}, got {wanted}")
    new = torch.full((ds.num_classes,), -1, dtype=torch.int64)
    new[wanted] = torch.arange(len(wanted))
    relabelled = new[ds.labels]
    keep = relabelled >= 0
    return ImageSet(f"{ds.name}[{','.join(map(str, wanted))}]", ds.images[keep].contiguous(), relabelled[keep],
                    tuple(ds.classes[c] for c in wanted))


def stratified_indices(labels: torch.Tensor, num_classes: int, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of a stratified subset of ``n`` labels: each class's share (largest remainder) at random."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if n >= len(labels):
        return torch.arange(len(labels))
    gen = torch.Generator().manual_seed(int(seed))
    counts = torch.bincount(labels, minlength=num_classes)
    share = counts.double() * n / len(labels)
    quota = torch.floor(share).long()
    remainder = share - quota
    quota[torch.argsort(remainder, descending=True, stable=True)[: n - int(quota.sum())]] += 1
    picked = []
    for k in range(num_classes):
        idx = (labels == k).nonzero().flatten()
        picked.append(idx[torch.randperm(len(idx), generator=gen)[: int(quota[k])]])
    return torch.cat(picked).sort().values


def subsample(ds: ImageSet, n: int | None, seed: int) -> ImageSet:
    """A stratified subset of ``n`` images, image order kept; ``ds`` itself for ``n`` None or >= len(ds)."""
    if n is None:
        return ds
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be None or an int >= 1, got {n!r}")
    if n >= len(ds):
        return ds
    keep = stratified_indices(ds.labels, ds.num_classes, n, seed)
    return ImageSet(f"{ds.name}(n={n},seed={seed})", ds.images[keep].contiguous(), ds.labels[keep], ds.classes)


def unseen_subset(full: ImageSet, used: ImageSet, n: int, seed: int = 1) -> ImageSet:
    """A stratified subset of ``n`` images of ``full`` whose content is not in ``used`` (duplicates excluded too)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"heldout must be None or an integer >= 1, got {n!r}")
    seen = {im.numpy().tobytes() for im in used.images}
    keep = torch.tensor([im.numpy().tobytes() not in seen for im in full.images])
    if int(keep.sum()) < n:
        raise ValueError(f"heldout = {n} exceeds the {int(keep.sum())} images of {full.name} that were not used "
                         "(lower heldout or the training-set size)")
    rest = ImageSet(f"{full.name}[unseen]", full.images[keep], full.labels[keep], full.classes)
    return subsample(rest, n, seed=seed)


def to_format(ds: ImageSet, channels: int, size: int) -> ImageSet:
    """Images as uint8 ``channels`` x ``size`` x ``size`` (grey to RGB, RGB to luma, antialiased bilinear resize)."""
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    have = ds.images.shape[1]
    if have not in (1, 3):
        raise ValueError(f"ImageSet {ds.name!r} has {have} channels; to_format converts only 1 or 3")
    if have == channels and tuple(ds.images.shape[-2:]) == (size, size):
        return ds
    x = ds.images.float()
    if have == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    elif have == 3 and channels == 1:
        x = (x * torch.tensor(LUMA_601).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = x.round().clamp(0, 255).to(torch.uint8).contiguous()
    return ImageSet(f"{ds.name}->{channels}x{size}x{size}", out, ds.labels, ds.classes)
