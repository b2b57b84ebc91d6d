"""Evaluation of frozen representations: feature extraction, accuracy, linear probes and weighted kNN.

The probes work on precomputed features (N, D) and run wherever those tensors are (GPU or CPU).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, *, batch_size: int = 1024, device=None,
                     with_logits: bool = False):
    """Penultimate features of uint8 images (N, C, H, W) in eval mode, no augmentation.

    ``model(x)`` must return ``(features, logits)`` for float images in [0, 1]. Returns float32 features (N, D) on
    the CPU (and logits (N, K) when ``with_logits``). The model's train/eval mode is restored afterwards.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    feats, logits = [], []
    try:
        for i in range(0, len(images), batch_size):
            f, lg = model(images[i:i + batch_size].to(device).float().div_(255))
            feats.append(f.float().cpu())
            logits.append(lg.float().cpu())
    finally:
        model.train(was_training)
    out = torch.cat(feats)
    return (out, torch.cat(logits)) if with_logits else out


def accuracy(logits_or_pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1] from logits (N, K) or predicted labels (N,)."""
    pred = logits_or_pred.argmax(1) if logits_or_pred.ndim == 2 else logits_or_pred
    if pred.shape != labels.shape:
        raise ValueError(f"predictions {tuple(pred.shape)} and labels {tuple(labels.shape)} differ in shape")
    return (pred.cpu() == labels.cpu()).float().mean().item()


def _check_split(train_x, train_y, test_x, test_y) -> None:
    for name, x in (("train_x", train_x), ("test_x", test_x)):
        if x.ndim != 2 or not x.is_floating_point():
            raise ValueError(f"{name} must be a float tensor (N, D), got {x.dtype} {tuple(x.shape)}")
    for name, y, x in (("train_y", train_y, train_x), ("test_y", test_y, test_x)):
        if y.dtype != torch.int64 or y.shape != (len(x),):
            raise ValueError(f"{name} must be int64 of shape ({len(x)},), got {y.dtype} {tuple(y.shape)}")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train_x and test_x must have the same width, got {train_x.shape[1]} and {test_x.shape[1]}")


def stratified_holdout(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit indices, held-out indices): ``fraction`` of each class held out, deterministic for ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    fit, held = [], []
    for k in labels.unique():
        idx = (labels == k).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_held = max(1, round(fraction * len(idx))) if len(idx) > 1 else 0
        held.append(idx[:n_held])
        fit.append(idx[n_held:])
    return torch.cat(fit).sort().values, torch.cat(held).sort().values


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, reg: float, *, max_iter: int = 200,
                 init: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression, full batch L-BFGS: minimise mean cross-entropy + reg / 2 * ||W||^2 (bias
    unpenalised). ``x`` (N, D) float32, ``y`` (N,) int64; returns (W (D, K), b (K,)). The gradient is analytic:
    dL/dz = (softmax(z) - onehot(y)) / N, so no autograd graph is built per evaluation."""
    w = torch.zeros(x.shape[1], num_classes, device=x.device) if init is None else init[0].clone()
    b = torch.zeros(num_classes, device=x.device) if init is None else init[1].clone()
    onehot = F.one_hot(y, num_classes).to(x.dtype)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=10, tolerance_grad=1e-5,
                            tolerance_change=1e-9, line_search_fn="strong_wolfe")

    @torch.no_grad()
    def closure():
        z = x @ w + b
        lse = z.logsumexp(1)
        loss = (lse - (z * onehot).sum(1)).mean() + 0.5 * reg * w.square().sum()
        dz = (z - lse[:, None]).exp_().sub_(onehot).div_(len(x))
        w.grad = x.T @ dz + reg * w
        b.grad = dz.sum(0)
        return loss

    opt.step(closure)
    return w, b


@dataclass
class ProbeResult:
    accuracy: float                      # top-1 on the test features, [0, 1]
    reg: float                           # the chosen L2 strength
    val_accuracy: dict[float, float] = field(default_factory=dict)  # held-out accuracy per grid value


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                 reg_grid=(1e-4, 1e-3, 1e-2, 1e-1, 1.0), val_fraction: float = 0.2, seed: int = 0,
                 max_iter: int = 200, device=None) -> ProbeResult:
    """The book's linear probe: standardise with the train split's statistics; choose the L2 strength from
    ``reg_grid`` on a stratified held-out ``val_fraction`` of the train split (ties -> stronger regularisation);
    refit on the whole train split; report test top-1. Runs on ``device`` (default: the features' device)."""
    _check_split(train_x, train_y, test_x, test_y)
    if not reg_grid or any(r < 0 for r in reg_grid):
        raise ValueError(f"reg_grid must be a non-empty sequence of values >= 0, got {reg_grid}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    device = torch.device(device) if device is not None else train_x.device
    mean, std = train_x.mean(0), train_x.std(0)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    xtr, xte = ((train_x - mean) / std).to(device), ((test_x - mean) / std).to(device)
    ytr, yte = train_y.to(device), test_y.to(device)
    k = int(max(train_y.max(), test_y.max())) + 1
    fit, held = (i.to(device) for i in stratified_holdout(train_y, val_fraction, seed))
    val_acc, init = {}, None
    for reg in sorted(reg_grid, reverse=True):  # strong to weak: each fit warm-starts the next
        init = fit_logistic(xtr[fit], ytr[fit], k, reg, max_iter=max_iter, init=init)
        val_acc[reg] = accuracy(xtr[held] @ init[0] + init[1], ytr[held])
    best = max(val_acc, key=lambda r: (val_acc[r], r))
    w, b = fit_logistic(xtr, ytr, k, best, max_iter=max_iter)
    return ProbeResult(accuracy(xte @ w + b, yte), best, val_acc)


@torch.no_grad()
def knn_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                 k: int = 20, temperature: float = 0.07, batch_size: int = 1024) -> float:
    """Weighted kNN top-1 (Wu et al. 2018): cosine similarity of L2-normalised features; the ``k`` nearest train
    points vote with weight exp(similarity / temperature)."""
    _check_split(train_x, train_y, test_x, test_y)
    if not 1 <= k <= len(train_x):
        raise ValueError(f"k must be in 1..{len(train_x)} (the train size), got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    ntr, nte = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    classes = int(max(train_y.max(), test_y.max())) + 1
    correct = 0
    for i in range(0, len(nte), batch_size):
        sim, idx = (nte[i:i + batch_size] @ ntr.T).topk(k, dim=1)
        votes = torch.zeros(len(sim), classes, device=sim.device)
        votes.scatter_add_(1, train_y.to(sim.device)[idx], (sim / temperature).exp())
        correct += (votes.argmax(1).cpu() == test_y[i:i + batch_size].cpu()).sum().item()
    return correct / len(test_x)


@dataclass
class PaperProbeResult:
    best_accuracy: float   # max test top-1 over epochs: the paper's reported number (model selection on test)
    final_accuracy: float  # test top-1 after the last epoch
    curve: list[float]     # test top-1 after each epoch


def paper_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                epochs: int = 30, lr: float = 0.4, momentum: float = 0.9, weight_decay: float = 5e-4,
                batch_size: int = 512, seed: int = 0, device=None) -> PaperProbeResult:
    """The paper's probe protocol (public code ``transfer.py``): a new linear layer trained with SGD (lr 0.4,
    momentum 0.9, weight decay 5e-4, batch 512, 30 epochs, cosine decay of the lr per epoch), reporting the best test
    accuracy over the epochs. Differences here: the layer is trained on precomputed, unaugmented features of the
    frozen backbone (which is what a frozen backbone in eval mode computes, minus augmentation), not standardised."""
    _check_split(train_x, train_y, test_x, test_y)
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"epochs, batch_size must be >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}")
    device = torch.device(device) if device is not None else train_x.device
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    classes = int(max(train_y.max(), test_y.max())) + 1
    layer = nn.Linear(train_x.shape[1], classes).to(device)
    opt = torch.optim.SGD(layer.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    xtr, ytr, xte, yte = train_x.to(device), train_y.to(device), test_x.to(device), test_y.to(device)
    curve = []
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        order = torch.randperm(len(xtr), generator=gen).to(device)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(layer(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            curve.append(accuracy(layer(xte), yte))
    return PaperProbeResult(max(curve), curve[-1], curve)
