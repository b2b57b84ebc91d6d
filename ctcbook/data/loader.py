"""Device-resident batches for small-image datasets (the airbench way: no DataLoader, no worker processes): uint8
images on the device, each batch made float in [0, 1] and augmented there with a generator seeded by (seed, epoch)."""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad (N, C, H, W) by ``padding`` pixels and crop an H x W window at a random offset per image."""
    if padding == 0:
        return x
    n = x.shape[0]
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=x.device)
    return crop_at(x, padding, dy, dx)


def crop_at(x: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Zero-pad (N, C, H, W) by ``padding`` pixels and crop image i's H x W window at (``dy[i]``, ``dx[i]``)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    rows = (dy.to(x.device)[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx.to(x.device)[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image of (N, C, H, W) left-right with probability 1/2."""
    return flip_where(x, torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5)


def flip_where(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror image i of (N, C, H, W) left-right where ``flip[i]`` (N,) bool is true."""
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)


class DeviceBatches:
    """Shuffled, augmented full mini-batches: :meth:`epoch` yields ``(x, y, index)``, index for per-image memories."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, device: torch.device,
                 augment: str = "crop_flip", crop_padding: int = 2, seed: int = 0,
                 memory_format: torch.memory_format = torch.contiguous_format):
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size, self.device, self.augment = batch_size, torch.device(device), augment
        self.crop_padding, self.seed, self.memory_format = crop_padding, seed, memory_format

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        gen = torch.Generator(device=self.device).manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.labels), generator=gen, device=self.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.images[idx].float().div_(255)
            if self.augment in ("crop", "crop_flip"):
                x = random_crop(x, self.crop_padding, gen)
            if self.augment in ("crop_flip", "flip"):
                x = random_flip(x, gen)
            yield x.contiguous(memory_format=self.memory_format), self.labels[idx], idx
