"""Reference compositions the end-to-end batch plan must reproduce: the loader's crop and flip, then mixup."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ctcbook.config import FusionTrainConfig
from ctcbook.fusion_train import FusionSplit, _augment, epoch_plan, image_batches, mixup_draw


def mixup(x: torch.Tensor, m: torch.Tensor, alpha: float, rng: np.random.Generator
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup of images x (N, ...) and metadata m (N, cin) with one lambda and one permutation (from
    :func:`ctcbook.fusion_train.mixup_draw`): (lam x + (1 - lam) x[perm], lam m + (1 - lam) m[perm], perm, lam)."""
    lam, perm = mixup_draw(len(x), alpha, rng)
    if alpha <= 0:
        return x, m, perm, lam
    return lam * x + (1 - lam) * x[perm], lam * m + (1 - lam) * m[perm], perm, lam


def epoch_batches(split: FusionSplit, config: FusionTrainConfig, epoch: int, device: torch.device,
                  workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The epoch's whole batches before mixup: (x float in [0, 1], m, y), cropped and flipped as planned."""
    plans = epoch_plan(len(split), config, epoch)
    rows = torch.arange(config.batch_size)
    for plan, images in zip(plans, image_batches(split, [p.index for p in plans], config.image_size, workers)):
        x = _augment(images.float().div_(255), plan, rows, config.crop_padding)
        yield x.to(device), split.meta[plan.index].to(device), split.labels[plan.index].to(device)
