"""Information-bottleneck estimators, every result in **bits**, and what they are estimated on (:func:`activations`).

:func:`mine`: MINE (Belghazi et al. 2018) as the trade-off paper's code (DTennant/dt-tradeoff ``mine.py``) runs it.
:func:`renyi_entropy`: the matrix-based Renyi alpha-entropy (Giraldo, Rao and Principe 2014) of a Gram matrix;
I = S(X) + S(T) - S(X,T), the joint from the Hadamard product; O(n^3) time, O(n^2) memory in n points.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .config import check, check_fields, is_int
from .models import CifarResNet, Classifier

LN2 = math.log(2.0)

__all__ = [
    "MineSettings", "MineResult", "PAPER_MINE_XT", "PAPER_MINE_TY", "statistics_network", "mine_step_loss", "mine",
    "smoothed_estimate", "one_hot", "gaussian_gram", "kernel_width", "label_gram", "renyi_entropy", "RenyiNull",
    "renyi_null", "PENULTIMATE", "stage_modules", "layer_names", "activations",
]


# ----------------------------------------------------------------------------------------------------------- MINE
@dataclass(frozen=True)
class MineSettings:
    """Settings of :func:`mine`; the defaults are the paper code's I(X;T) settings.

    ``ema_rate``: of the moving average of E_Q[e^T] behind the bias-corrected gradient; ``smoothing``: window of the
    reported moving average; ``marginal``: ``"resample"`` (the paper code: x and t from two fresh draws) or
    ``"shuffle"`` (t of the joint batch permuted). ``batch_size`` <= the number of samples (drawn without
    replacement)."""

    hidden: int = 1024
    layers: int = 3
    lr: float = 8e-5
    iterations: int = 10_000
    batch_size: int = 5_000
    ema_rate: float = 0.01
    smoothing: int = 500
    seed: int = 0
    marginal: str = "resample"

    def __post_init__(self) -> None:
        check_fields(self, [*((name, is_int(getattr(self, name), 1), "an integer >= 1")
                              for name in ("hidden", "layers", "iterations", "batch_size", "smoothing")),
                            ("lr", self.lr > 0, "a number > 0"),
                            ("ema_rate", 0 < self.ema_rate <= 1, "a number in (0, 1]"),
                            ("marginal", self.marginal in ("resample", "shuffle"), "'resample' or 'shuffle'")])

    def describe(self) -> str:
        """The settings as the pages print them."""
        return (f"{self.layers} x {self.hidden} ReLU statistics network, Adam lr {self.lr:g}, {self.iterations:,} "
                f"steps on batches of {self.batch_size:,}, moving-average rate {self.ema_rate:g}, reported value = "
                f"last point of a {self.smoothing}-step moving average")


#: The paper code's settings for I(X;T) (``mine.py`` run with lr 8e-5 and 1e4 iterations).
PAPER_MINE_XT = MineSettings(lr=8e-5, iterations=10_000)
#: The paper code's settings for I(T;Y) (lr 1e-5 and 2e4 iterations).
PAPER_MINE_TY = MineSettings(lr=1e-5, iterations=20_000)


@dataclass
class MineResult:
    """Output of :func:`mine`: the estimate (bits), the per-step DV bound (bits, finite steps only) and the seconds."""

    mi_bits: float
    curve: np.ndarray
    seconds: float


def statistics_network(input_size: int, hidden: int = 1024, layers: int = 3) -> nn.Sequential:
    """T(x, t): an MLP on [x; t] -> 1; hidden weights ~ N(0, 0.02^2) and biases 0 as in the paper code."""
    if input_size < 1 or hidden < 1 or layers < 1:
        raise ValueError(f"input_size, hidden and layers must be >= 1, got {input_size}, {hidden}, {layers}")
    mods: list[nn.Module] = []
    for width in [input_size] + [hidden] * (layers - 1):
        lin = nn.Linear(width, hidden)
        nn.init.normal_(lin.weight, std=0.02)
        nn.init.zeros_(lin.bias)
        mods += [lin, nn.ReLU()]
    return nn.Sequential(*mods, nn.Linear(hidden, 1))


def mine_step_loss(t_joint: Tensor, t_marginal: Tensor, log_ma: Tensor,
                   ema_rate: float = 0.01) -> tuple[Tensor, Tensor, Tensor]:
    """One MINE step as the paper code's ``learn_mine``: ``(loss, bound, log m')``; m' = (1 - r) m + r E_Q[e^T] is
    the moving average (no gradient, carried in log space); loss = -(E_P[T] - E_Q[e^T] / m') has the bias-corrected
    gradient; bound is the Donsker-Varadhan bound E_P[T] - log E_Q[e^T] (nats)."""
    lme = torch.logsumexp(t_marginal.reshape(-1), 0) - math.log(t_marginal.numel())  # log E_Q[e^T], stable
    bound = t_joint.mean() - lme
    keep = math.log1p(-ema_rate) if ema_rate < 1 else -math.inf
    new_log_ma = torch.logaddexp(log_ma + keep, lme.detach() + math.log(ema_rate))
    loss = -(t_joint.mean() - torch.exp(lme - new_log_ma))
    return loss, bound, new_log_ma


def smoothed_estimate(curve: np.ndarray, window: int) -> float:
    """The paper code's reported value, the last point of ``ma(curve, window)``: the mean of ``curve[-window - 1:-1]``
    (its moving average leaves the final step out); with ``window`` steps or fewer, where the code fails, the mean."""
    curve = np.asarray(curve, dtype=np.float64)
    if curve.size == 0:
        raise ValueError("curve is empty: no finite step was recorded")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if curve.size <= window:
        return float(curve.mean())
    return float(curve[-window - 1:-1].mean())


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """Integer labels (N,) in [0, num_classes) -> float32 one-hot (N, num_classes)."""
    if labels.ndim != 1 or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"labels must be an integer tensor (N,), got {labels.dtype} {tuple(labels.shape)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return torch.nn.functional.one_hot(labels.long(), num_classes).float()


def mine(x: Tensor, t: Tensor, settings: MineSettings = PAPER_MINE_XT, *, device=None) -> MineResult:
    """I(X;T) in **bits** by MINE as the paper code's ``mine.py`` runs it; row i of ``x`` pairs with row i of ``t``.

    Inputs are used as given, as ``mine.py`` does (labels: ``one_hot``); one Adam step on :func:`mine_step_loss` per
    batch pair (``settings.marginal``). Non-finite steps are skipped (the code also resets m to 0; we keep it). Seeded
    on the CPU, so runs repeat on any device; the estimate is :func:`smoothed_estimate` of the per-step DV bounds."""
    for name, v in (("x", x), ("t", t)):
        if v.ndim != 2 or not v.is_floating_point():
            raise ValueError(f"{name} must be a float tensor (N, D), got {v.dtype} {tuple(v.shape)}")
    if len(x) != len(t):
        raise ValueError(f"x and t must hold the same number of samples, got {len(x)} and {len(t)}")
    n = len(x)
    s = settings
    if s.batch_size > n:
        raise ValueError(f"settings.batch_size must be <= the number of samples {n} (batches are drawn without "
                         f"replacement), got {s.batch_size}")
    if x.device != t.device and device is None:
        raise ValueError(f"x and t are on different devices ({x.device}, {t.device}); pass device=")
    dev = torch.device(device) if device is not None else x.device
    x, t = x.to(dev, torch.float32), t.to(dev, torch.float32)

    gen = torch.Generator().manual_seed(s.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        net = statistics_network(x.shape[1] + t.shape[1], s.hidden, s.layers)
    net = net.to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=s.lr)
    log_ma = torch.zeros((), device=dev)                   # log of the moving average of E_Q[e^T]; starts at 1
    curve: list[Tensor] = []

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    start = time.perf_counter()
    for _ in range(s.iterations):
        j = torch.randperm(n, generator=gen)[:s.batch_size].to(dev)
        if s.marginal == "resample":
            mx = torch.randperm(n, generator=gen)[:s.batch_size].to(dev)
            mt = torch.randperm(n, generator=gen)[:s.batch_size].to(dev)
        else:
            mx, mt = j, j[torch.randperm(s.batch_size, generator=gen).to(dev)]
        out = net(torch.cat([torch.cat([x[j], t[j]], 1), torch.cat([x[mx], t[mt]], 1)]))  # one pass, 2B rows
        t_joint, t_marg = out[:s.batch_size], out[s.batch_size:]
        loss, bound, new_log_ma = mine_step_loss(t_joint, t_marg, log_ma, s.ema_rate)
        if not torch.isfinite(loss):
            continue
        log_ma = new_log_ma
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.append(bound.detach())
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    if not curve:
        raise RuntimeError("MINE recorded no finite step; lower settings.lr or rescale the inputs")
    bits = torch.stack(curve).double().cpu().numpy() / LN2
    return MineResult(mi_bits=smoothed_estimate(bits, s.smoothing), curve=bits, seconds=seconds)


# --------------------------------------------------------------------------------------- matrix-based Renyi
def _as_points(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim < 2 or not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor (n, d) (trailing dims are flattened), got "
                         f"{getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}")
    if len(x) < 1:
        raise ValueError(f"{name} must hold at least one point")
    return x.reshape(len(x), -1).double()


def _sq_dists(x: Tensor) -> Tensor:
    sq = (x * x).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    d2.fill_diagonal_(0.0)
    return d2.clamp_min_(0.0)


def gaussian_gram(x: Tensor, sigma: float) -> Tensor:
    """Gaussian Gram matrix K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)), float64 (n, n)."""
    xd = _as_points(x, "x")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    return torch.exp(-_sq_dists(xd) / (2.0 * float(sigma) ** 2))


def kernel_width(x: Tensor) -> float:
    """Kernel width sigma = gamma * n^(-1/(4 + d)) (Yu et al.'s Silverman-style rule), gamma the median pairwise
    distance (else the mean; sigma 1 if all points coincide), so the Gram matrix is scale-invariant."""
    xd = _as_points(x, "x")
    n, d = xd.shape
    if n < 2:
        return 1.0
    iu = torch.triu_indices(n, n, offset=1, device=xd.device)
    dist = _sq_dists(xd)[iu[0], iu[1]].sqrt()
    gamma = float(dist.median())
    if gamma <= 0:
        gamma = float(dist.mean())
    return gamma * n ** (-1.0 / (4 + d)) if gamma > 0 else 1.0


def label_gram(labels: Tensor) -> Tensor:
    """Delta-kernel Gram matrix of integer labels (n,): K_ij = 1 where the labels match, float64."""
    if labels.ndim != 1 or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor (n,), got {labels.dtype} {tuple(labels.shape)}")
    return (labels[:, None] == labels[None, :]).double()


def renyi_entropy(gram: Tensor, alpha: float = 1.01) -> float:
    """Matrix-based Renyi alpha-entropy in **bits**, in [0, log2 n]: log2(sum lambda^alpha) / (1 - alpha), lambda the
    eigenvalues of K / tr(K); alpha = 1: von Neumann."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    alpha = float(alpha)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] < 1:
        raise ValueError(f"gram must be a square matrix (n, n), got {tuple(gram.shape)}")
    k = gram.double()
    tr = k.trace()
    if not bool(tr > 0):
        raise ValueError(f"gram must have a positive trace, got {float(tr)}")
    a = k / tr
    lam = torch.linalg.eigvalsh((a + a.T) / 2).clamp_min(0.0)
    if alpha == 1.0:
        lam = lam[lam > 0]
        return float(-(lam * lam.log2()).sum())
    return float(torch.log2((lam ** alpha).sum()) / (1.0 - alpha))


@dataclass(frozen=True)
class RenyiNull:
    """Renyi I(X;T) and I(T;Y) (bits, mean and SD over shuffles) of independent pairs: the estimator's floor at n, d."""

    i_xt: float
    i_xt_sd: float
    i_ty: float
    i_ty_sd: float
    n: int
    shuffles: int


def renyi_null(x: Tensor, t: Tensor, labels: Tensor, *, alpha: float = 1.01, shuffles: int = 5,
               seed: int = 0) -> RenyiNull:
    """The Renyi estimates with the rows of ``t`` permuted, which keeps each marginal and destroys the dependence."""
    check("shuffles", shuffles, is_int(shuffles, 1), "an integer >= 1")
    xd, td = _as_points(x, "x"), _as_points(t, "t")
    if not (len(xd) == len(td) == len(labels)):
        raise ValueError(f"x, t and labels must hold the same number of points, got {len(xd)}, {len(td)}, "
                         f"{len(labels)}")
    kx, ky = gaussian_gram(xd, kernel_width(xd)), label_gram(labels.to(xd.device))
    kt = gaussian_gram(td, kernel_width(td))
    hx, hy, ht = renyi_entropy(kx, alpha), renyi_entropy(ky, alpha), renyi_entropy(kt, alpha)
    gen = torch.Generator().manual_seed(seed)
    ixt, ity = [], []
    for _ in range(shuffles):
        p = torch.randperm(len(xd), generator=gen).to(kt.device)
        kp = kt[p][:, p]                                     # Gram matrix of the permuted rows of t
        ixt.append(hx + ht - renyi_entropy(kx * kp, alpha))
        ity.append(ht + hy - renyi_entropy(kp * ky, alpha))
    sd = (lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else math.nan)
    return RenyiNull(float(np.mean(ixt)), sd(ixt), float(np.mean(ity)), sd(ity), len(xd), shuffles)


# ---------------------------------------------------------------------------------------- X and T of a network
PENULTIMATE = "penultimate"


def stage_modules(model: Classifier) -> dict[str, nn.Module]:
    """The last block of each stage of a CIFAR-style ResNet (``stage1`` .. ``stage3``); none for other backbones."""
    backbone = model.backbone
    if not isinstance(backbone, CifarResNet):
        return {}
    per_stage = len(backbone.stages) // 3
    return {f"stage{i + 1}": backbone.stages[(i + 1) * per_stage - 1] for i in range(3)}


def layer_names(model: Classifier) -> list[str]:
    """Layers :func:`activations` reads, input side first: the stages of :func:`stage_modules`, then the penultimate."""
    return [*stage_modules(model), PENULTIMATE]


@torch.no_grad()
def activations(model: Classifier, images: Tensor, layers: Sequence[str], *, batch_size: int = 500,
                device=None) -> tuple[Tensor, dict[str, Tensor]]:
    """(X, {layer: T}) of uint8 ``images`` in eval mode: the normalised input and layer outputs, flat, on the CPU."""
    allowed = layer_names(model)
    check("layers", list(layers), set(layers) <= set(allowed), f"a subset of {allowed}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    stages = stage_modules(model)
    caught: dict[str, list[Tensor]] = {name: [] for name in layers}
    hooks = [stages[name].register_forward_hook(lambda m, i, out, name=name: caught[name].append(
        out.float().flatten(1).cpu())) for name in layers if name != PENULTIMATE]
    xs = []
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(device).float().div_(255)
            feats, _ = model(x)
            xs.append(((x - model.input_mean) / model.input_std).flatten(1).float().cpu())
            if PENULTIMATE in caught:
                caught[PENULTIMATE].append(feats.float().cpu())
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return torch.cat(xs), {name: torch.cat(v) for name, v in caught.items()}
