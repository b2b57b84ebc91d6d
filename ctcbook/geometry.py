"""Geometry of a feature set (N, D): within-class variability collapse (NC1) and effective rank, float64 on the CPU.

NC1 (Papyan, Han and Donoho 2020) = tr(Sigma_W Sigma_B^+) / K with Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i -
mu_{y_i})^T, Sigma_B = (1/K) sum_k (mu_k - mu_G)(mu_k - mu_G)^T and ^+ the pseudo-inverse: dimensionless, 0 when
every feature sits on its class mean. Effective rank: Roy and Vetterli 2007.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def _as_float64(features, labels=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    h = torch.as_tensor(features if isinstance(features, torch.Tensor) else np.asarray(features))
    h = h.detach().to("cpu", torch.float64)
    if h.ndim != 2 or h.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got shape {tuple(h.shape)}")
    if not torch.isfinite(h).all():
        raise ValueError("features must be finite")
    if labels is None:
        return h, None
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).to("cpu").long()
    if y.shape != (h.shape[0],):
        raise ValueError(f"labels must be (N,) = ({h.shape[0]},), got shape {tuple(y.shape)}")
    return h, y


def class_covariances(features, labels) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(Sigma_W, Sigma_B, K) of ``features`` (N, D) with ``labels`` (N,), K = the number of classes present (>= 2)."""
    h, y = _as_float64(features, labels)
    classes = torch.unique(y)
    if len(classes) < 2:
        raise ValueError(f"NC1 needs at least 2 classes in labels, got {classes.tolist()}")
    means = torch.stack([h[y == k].mean(0) for k in classes])            # (K, D)
    index = torch.searchsorted(classes, y)
    within = h - means[index]
    sigma_w = within.T @ within / h.shape[0]
    centred = means - h.mean(0)                                           # mu_G: the global mean
    sigma_b = centred.T @ centred / len(classes)
    return sigma_w, sigma_b, len(classes)


def nc1(features, labels) -> float:
    """Within-class variability collapse tr(Sigma_W Sigma_B^+) / K (dimensionless; 0 = full collapse)."""
    sigma_w, sigma_b, k = class_covariances(features, labels)
    return float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / k)


def effective_rank(features) -> float:
    """exp(entropy of the normalised singular values) of the centred ``features`` (N, D): 1 .. min(N, D)."""
    h, _ = _as_float64(features)
    s = torch.linalg.svdvals(h - h.mean(0))
    if float(s.sum()) == 0:
        raise ValueError("features are all equal: the effective rank is undefined")
    p = s / s.sum()
    p = p[p > 0]
    return float(math.exp(float(-(p * p.log()).sum())))
