"""Dynamic MLP (Yang et al., CVPR 2022): metadata encoding, metadata network and the fusion variants A, B, C.

Our own code for the computation of the authors' public code (github ylingfeng/DynamicMLP: ``dataset.py``,
``models/dynamic_mlp.py``, ``models/resnet_dynamic_mlp.py``), which it follows where the paper says less:

* Encoding: all sines, then all cosines (not interleaved), of (lat/90, lon/180, t).
* Date: t = 2 d / D - 1, d the day of the year (1 = 1 January), D = 365 or 366: 31 December is +1, 1 January one
  day after -1 on the circle. Year and time of day are ignored.
* Missing values: if *any* of latitude, longitude or date is missing, the whole vector is zeros, also when that
  field is not used; such rows get one learned embedding MetadataNet(0), nothing is masked further down.
* Variant B has LayerNorm + ReLU right after the dynamic projection, then bias-free Linear, LayerNorm, ReLU.
* The embedding and reduced widths are separate arguments (the code ties both to ``mlp_d`` = 256).
* No activation after the fusion module's first Linear (the code defines a ReLU it never uses).
"""
from __future__ import annotations

import math
import numpy as np
import torch
from torch import nn

VARIANTS = ("A", "B", "C")


# --- metadata encoding ------------------------------------------------------------------------------------------
def metadata_dim(use_location: bool = True, use_date: bool = True) -> int:
    """Width of :func:`encode_metadata`'s output: 6 (location + date), 4 (location) or 2 (date)."""
    if not (use_location or use_date):
        raise ValueError("use_location and use_date are both False: at least one metadata field must be used")
    return 4 * int(use_location) + 2 * int(use_date)


def _as_float64(name: str, v, n: int | None) -> np.ndarray:
    a = np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64)
    if a.ndim == 0 and n is not None:
        a = np.full(n, float(a))
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (N,), got shape {a.shape}")
    if n is not None and len(a) != n:
        raise ValueError(f"{name} has length {len(a)}, expected {n} (the length of the other inputs)")
    return a


def encode_metadata(lat=None, lon=None, day_of_year=None, *, days_in_year=365, use_location: bool = True,
                    use_date: bool = True, valid=None) -> torch.Tensor:
    """Degrees and day of year (NaN = missing) -> ``[sin(pi v), cos(pi v)]``, float32 (N, 6 | 4 | 2).

    v = (lat/90, lon/180, 2 d/D - 1) restricted to the used fields (t = 2 d/D - 1 is the code's
    ``get_scaled_date_ratio``). A row is zeros if any *given* field (used or not) is NaN or ``valid`` is False. On the
    device of the first tensor input (CPU for numpy)."""
    dim = metadata_dim(use_location, use_date)
    given = {k: v for k, v in (("lat", lat), ("lon", lon), ("day_of_year", day_of_year)) if v is not None}
    if use_location and (lat is None or lon is None):
        raise ValueError("use_location=True needs both lat and lon")
    if use_date and day_of_year is None:
        raise ValueError("use_date=True needs day_of_year")
    device = next((v.device for v in (lat, lon, day_of_year, valid) if isinstance(v, torch.Tensor)),
                  torch.device("cpu"))
    n = len(_as_float64(next(iter(given)), next(iter(given.values())), None))
    arrays = {k: _as_float64(k, v, n) for k, v in given.items()}
    missing = ~np.isfinite(np.stack(list(arrays.values()))).all(0)
    if valid is not None:
        valid = np.asarray(valid.detach().cpu() if isinstance(valid, torch.Tensor) else valid)
        if valid.shape != (n,):
            raise ValueError(f"valid must have shape ({n},), got {valid.shape}")
        missing |= ~valid.astype(bool)
    cols = []
    if use_location:
        for name, lim in (("lat", 90.0), ("lon", 180.0)):
            a = arrays[name]
            out = np.isfinite(a) & (np.abs(a) > lim)
            if out.any():
                raise ValueError(f"{name} must lie in [-{lim:g}, {lim:g}] degrees, got {a[out][:5]}")
            cols.append(a / lim)
    if use_date:
        d, big_d = arrays["day_of_year"], _as_float64("days_in_year", days_in_year, n)
        if not np.all(np.isin(big_d, (365.0, 366.0))):
            raise ValueError(f"days_in_year must be 365 or 366, got {np.unique(big_d)[:5]}")
        bad = np.isfinite(d) & ((d < 1) | (d > big_d))
        if bad.any():
            raise ValueError(f"day_of_year must lie in 1..days_in_year (1 = 1 January), got {d[bad][:5]}")
        cols.append(2.0 * d / big_d - 1.0)
    v = np.stack(cols, axis=1)                                               # (N, k) in [-1, 1]
    feats = np.concatenate([np.sin(math.pi * v), np.cos(math.pi * v)], axis=1)
    feats[missing] = 0.0
    assert feats.shape[1] == dim
    return torch.as_tensor(feats, dtype=torch.float32, device=device)


# --- metadata network -------------------------------------------------------------------------------------------
class ResidualFCBlock(nn.Module):
    """x + ReLU(W2 Dropout(ReLU(W1 x))), width w -> w (the code's ``FCResLayer``; Dropout p = 0.5)."""

    def __init__(self, width: int = 256, dropout: float = 0.5):
        super().__init__()
        self.w1 = nn.Linear(width, width)
        self.w2 = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.w2(self.dropout(torch.relu(self.w1(x)))))


def check_positive(**kw: int | None) -> None:
    """Raise unless every value given is a positive integer (None: not given)."""
    for k, v in kw.items():
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ValueError(f"{k} must be a positive integer, got {v!r}")


class MetadataNet(nn.Module):
    """The code's ``FCNet``, (N, cin) -> (N, out_dim): Linear + ReLU + residual blocks (``trunk``), bias-free out."""

    def __init__(self, cin: int, out_dim: int = 256, width: int = 256, num_blocks: int = 4, dropout: float = 0.5):
        super().__init__()
        check_positive(cin=cin, out_dim=out_dim, width=width)
        if not isinstance(num_blocks, int) or num_blocks < 0:
            raise ValueError(f"num_blocks must be a non-negative integer, got {num_blocks!r}")
        self.cin = cin
        self.trunk = nn.Sequential(nn.Linear(cin, width), nn.ReLU(),
                                   *[ResidualFCBlock(width, dropout) for _ in range(num_blocks)])
        self.out = nn.Linear(width, out_dim, bias=False)

    def features(self, m: torch.Tensor) -> torch.Tensor:
        """(N, cin) -> (N, width), the code's ``return_feats=True``."""
        if m.ndim != 2 or m.shape[1] != self.cin:
            raise ValueError(f"metadata must have shape (N, {self.cin}), got {tuple(m.shape)}")
        return self.trunk(m)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        """(N, cin) float -> (N, out_dim)."""
        return self.out(self.features(m))


# --- dynamic projections ----------------------------------------------------------------------------------------
def _linear_relu(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, o), nn.ReLU())


class _DynamicProjection(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, embed_dim: int):
        super().__init__()
        check_positive(in_dim=in_dim, out_dim=out_dim, embed_dim=embed_dim)
        self.in_dim, self.out_dim, self.embed_dim = in_dim, out_dim, embed_dim

    @staticmethod
    def _per_sample(x: torch.Tensor, w_flat: torch.Tensor, i: int, o: int) -> torch.Tensor:
        """x (N, i) times each sample's W (i, o), given flat (N, i*o). Not named ``_apply``: nn.Module's ``.to()``."""
        return torch.bmm(x.unsqueeze(1), w_flat.view(-1, i, o)).squeeze(1)


class DynamicProjectionA(_DynamicProjection):
    """Variant A: W(e) = Linear(e -> in*out) reshaped (in, out); y = ReLU(LayerNorm(x W(e))). (N, in) -> (N, out)."""

    def __init__(self, in_dim: int, out_dim: int, embed_dim: int):
        super().__init__(in_dim, out_dim, embed_dim)
        self.get_weight = nn.Linear(embed_dim, in_dim * out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        y = self._per_sample(x, self.get_weight(e), self.in_dim, self.out_dim)
        return torch.relu(self.norm(y))


class DynamicProjectionB(_DynamicProjection):
    """Variant B. Image branch: x -> Linear(in->in) -> ReLU -> Linear(in->in) = u. Weight branch: e -> Linear(embed
    ->in) -> ReLU -> Linear(in -> in*out) = W. Then y = ReLU(LN(u W)), and y -> bias-free Linear(out->out) -> LN ->
    ReLU. (N, in), (N, embed) -> (N, out). Variant C (the paper's default, ``read_both``): both branches read the
    concatenation [x; e] (N, in + embed)."""

    def __init__(self, in_dim: int, out_dim: int, embed_dim: int, read_both: bool = False):
        super().__init__(in_dim, out_dim, embed_dim)
        self.read_both = read_both
        x_in, w_in = (in_dim + embed_dim, in_dim + embed_dim) if read_both else (in_dim, embed_dim)
        self.img_branch = nn.Sequential(_linear_relu(x_in, in_dim), nn.Linear(in_dim, in_dim))
        self.weight_branch = nn.Sequential(_linear_relu(w_in, in_dim), nn.Linear(in_dim, in_dim * out_dim))
        self.post = nn.Sequential(nn.LayerNorm(out_dim), nn.ReLU(),
                                  nn.Linear(out_dim, out_dim, bias=False), nn.LayerNorm(out_dim), nn.ReLU())

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        if self.read_both:
            xe = torch.cat([x, e], dim=1)
            x, e = xe, xe
        y = self._per_sample(self.img_branch(x), self.weight_branch(e), self.in_dim, self.out_dim)
        return self.post(y)


_PROJECTIONS = {"A": DynamicProjectionA, "B": DynamicProjectionB,
                "C": lambda i, o, e: DynamicProjectionB(i, o, e, read_both=True)}


class DynamicMLPFusion(nn.Module):
    """The code's ``FusionModule``: x (N, C), e (N, embed) -> x + LN(Linear(d->C)(blocks(Linear(C->d)(x), e)))."""

    def __init__(self, feature_dim: int = 2048, embed_dim: int = 256, reduced_dim: int = 256, hidden_dim: int = 64,
                 num_blocks: int = 2, variant: str = "C"):
        super().__init__()
        check_positive(feature_dim=feature_dim, embed_dim=embed_dim, reduced_dim=reduced_dim, hidden_dim=hidden_dim,
                       num_blocks=num_blocks)
        self.variant = str(variant).upper()
        if self.variant not in _PROJECTIONS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.feature_dim, self.embed_dim = feature_dim, embed_dim
        proj = _PROJECTIONS[self.variant]
        self.reduce = nn.Linear(feature_dim, reduced_dim)
        # block widths as the code: d -> d for one block, else d -> h, (h -> h) * (N - 2), h -> d
        widths = [reduced_dim] + [hidden_dim] * (num_blocks - 1) + [reduced_dim]
        self.blocks = nn.ModuleList(proj(i, o, embed_dim) for i, o in zip(widths, widths[1:]))
        self.expand = nn.Linear(reduced_dim, feature_dim)
        self.norm = nn.LayerNorm(feature_dim)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            raise ValueError(f"image features must have shape (N, {self.feature_dim}), got {tuple(x.shape)}")
        if e.shape != (x.shape[0], self.embed_dim):
            raise ValueError(f"embedding must have shape ({x.shape[0]}, {self.embed_dim}), got {tuple(e.shape)}")
        h = self.reduce(x)
        for block in self.blocks:
            h = block(h, e)
        return x + self.norm(self.expand(h))


class DynamicMLPHead(nn.Module):
    """Metadata network + Dynamic MLP fusion + linear classifier, x (N, C), m (N, cin) -> (N, K); code's defaults."""

    def __init__(self, feature_dim: int, num_classes: int, cin: int = 6, *, embed_dim: int = 256,
                 reduced_dim: int = 256, hidden_dim: int = 64, num_blocks: int = 2, variant: str = "C",
                 meta_width: int = 256, meta_blocks: int = 4):
        super().__init__()
        check_positive(num_classes=num_classes)
        self.metadata_net = MetadataNet(cin, embed_dim, meta_width, meta_blocks)
        self.fusion = DynamicMLPFusion(feature_dim, embed_dim, reduced_dim, hidden_dim, num_blocks, variant)
        self.classifier = nn.Linear(feature_dim, num_classes)
        self.variant = self.fusion.variant

    def forward_features(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return self.fusion(x, self.metadata_net(m))

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x, m))
