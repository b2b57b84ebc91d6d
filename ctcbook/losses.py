"""Contrastive losses of the CTC method (Cui et al. 2022), in log space, in nats, averaged over the batch.

B anchors, D embedding dimensions, N memory slots (training images), K negatives per anchor; scores are dot products
of unit vectors over a temperature. Stateless: the memories belong to :mod:`ctcbook.ctc_objective`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def info_nce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """InfoNCE of column ``positive`` (B,) among tempered ``logits`` (B, M); logsumexp - logit stays finite."""
    if logits.ndim != 2 or positive.shape != logits.shape[:1]:
        raise ValueError(f"info_nce needs logits (B, M) and positive (B,), got {tuple(logits.shape)} and "
                         f"{tuple(positive.shape)}")
    logits = logits.float()
    return (torch.logsumexp(logits, dim=1) - logits.gather(1, positive[:, None]).squeeze(1)).mean()


def instance_discrimination_loss(z: torch.Tensor, memory: torch.Tensor, index: torch.Tensor,
                                 temperature: float) -> torch.Tensor:
    """Stage 1 of CTC: N-way InfoNCE of ``z`` (B, D) against the constant ``memory`` (N, D); ``index`` positive."""
    _check_temperature(temperature)
    return info_nce(z.float() @ memory.detach().t() / temperature, index)


@torch.no_grad()
def momentum_update(memory: torch.Tensor, index: torch.Tensor, z: torch.Tensor, momentum: float) -> None:
    """In place: ``memory[index] = normalise(momentum * memory[index] + (1 - momentum) * z)``; ``index`` unique."""
    if not 0 <= momentum <= 1:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    mixed = memory.index_select(0, index).mul(momentum).add_(z.detach().to(memory.dtype), alpha=1 - momentum)
    memory.index_copy_(0, index, F.normalize(mixed, dim=1))


def log_normaliser(scores: torch.Tensor, n_data: int) -> torch.Tensor:
    """0-d log Z, Z = N * mean(exp(scores)) of tempered scores (B, K+1): CRD's one-time first-batch estimate."""
    return torch.logsumexp(scores.float().flatten(), 0) - math.log(scores.numel()) + math.log(n_data)


def nce_loss(scores: torch.Tensor, log_z: torch.Tensor | float, n_data: int) -> torch.Tensor:
    """The NCE form of the contrastive loss (Tian et al. 2020, CRD eq. 18), mean over the batch: ``scores`` (B, 1 + K)
    with the positive in column 0, P = exp(score) / Z, uniform noise P_n = 1 / N, h = P / (P + K P_n) and
    loss = -[log h(pos) + sum_k log(1 - h(neg_k))], written with softplus in log space."""
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"nce_loss needs scores (B, 1 + K) with K >= 1, got {tuple(scores.shape)}")
    k = scores.shape[1] - 1
    log_p = scores.float() - log_z
    log_noise = math.log(k / n_data)  # log(K * P_n)
    pos = F.softplus(log_noise - log_p[:, 0])       # -log(P / (P + K P_n))
    neg = F.softplus(log_p[:, 1:] - log_noise)      # -log(K P_n / (P + K P_n))
    return (pos + neg.sum(1)).mean()


def pair_scores(anchor: torch.Tensor, memory: torch.Tensor, candidates: torch.Tensor,
                temperature: float) -> torch.Tensor:
    """(B, 1 + K) dot products / temperature of each anchor (B, D) with its ``candidates`` memory slots: the (B, N)
    product with the whole memory, then gathered, so the (B, 1 + K, D) keys (K = 16,384) are never materialised."""
    _check_temperature(temperature)
    return (anchor.float() @ memory.detach().t()).gather(1, candidates) / temperature


def _check_temperature(t: float) -> None:
    if not t > 0:
        raise ValueError(f"temperature must be > 0, got {t}")
