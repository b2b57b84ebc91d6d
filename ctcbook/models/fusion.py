"""Baseline fusion heads beside Dynamic MLP, on pooled image features x (N, C) and encoded metadata m (N, cin).

Every head has ``forward(x, m) -> logits (N, K)`` and ``forward_features(x, m)``. The public Dynamic MLP code has only
the image-only model and Dynamic MLP; the other heads are ours, from the paper, on the same :class:`MetadataNet` so
only the fusion differs. ``geo_prior`` SIMPLIFIES Mac Aodha et al. 2019: a plain softmax metadata classifier trained
with cross-entropy (theirs: presence-only per-class sigmoids over the class prior, the same on balanced classes).
``mlp_concat`` matches a Dynamic MLP head's parameter count (:func:`matched_hidden`), so a gain over it is not
one of size; ``image_mlp``, an image-only head of that size, is the image term of chapter 4's Bayes reference.

Zeroed metadata is not neutral: a zero *input* (a missing value) passes the metadata network's biases, giving
e0 = MetadataNet(0). Only a zero branch *output* makes ``add`` and ``concat`` image-only (``multiply``: constant
logits); Dynamic MLP has no neutral embedding.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .dynamic_mlp import VARIANTS, DynamicMLPHead, MetadataNet, check_positive

FUSION_METHODS = ("image_only", "metadata_only", "concat", "add", "multiply", "geo_prior",
                  "dynamic_mlp_a", "dynamic_mlp_b", "dynamic_mlp_c")
#: Heads beyond the paper's comparison: the parameter-matched MLP on [x; e] and an image-only MLP of that size.
EXTRA_METHODS = ("mlp_concat", "image_mlp")


def _check_x(x: torch.Tensor, c: int) -> None:
    if x.ndim != 2 or x.shape[1] != c:
        raise ValueError(f"image features must have shape (N, {c}), got {tuple(x.shape)}")


def _hidden_layer(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, o), nn.LayerNorm(o), nn.ReLU())


class ImageOnlyHead(nn.Module):
    """x (N, C) -> [Linear -> LayerNorm -> ReLU (N, hidden_dim)] -> Linear -> (N, K); m is ignored."""

    def __init__(self, feature_dim: int, num_classes: int, *, hidden_dim: int | None = None):
        super().__init__()
        check_positive(feature_dim=feature_dim, num_classes=num_classes, hidden_dim=hidden_dim)
        self.feature_dim = feature_dim
        self.mlp = _hidden_layer(feature_dim, hidden_dim) if hidden_dim else nn.Identity()
        self.classifier = nn.Linear(hidden_dim or feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor, m: torch.Tensor | None = None) -> torch.Tensor:
        _check_x(x, self.feature_dim)
        return self.mlp(x)

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


class FusionHead(nn.Module):
    """x and e = MetadataNet(m) fused by ``op``: [x; e] ("concat"), x + e ("add") or x * e ("multiply", element-wise);
    with ``hidden_dim``, Linear -> LayerNorm -> ReLU on the fusion (mlp_concat); then Linear -> (N, K)."""

    def __init__(self, feature_dim: int, num_classes: int, cin: int = 6, *, op: str = "concat", embed_dim: int = 256,
                 hidden_dim: int | None = None, meta_width: int = 256, meta_blocks: int = 4):
        super().__init__()
        if op not in ("concat", "add", "multiply"):
            raise ValueError(f"op must be 'concat', 'add' or 'multiply', got {op!r}")
        embed_dim = embed_dim if op == "concat" else feature_dim
        fused_dim = feature_dim + embed_dim if op == "concat" else feature_dim
        check_positive(feature_dim=feature_dim, num_classes=num_classes, embed_dim=embed_dim, hidden_dim=hidden_dim)
        self.feature_dim, self.op = feature_dim, op
        self.metadata_net = MetadataNet(cin, embed_dim, meta_width, meta_blocks)
        self.classifier = nn.Linear(hidden_dim or fused_dim, num_classes)
        self.mlp = _hidden_layer(fused_dim, hidden_dim) if hidden_dim else nn.Identity()

    def forward_features(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.feature_dim)
        if m.shape[0] != x.shape[0]:
            raise ValueError(f"x and m must have the same batch size, got {x.shape[0]} and {m.shape[0]}")
        e = self.metadata_net(m)
        fused = torch.cat([x, e], dim=1) if self.op == "concat" else x + e if self.op == "add" else x * e
        return self.mlp(fused)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x, m))


class GeoPriorHead(nn.Module):
    """Geo prior (simplified, see the module docstring): log p_img(y|x) + log p_meta(y|m) of two trained heads."""

    def __init__(self, image: ImageOnlyHead, metadata: MetadataOnlyHead):
        super().__init__()
        k = image.classifier.out_features
        if metadata.net.out.out_features != k:
            raise ValueError(f"the heads disagree on the number of classes: {k} vs {metadata.net.out.out_features}")
        self.image, self.metadata = image, metadata

    def forward_features(self, x: torch.Tensor, m: torch.Tensor | None = None) -> torch.Tensor:
        return self.image.forward_features(x)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.image(x), dim=1) + F.log_softmax(self.metadata(None, m), dim=1)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def matched_hidden(method: str, target_params: int, feature_dim: int, num_classes: int, cin: int = 6,
                   **kwargs) -> int:
    """The ``hidden_dim`` (>= 1) of the mlp_concat or image_mlp head (other widths: kwargs) nearest target_params."""
    if method == "image_mlp":
        # Each hidden unit has C weights + 1 bias + 2 LayerNorm scalars + K classifier weights; the classifier K biases.
        return max(1, round((target_params - num_classes) / (feature_dim + 3 + num_classes)))
    fixed = count_parameters(build_fusion_head(method, feature_dim, num_classes, cin, hidden_dim=1, **kwargs))
    # Each hidden unit adds (C + embed_dim) weights + 1 bias + 2 LayerNorm scalars + K classifier weights.
    per_unit = feature_dim + kwargs.get("embed_dim", 256) + 3 + num_classes
    return max(1, 1 + round((target_params - fixed) / per_unit))


def build_fusion_head(method: str, feature_dim: int, num_classes: int, cin: int = 6, **kwargs) -> nn.Module:
    """One head by name (:data:`FUSION_METHODS`, :data:`EXTRA_METHODS`); ``kwargs`` go to its constructor."""
    if method in ("image_only", "image_mlp"):
        return ImageOnlyHead(feature_dim, num_classes, **kwargs)
    if method == "metadata_only":
        return MetadataOnlyHead(num_classes, cin, **kwargs)
    if method in ("concat", "add", "multiply", "mlp_concat"):
        return FusionHead(feature_dim, num_classes, cin, op=method.removeprefix("mlp_"), **kwargs)
    if method == "geo_prior":
        return GeoPriorHead(ImageOnlyHead(feature_dim, num_classes), MetadataOnlyHead(num_classes, cin, **kwargs))
    if method.startswith("dynamic_mlp_") and method[-1].upper() in VARIANTS and len(method) == 13:
        return DynamicMLPHead(feature_dim, num_classes, cin, variant=method[-1].upper(), **kwargs)
    raise ValueError(f"method must be one of {FUSION_METHODS + EXTRA_METHODS}, got {method!r}")


def build_head(method: str, feature_dim: int, num_classes: int, cin: int, widths: Mapping[str, Any]) -> nn.Module:
    """The head of ``method`` with ``widths`` (meta_width, embed_dim, reduced_dim, hidden_dim, num_blocks);
    mlp_concat and image_mlp get as many parameters as dynamic_mlp_c with those widths."""
    kw: dict[str, Any] = {} if method in ("image_only", "image_mlp") else {"meta_width": widths["meta_width"]}
    if method in ("concat", "mlp_concat"):
        kw["embed_dim"] = widths["embed_dim"]
    if method.startswith("dynamic_mlp_"):
        kw.update({k: widths[k] for k in ("embed_dim", "reduced_dim", "hidden_dim", "num_blocks")})
    if method in ("mlp_concat", "image_mlp"):
        target = count_parameters(build_head("dynamic_mlp_c", feature_dim, num_classes, cin, widths))
        kw["hidden_dim"] = matched_hidden(method, target, feature_dim, num_classes, cin, **kw)
    return build_fusion_head(method, feature_dim, num_classes, cin, **kw)
