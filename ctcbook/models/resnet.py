"""Image classifiers: float images (N, C, H, W) in [0, 1] -> ``(features (N, D), logits (N, K))``.

The features are the pooled penultimate layer the probes read; input normalisation (the source's per-channel mean
and std) lives inside the model, so a checkpoint carries it.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check


class Classifier(nn.Module):
    """A backbone (normalised images -> features (N, D)) plus a linear head; normalises by per-channel mean, std."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int,
                 mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have the same length, got {len(mean)} and {len(std)}")
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.head = nn.Linear(feature_dim, num_classes)
        self.register_buffer("input_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("input_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float in [0, 1] -> (N, D) penultimate features."""
        return self.backbone((x - self.input_mean) / self.input_std)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(x)
        return feats, self.head(feats)


class BasicBlock(nn.Module):
    """3x3 conv - BN - ReLU - 3x3 conv - BN, plus identity or 1x1 projection shortcut (He et al. 2016)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet backbone: 3x3 stem, three stages of (depth - 2) / 6 basic blocks of widths (w, 2w, 4w),
    pooled features (N, 4w). ``stem_stride`` 2 halves the resolution first: about 3x cheaper on a CPU."""

    def __init__(self, depth: int = 20, width: int = 16, in_channels: int = 3, stem_stride: int = 1):
        super().__init__()
        check("depth", depth, depth >= 8 and (depth - 2) % 6 == 0, "6n + 2 with n >= 1 (8, 14, 20, 32, ...)")
        check("width", width, width >= 1, ">= 1")
        check("in_channels", in_channels, in_channels >= 1, ">= 1")
        check("stem_stride", stem_stride, stem_stride in (1, 2), "1 or 2")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        layers, in_planes = [], width
        for planes, stride in ((width, 1), (2 * width, 2), (4 * width, 2)):
            for i in range(n):
                layers.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.stages = nn.Sequential(*layers)
        self.out_dim = in_planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1), 1)


ARCHS = ("cifar_resnet", "resnet18", "resnet50")


def build_model(arch: str, num_classes: int, *, in_channels: int, mean: Sequence[float], std: Sequence[float],
                depth: int = 20, width: int = 16, stem_stride: int = 1) -> Classifier:
    """Build a :class:`Classifier` by name. ``depth``/``width``/``stem_stride`` apply to ``cifar_resnet`` only."""
    check("num_classes", num_classes, num_classes >= 2, ">= 2")
    if arch == "cifar_resnet":
        backbone = CifarResNet(depth=depth, width=width, in_channels=in_channels, stem_stride=stem_stride)
        dim = backbone.out_dim
    elif arch in ("resnet18", "resnet50"):  # torchvision's, randomly initialised, its fc replaced by the head
        import torchvision

        backbone = getattr(torchvision.models, arch)(weights=None)
        if in_channels != 3:
            backbone.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        dim = backbone.fc.in_features
        backbone.fc = nn.Identity()
    else:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    return Classifier(backbone, dim, num_classes, mean, std)
