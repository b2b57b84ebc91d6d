"""ImageSet, the in-memory labelled image set every loader returns, and the operations on it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ImageSet:
    """A labelled image set held in memory.

    Attributes:
        name: e.g. ``"fashion_mnist/train"``; operations append what they did (``[0, 1]``, ``n=500``).
        images: uint8 (N, C, H, W), CPU, contiguous.
        labels: int64 (N,), values 0..num_classes-1.
        classes: class names; index = label.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"{self.name}: images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.name}: labels must be int64 of shape ({self.images.shape[0]},), got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(f"{self.name}: labels must lie in 0..{len(self.classes) - 1}, got "
                             f"{int(self.labels.min())}..{int(self.labels.max())}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def select_classes(ds: ImageSet, classes: Sequence[int]) -> ImageSet:
    """Keep the images of ``classes`` and relabel them 0..k-1 in the given order."""
    classes = [int(c) for c in classes]
    bad = [c for c in classes if not 0 <= c < ds.num_classes]
    if not classes or bad or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct labels in 0..{ds.num_classes - 1}, got {classes}")
    new = torch.full((ds.num_classes,), -1, dtype=torch.int64)
    new[classes] = torch.arange(len(classes))
    keep = new[ds.labels] >= 0
    return ImageSet(f"{ds.name}{classes}", ds.images[keep].contiguous(), new[ds.labels[keep]],
                    tuple(ds.classes[c] for c in classes))


def subsample(ds: ImageSet, n: int | None, seed: int) -> ImageSet:
    """A stratified subset of ``n`` images (each class in proportion to its share), the same for the same seed.

    ``n`` None or >= len(ds) returns ``ds`` unchanged.
    """
    if n is None or n >= len(ds):
        return ds
    if n < 1:
        raise ValueError(f"n must be None or >= 1, got {n}")
    gen = torch.Generator().manual_seed(seed)
    counts = torch.bincount(ds.labels, minlength=ds.num_classes)
    quota = torch.floor(counts.double() * n / len(ds)).long()
    remainder = counts.double() * n / len(ds) - quota
    quota[torch.argsort(remainder, descending=True)[: n - int(quota.sum())]] += 1
    picked = []
    for k in range(ds.num_classes):
        idx = (ds.labels == k).nonzero().flatten()
        picked.append(idx[torch.randperm(len(idx), generator=gen)[: int(quota[k])]])
    keep = torch.cat(picked).sort().values
    return ImageSet(f"{ds.name}(n={n},seed={seed})", ds.images[keep].contiguous(), ds.labels[keep], ds.classes)


def to_format(ds: ImageSet, channels: int, size: int) -> ImageSet:
    """Bring images to ``channels`` (1 or 3) x ``size`` x ``size``: grey -> RGB by repetition, RGB -> grey by ITU-R
    601 luma, bilinear resize with antialiasing. Stays uint8."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    x = ds.images
    if x.shape[1] == channels and x.shape[-2:] == (size, size):
        return ds
    x = x.float()
    if x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 3 and channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = x.round().clamp(0, 255).to(torch.uint8).contiguous()
    return ImageSet(f"{ds.name}->{channels}x{size}", out, ds.labels, ds.classes)
