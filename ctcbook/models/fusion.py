"""Baseline fusion heads beside Dynamic MLP, on pooled image features x (N, C) and encoded metadata m (N, cin).

Every head has ``forward(x, m) -> logits (N, K)`` and ``forward_features(x, m)``. The public Dynamic MLP code has only
the image-only model and Dynamic MLP; the other heads are ours, from the paper, on the same :class:`MetadataNet` so
only the fusion differs. ``geo_prior`` SIMPLIFIES Mac Aodha et al. 2019: a plain softmax metadata classifier trained
with cross-entropy (theirs: presence-only per-class sigmoids over the class prior, the same on balanced classes).
``mlp_concat`` matches a Dynamic MLP head's parameter count (:func:`matched_mlp_hidden`), so a gain over it is not
one of size; ``image_mlp``, an image-only head of that size, is the image term of chapter 4's Bayes reference.

Zeroed metadata is not neutral: a zero *input* (a missing value) passes the metadata network's biases, giving
e0 = MetadataNet(0). Only a zero branch *output* makes ``add`` and ``concat`` image-only (``multiply``: constant
logits); Dynamic MLP has no neutral embedding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dynamic_mlp import VARIANTS, DynamicMLPHead, MetadataNet, _check_pos

FUSION_METHODS = ("image_only", "metadata_only", "concat", "add", "multiply", "geo_prior",
                  "dynamic_mlp_a", "dynamic_mlp_b", "dynamic_mlp_c")
#: Heads beyond the paper's comparison: the parameter-matched MLP on [x; e] and an image-only MLP of that size.
EXTRA_METHODS = ("mlp_concat", "image_mlp")


def _check_x(x: torch.Tensor, c: int) -> None:
    if x.ndim != 2 or x.shape[1] != c:
        raise ValueError(f"image features must have shape (N, {c}), got {tuple(x.shape)}")


class ImageOnlyHead(nn.Module):
    """Linear(C -> K) on pooled image features. ``forward(x, m=None)`` -> (N, K); features = x."""

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        _check_pos(feature_dim=feature_dim, num_classes=num_classes)
        self.feature_dim = feature_dim
        self.classifier = nn.Linear(feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor, m: torch.Tensor | None = None) -> torch.Tensor:
        _check_x(x, self.feature_dim)
        return x

    def forward(self, x: torch.Tensor, m: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.forward_features(x, m))


class MetadataOnlyHead(nn.Module):
    """The metadata network as a classifier: m (N, cin) -> logits (N, K); x is ignored; features = the trunk's."""

    def __init__(self, num_classes: int, cin: int = 6, *, meta_width: int = 256, meta_blocks: int = 4):
        super().__init__()
        self.net = MetadataNet(cin, num_classes, meta_width, meta_blocks)

    def forward_features(self, x: torch.Tensor | None, m: torch.Tensor) -> torch.Tensor:
        return self.net.features(m)

    def forward(self, x: torch.Tensor | None, m: torch.Tensor) -> torch.Tensor:
        return self.net(m)


class _MetadataFusion(nn.Module):
    """Shared parts: a metadata branch e = MetadataNet(m) of width ``branch_dim`` and a linear classifier."""

    def __init__(self, feature_dim: int, num_classes: int, cin: int, branch_dim: int, fused_dim: int,
                 meta_width: int, meta_blocks: int):
        super().__init__()
        _check_pos(feature_dim=feature_dim, num_classes=num_classes)
        self.feature_dim = feature_dim
        self.metadata_net = MetadataNet(cin, branch_dim, meta_width, meta_blocks)
        self.classifier = nn.Linear(fused_dim, num_classes)

    def _fuse(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.feature_dim)
        if m.shape[0] != x.shape[0]:
            raise ValueError(f"x and m must have the same batch size, got {x.shape[0]} and {m.shape[0]}")
        return self._fuse(x, self.metadata_net(m))

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x, m))


class ConcatFusionHead(_MetadataFusion):
    """[x; MetadataNet(m)] (N, C + embed_dim) -> Linear -> (N, K)."""

    def __init__(self, feature_dim: int, num_classes: int, cin: int = 6, *, embed_dim: int = 256,
                 meta_width: int = 256, meta_blocks: int = 4):
        _check_pos(embed_dim=embed_dim)
        super().__init__(feature_dim, num_classes, cin, embed_dim, feature_dim + embed_dim, meta_width, meta_blocks)

    def _fuse(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, e], dim=1)


class AddFusionHead(_MetadataFusion):
    """x + MetadataNet(m) (N, C) -> Linear -> (N, K)."""

    def __init__(self, feature_dim: int, num_classes: int, cin: int = 6, *, meta_width: int = 256,
                 meta_blocks: int = 4):
        super().__init__(feature_dim, num_classes, cin, feature_dim, feature_dim, meta_width, meta_blocks)

    def _fuse(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return x + e


class MultiplyFusionHead(_MetadataFusion):
    """x * MetadataNet(m) (element-wise, N, C) -> Linear -> (N, K)."""

    def __init__(self, feature_dim: int, num_classes: int, cin: int = 6, *, meta_width: int = 256,
                 meta_blocks: int = 4):
        super().__init__(feature_dim, num_classes, cin, feature_dim, feature_dim, meta_width, meta_blocks)

    def _fuse(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return x * e


class MLPConcatHead(_MetadataFusion):
    """[x; MetadataNet(m)] (N, C + embed_dim) -> Linear -> LayerNorm -> ReLU (N, hidden_dim) -> Linear -> (N, K)."""

    def __init__(self, feature_dim: int, num_classes: int, cin: int = 6, *, embed_dim: int = 256,
                 hidden_dim: int = 256, meta_width: int = 256, meta_blocks: int = 4):
        _check_pos(embed_dim=embed_dim, hidden_dim=hidden_dim)
        super().__init__(feature_dim, num_classes, cin, embed_dim, hidden_dim, meta_width, meta_blocks)
        self.mlp = nn.Sequential(nn.Linear(feature_dim + embed_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU())

    def _fuse(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([x, e], dim=1))


class ImageMLPHead(nn.Module):
    """x (N, C) -> Linear -> LayerNorm -> ReLU (N, hidden_dim) -> Linear -> (N, K); m is ignored."""

    def __init__(self, feature_dim: int, num_classes: int, cin: int = 6, *, hidden_dim: int = 256):
        super().__init__()
        _check_pos(feature_dim=feature_dim, num_classes=num_classes, hidden_dim=hidden_dim)
        self.feature_dim = feature_dim
        self.mlp = nn.Sequential(nn.Linear(feature_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU())
        self.classifier = nn.Linear(hidden_dim, num_classes)

    def forward_features(self, x: torch.Tensor, m: torch.Tensor | None = None) -> torch.Tensor:
        _check_x(x, self.feature_dim)
        return self.mlp(x)

    def forward(self, x: torch.Tensor, m: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.forward_features(x, m))


def matched_image_mlp_hidden(target_params: int, feature_dim: int, num_classes: int) -> int:
    """The ``hidden_dim`` of :class:`ImageMLPHead` whose parameter count is closest to ``target_params``; at least 1.
    Each hidden unit has C weights + 1 bias + 2 LayerNorm scalars + K classifier weights; the classifier K biases."""
    return max(1, round((target_params - num_classes) / (feature_dim + 3 + num_classes)))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def matched_mlp_hidden(target_params: int, feature_dim: int, num_classes: int, cin: int = 6, *,
                       embed_dim: int = 256, meta_width: int = 256, meta_blocks: int = 4) -> int:
    """The ``hidden_dim`` (>= 1) of :class:`MLPConcatHead` whose parameter count is closest to ``target_params``."""
    fixed = count_parameters(MLPConcatHead(feature_dim, num_classes, cin, embed_dim=embed_dim, hidden_dim=1,
                                           meta_width=meta_width, meta_blocks=meta_blocks))
    # Each hidden unit adds (C + embed_dim) weights + 1 bias + 2 LayerNorm scalars + K classifier weights.
    per_unit = feature_dim + embed_dim + 3 + num_classes
    return max(1, 1 + round((target_params - fixed) / per_unit))


class GeoPriorHead(nn.Module):
    """Geo prior (simplified, see the module docstring): logits = log p_img(y|x) + log p_meta(y|m), the product of
    two separately trained classifiers; ``meta_activation="sigmoid"`` uses per-class sigmoids as Mac Aodha et al."""

    def __init__(self, feature_dim: int, num_classes: int, cin: int = 6, *, meta_width: int = 256,
                 meta_blocks: int = 4, meta_activation: str = "softmax"):
        super().__init__()
        if meta_activation not in ("softmax", "sigmoid"):
            raise ValueError(f"meta_activation must be 'softmax' or 'sigmoid', got {meta_activation!r}")
        self.meta_activation = meta_activation
        self.image = ImageOnlyHead(feature_dim, num_classes)
        self.metadata = MetadataOnlyHead(num_classes, cin, meta_width=meta_width, meta_blocks=meta_blocks)

    @classmethod
    def from_heads(cls, image: ImageOnlyHead, metadata: MetadataOnlyHead,
                   meta_activation: str = "softmax") -> "GeoPriorHead":
        """Combine two trained heads, not copied (a throwaway 1-wide pair is built first, so nothing large is)."""
        k = image.classifier.out_features
        if metadata.net.out.out_features != k:
            raise ValueError(f"the heads disagree on the number of classes: {k} vs {metadata.net.out.out_features}")
        head = cls(1, 1, 1, meta_width=1, meta_blocks=0, meta_activation=meta_activation)
        head.image, head.metadata = image, metadata
        return head

    def component_logits(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image logits (N, K), metadata logits (N, K)), for training the two parts."""
        return self.image(x), self.metadata(None, m)

    def forward_features(self, x: torch.Tensor, m: torch.Tensor | None = None) -> torch.Tensor:
        return self.image.forward_features(x)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        li, lm = self.component_logits(x, m)
        prior = F.log_softmax(lm, dim=1) if self.meta_activation == "softmax" else F.logsigmoid(lm)
        return F.log_softmax(li, dim=1) + prior


def build_fusion_head(method: str, feature_dim: int, num_classes: int, cin: int = 6, **kwargs) -> nn.Module:
    """One head by name (:data:`FUSION_METHODS`, :data:`EXTRA_METHODS`); ``kwargs`` go to its constructor."""
    if method == "image_only":
        return ImageOnlyHead(feature_dim, num_classes, **kwargs)
    if method == "metadata_only":
        return MetadataOnlyHead(num_classes, cin, **kwargs)
    simple = {"concat": ConcatFusionHead, "add": AddFusionHead, "multiply": MultiplyFusionHead,
              "geo_prior": GeoPriorHead, "mlp_concat": MLPConcatHead, "image_mlp": ImageMLPHead}
    if method in simple:
        return simple[method](feature_dim, num_classes, cin, **kwargs)
    if method.startswith("dynamic_mlp_") and method[-1].upper() in VARIANTS and len(method) == 13:
        return DynamicMLPHead(feature_dim, num_classes, cin, variant=method[-1].upper(), **kwargs)
    raise ValueError(f"method must be one of {FUSION_METHODS + EXTRA_METHODS}, got {method!r}")
