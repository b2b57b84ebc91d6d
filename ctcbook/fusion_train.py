"""End-to-end training of an image backbone together with a fusion head on images plus location/date metadata.

The sibling of :mod:`ctcbook.train` for Dynamic MLP's recipe (the public code, github ylingfeng/DynamicMLP,
``train.py``), sharing its run store (:mod:`ctcbook.runs`: content-addressed folder per config, a checkpoint and a
metrics row per epoch, ``state.pt`` resume point, ``DONE``/``FAILED`` markers), its resume rule (restart from the last
complete epoch, metrics truncated to it) and its progress bar. What differs from :func:`ctcbook.train.train`:

* The model is :class:`FusionNet`: backbone features x (N, C) plus encoded metadata m (N, cin) into a head of
  :mod:`ctcbook.models.fusion` (``image_only`` ignores m).
* The recipe: SGD momentum 0.9, weight decay 1e-4 (on every parameter, as the code), the learning rate rising
  linearly per step over ``warmup_epochs`` and then following a cosine to 0; label smoothing as the code computes
  it (:func:`smoothed_targets`: 1 - eps on the true class and eps / (K - 1) on each other class); mixup with one
  lambda ~ Beta(alpha, alpha) per batch applied to the images AND the encoded metadata with the same permutation
  (:func:`mixup`), the loss mixing the two smoothed targets with the same lambda.
* The data: either simulated metadata (:class:`ctcbook.data.metadata.MetadataSimulator`, with its image-metadata
  ``interaction`` rendered into the images) on an embedded image set, or iNaturalist 2021 read from the official
  archive layout (``dataset="inat21"``; images decoded from their JPEG files each epoch).

Randomness: backbone and head initialisation from ``seed``; batch order, crops, flips, mixup lambdas and
permutations from generators seeded by (seed, epoch); dropout from the global generator reseeded at every epoch.
So an interrupted and resumed run equals an uninterrupted one bit for bit on the CPU.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .config import AUGMENTS
from .data import load_dataset, select_classes, subsample, unseen_subset
from .data.loader import crop_at, flip_where
from .data.metadata import MetadataArrays, MetadataSimulator
from .models import build_model
from .models.fusion import build_fusion_head, matched_mlp_hidden, count_parameters
from . import distributed
from .runs import Run, RunFailedError, RunStore, atomic_write_json, config_hash

#: Bump when this loop changes the numbers a run produces; part of every run's config.
E2E_VERSION = 1
#: Heads that train end to end with one loss (geo_prior and metadata_only do not fit this loop).
E2E_METHODS = ("image_only", "concat", "add", "multiply", "dynamic_mlp_a", "dynamic_mlp_b", "dynamic_mlp_c",
               "mlp_concat")


# --- the recipe's pieces ----------------------------------------------------------------------------------------
def smoothed_targets(y: torch.Tensor, num_classes: int, epsilon: float) -> torch.Tensor:
    """Label smoothing as the public Dynamic MLP code computes it: (N,) int labels -> (N, K) float targets with
    1 - epsilon on the true class and epsilon / (K - 1) on each of the others (rows sum to 1). Note that
    ``torch.nn.functional.cross_entropy(label_smoothing=eps)`` differs: it spreads eps / K over all K classes."""
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"epsilon must lie in [0, 1), got {epsilon!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
    t = torch.full((len(y), num_classes), epsilon / (num_classes - 1), device=y.device)
    return t.scatter_(1, y.view(-1, 1), 1.0 - epsilon)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_k targets_k log softmax(logits)_k, in nats. logits, targets (N, K)."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def mixup(x: torch.Tensor, m: torch.Tensor, alpha: float, rng: np.random.Generator
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup of images x (N, ...) and metadata m (N, cin) with ONE lambda ~ Beta(alpha, alpha) and one permutation:
    returns (lam x + (1 - lam) x[perm], lam m + (1 - lam) m[perm], perm (N,), lam). alpha 0 returns the inputs,
    the identity permutation and lam 1. Lambda and permutation are drawn from ``rng`` (numpy), so they do not
    depend on anything else that draws random numbers."""
    n = len(x)
    if len(m) != n:
        raise ValueError(f"x and m must have the same batch size, got {n} and {len(m)}")
    lam, perm = mixup_draw(n, alpha, rng)
    perm = perm.to(x.device)
    if alpha <= 0:
        return x, m, perm, lam
    return lam * x + (1 - lam) * x[perm], lam * m + (1 - lam) * m[perm], perm, lam


def mixup_draw(n: int, alpha: float, rng: np.random.Generator) -> tuple[float, torch.Tensor]:
    """The random part of :func:`mixup` for a batch of ``n``: (lam ~ Beta(alpha, alpha), partner permutation (n,)),
    drawn from ``rng`` in that order; alpha 0 draws nothing and gives (1.0, the identity)."""
    if alpha <= 0:
        return 1.0, torch.arange(n)
    return float(rng.beta(alpha, alpha)), torch.from_numpy(rng.permutation(n))


def lr_factor(step: int, steps_per_epoch: int, epochs: int, warmup_epochs: int) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (0-based): (step + 1) / warm-up steps during the warm-up,
    then a cosine from 1 to 0 over the remaining steps."""
    warm = warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    rest = max(1, (epochs - warmup_epochs) * steps_per_epoch)
    return 0.5 * (1 + math.cos(math.pi * min(step - warm, rest) / rest))


# --- configuration ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FusionTrainConfig:
    """Everything that changes an end-to-end run's numbers (its hash names the run folder).

    Data: ``dataset`` "simulated" (``source`` image set with ``source_classes``, ``train_size`` stratified train
    images, ``test_size`` stratified test images (None: all), and simulated metadata from ``metadata``:
    MetadataSimulator arguments plus ``draw_seed``, whose train and test draws use sample seeds 2 draw_seed and
    2 draw_seed + 1) or "inat21" (``inat_root`` folder of the official
    layout, ``inat_train_split``/``inat_test_split`` json names, images resized to ``image_size`` px, RGB).
    Model: ``arch`` (cifar_resnet: ``depth``, ``width``, ``stem_stride``), ``weights`` (a local state-dict file for
    the backbone; never downloaded), ``method`` (:data:`E2E_METHODS`), ``head`` widths (meta_width, embed_dim,
    reduced_dim, hidden_dim, num_blocks; mlp_concat gets the hidden width that matches dynamic_mlp_c's parameters).
    Recipe: ``epochs``, ``warmup_epochs``, ``batch_size``, ``lr``, ``momentum``, ``weight_decay``,
    ``label_smoothing``, ``mixup_alpha``, ``augment`` (:data:`ctcbook.config.AUGMENTS`), ``crop_padding``; ``seed``.
    ``test_every``: epochs between two evaluations on the test split (the last epoch is always evaluated; rows of
    the other epochs carry no ``test_acc``), to spare the test pass where only the final accuracy is used.
    """

    dataset: str = "simulated"
    source: str = "fashion_mnist"
    source_classes: list[int] | None = None
    train_size: int | None = 10000
    test_size: int | None = None
    metadata: dict[str, Any] = field(default_factory=lambda: {"seed": 0, "location_spread": 25.0,
                                                              "date_spread": 45.0, "background": 0.3,
                                                              "missing_fraction": 0.05, "interaction": 0.0,
                                                              "groups": [[0, 2, 4, 6]], "draw_seed": 0})
    inat_root: str | None = None
    inat_train_split: str = "train_mini"
    inat_test_split: str = "val"
    image_size: int = 224
    arch: str = "cifar_resnet"
    depth: int = 8
    width: int = 16
    stem_stride: int = 2
    weights: str | None = None
    method: str = "dynamic_mlp_c"
    head: dict[str, int] = field(default_factory=lambda: {"meta_width": 64, "embed_dim": 64, "reduced_dim": 64,
                                                          "hidden_dim": 16, "num_blocks": 2})
    epochs: int = 10
    warmup_epochs: int = 1
    batch_size: int = 128
    lr: float = 0.04
    momentum: float = 0.9
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    mixup_alpha: float = 0.4
    augment: str = "crop_flip"
    crop_padding: int = 2
    test_every: int = 1
    seed: int = 0

    def __post_init__(self):
        checks = [
            ("dataset", self.dataset in ("simulated", "inat21"), "'simulated' or 'inat21'"),
            ("method", self.method in E2E_METHODS, f"one of {E2E_METHODS}"),
            ("epochs", _int(self.epochs, 1), "an integer >= 1"),
            ("warmup_epochs", _int(self.warmup_epochs, 0) and self.warmup_epochs < self.epochs,
             "an integer >= 0 and below epochs"),
            ("batch_size", _int(self.batch_size, 2), "an integer >= 2"),
            ("lr", isinstance(self.lr, (int, float)) and self.lr > 0, "a number > 0"),
            ("momentum", isinstance(self.momentum, (int, float)) and 0 <= self.momentum < 1, "a number in [0, 1)"),
            ("weight_decay", isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0, "a number >= 0"),
            ("label_smoothing", isinstance(self.label_smoothing, (int, float)) and 0 <= self.label_smoothing < 1,
             "a number in [0, 1)"),
            ("mixup_alpha", isinstance(self.mixup_alpha, (int, float)) and self.mixup_alpha >= 0, "a number >= 0"),
            ("augment", self.augment in AUGMENTS, f"one of {AUGMENTS}"),
            ("image_size", _int(self.image_size, 8), "an integer >= 8"),
            ("seed", _int(self.seed, 0), "an integer >= 0"),
            ("test_every", _int(self.test_every, 1), "an integer >= 1"),
            ("inat_root", self.dataset != "inat21" or isinstance(self.inat_root, str),
             "a folder path (str) when dataset is 'inat21'"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"FusionTrainConfig.{name} must be {allowed}, got {getattr(self, name)!r}")
        known = {"seed", "location_spread", "date_spread", "background", "missing_fraction", "interaction",
                 "groups", "draw_seed"}
        if set(self.metadata) - known:
            raise ValueError(f"FusionTrainConfig.metadata has unknown keys {sorted(set(self.metadata) - known)}; "
                             f"allowed: {sorted(known)}")
        hk = {"meta_width", "embed_dim", "reduced_dim", "hidden_dim", "num_blocks"}
        if set(self.head) != hk:
            raise ValueError(f"FusionTrainConfig.head must have exactly the keys {sorted(hk)}, got {sorted(self.head)}")
        if self.weights is not None and not Path(self.weights).is_file():
            raise ValueError(f"FusionTrainConfig.weights must be an existing local file (no download), got "
                             f"{self.weights!r}")

    def to_dict(self) -> dict[str, Any]:
        d = {**asdict(self), "e2e_version": E2E_VERSION}
        if d["test_every"] == 1:    # the default: runs from before the field keep their names
            del d["test_every"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FusionTrainConfig":
        d = {k: v for k, v in d.items() if k != "e2e_version"}
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown FusionTrainConfig fields {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "FusionTrainConfig":
        return dataclasses.replace(self, **changes)

    @property
    def run_prefix(self) -> str:
        return f"e2e-{self.method}"

    def simulator(self, num_classes: int, class_names=None) -> MetadataSimulator:
        kw = {k: v for k, v in self.metadata.items() if k != "draw_seed"}
        return MetadataSimulator(num_classes, class_names=class_names, **kw)


def _int(v, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


# --- data ---------------------------------------------------------------------------------------------------------
@dataclass
class FusionSplit:
    """One split: ``images`` uint8 (N, C, H, W) in memory, or ``paths`` (N,) of image files decoded on the fly;
    ``meta`` float32 (N, cin) encoded metadata (zeros where missing); ``labels`` int64 (N,); ``raw`` the
    :class:`MetadataArrays` (degrees, days)."""

    labels: torch.Tensor
    meta: torch.Tensor
    raw: MetadataArrays
    images: torch.Tensor | None = None
    paths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


def _simulated_split(config: FusionTrainConfig, split: str, train_ds=None):
    ds = load_dataset(config.source, split)
    if config.source_classes is not None:
        ds = select_classes(ds, config.source_classes)
    ds = subsample(ds, config.train_size if split == "train" else config.test_size, seed=0)
    sample_seed = 2 * int(config.metadata.get("draw_seed", 0)) + (split != "train")
    return _with_metadata(config, ds, sample_seed), ds.classes


#: Sample seed of the held-out images' metadata draw: HELDOUT_DRAW + draw_seed (train uses 2 draw_seed, test
#: 2 draw_seed + 1, so the streams never meet for draw_seed < HELDOUT_DRAW / 2).
HELDOUT_DRAW = 1_000_000


def heldout_split(config: FusionTrainConfig, n: int, seed: int = 1) -> tuple[FusionSplit, tuple[str, ...]]:
    """``n`` images of the train split that the run of ``config`` did not train on (stratified, drawn with
    ``seed``; compared by content), with their own metadata draw (sample seed :data:`HELDOUT_DRAW` + draw_seed)
    rendered as the training images are: for heads trained on frozen features of images the backbone never saw."""
    if config.dataset != "simulated":
        raise ValueError(f"heldout_split needs dataset 'simulated', got {config.dataset!r}")
    full = load_dataset(config.source, "train")
    if config.source_classes is not None:
        full = select_classes(full, config.source_classes)
    used = subsample(full, config.train_size, seed=0)
    ds = unseen_subset(full, used, n, seed)
    return _with_metadata(config, ds, HELDOUT_DRAW + int(config.metadata.get("draw_seed", 0))), ds.classes


def _with_metadata(config: FusionTrainConfig, ds, sample_seed: int) -> FusionSplit:
    """Images of ``ds`` with a metadata draw of ``sample_seed``, rendered with the interaction."""
    sim = config.simulator(ds.num_classes, ds.classes)
    y = ds.labels.numpy()
    raw = sim.sample(y, sample_seed)
    images = sim.render(ds.images, y, sim.latent(y, sample_seed))
    return FusionSplit(ds.labels, raw.encode(), raw, images=images)


def _inat_split(config: FusionTrainConfig, split: str):
    from .data.metadata import load_inat21

    rec = load_inat21(config.inat_root, split)
    meta = rec.metadata
    return FusionSplit(torch.as_tensor(rec.labels), meta.encode(), meta, paths=rec.paths), tuple(rec.class_names)


def fusion_splits(config: FusionTrainConfig) -> tuple[FusionSplit, FusionSplit, tuple[str, ...]]:
    """(train, test, class names) of ``config``."""
    if config.dataset == "simulated":
        train, classes = _simulated_split(config, "train")
        test, _ = _simulated_split(config, "test")
    else:
        train, classes = _inat_split(config, config.inat_train_split)
        test, _ = _inat_split(config, config.inat_test_split)
    return train, test, classes


def _decode(paths, size: int) -> torch.Tensor:
    """JPEG/PNG files -> uint8 (N, 3, size, size) (RGB, resized with PIL's bilinear filter)."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, p in enumerate(paths):
        out[i] = _decode_one(p, size)
    return out


def _decode_one(path, size: int) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


class _ImageFiles(torch.utils.data.Dataset):
    """Image ``paths`` decoded one by one in DataLoader workers: item i -> uint8 (3, size, size)."""

    def __init__(self, paths, size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return _decode_one(self.paths[i], self.size)


def default_workers(split: "FusionSplit") -> int:
    """Decoding processes for ``split``: 0 for images in memory; for image files ``$CTCBOOK_WORKERS`` or
    min(8, CPUs per local rank)."""
    if split.images is not None:
        return 0
    import os

    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return int(os.environ.get("CTCBOOK_WORKERS", min(8, (os.cpu_count() or 1) // local)))


def image_batches(split: FusionSplit, index_batches: list[torch.Tensor], size: int, workers: int = 0
                  ) -> Iterator[torch.Tensor]:
    """uint8 (B, C, H, W) images of ``split`` for each index batch, in order. Images in memory are indexed; image
    files are decoded in this process (``workers`` 0) or by a DataLoader over ``workers`` spawned processes, which
    decode the next batches while the model trains on this one. The images are the same either way."""
    if split.images is not None:
        for idx in index_batches:
            yield split.images[idx.cpu()]
        return
    if workers == 0:
        for idx in index_batches:
            yield _decode(split.paths[idx.cpu().numpy()], size)
        return
    loader = torch.utils.data.DataLoader(_ImageFiles(split.paths, size),
                                         batch_sampler=[idx.cpu().tolist() for idx in index_batches],
                                         num_workers=workers, multiprocessing_context="spawn",
                                         pin_memory=torch.cuda.is_available())
    yield from loader


def _batch_images(split: FusionSplit, idx: torch.Tensor, size: int) -> torch.Tensor:
    return next(image_batches(split, [idx], size))


@dataclass
class BatchPlan:
    """Everything random about one global batch of B images, drawn before any image is read, so that every rank
    of a multi-process run draws the same and decodes only what it needs: ``index`` (B,) images of the split;
    ``dy``/``dx`` (B,) crop offsets or None; ``flip`` (B,) bool or None; the mixup ``lam`` and partner ``perm`` (B,)
    (positions in the batch)."""

    index: torch.Tensor
    dy: torch.Tensor | None
    dx: torch.Tensor | None
    flip: torch.Tensor | None
    lam: float
    perm: torch.Tensor


def epoch_plan(n: int, config: FusionTrainConfig, epoch: int) -> list[BatchPlan]:
    """The epoch's batches (the last partial batch dropped): the order, crops and flips from a torch generator
    seeded by (seed, epoch), drawn in the order the single-process loop always drew them (the permutation, then per
    batch the crop rows, crop columns and flips); the mixup lambda ~ Beta(alpha, alpha) and permutation of each batch
    from a numpy generator seeded by [seed, epoch] (:func:`mixup`)."""
    gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    mix_rng = np.random.default_rng([config.seed, epoch])
    order = torch.randperm(n, generator=gen)
    b, pad = config.batch_size, config.crop_padding
    crop = config.augment in ("crop_flip", "crop") and pad > 0
    flips = config.augment in ("crop_flip", "flip")
    plans = []
    for i in range(n // b):
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen) if crop else None
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen) if crop else None
        flip = torch.rand(b, generator=gen) < 0.5 if flips else None
        lam, perm = mixup_draw(b, config.mixup_alpha, mix_rng)
        plans.append(BatchPlan(order[i * b:(i + 1) * b], dy, dx, flip, lam, perm))
    return plans


def _augment(x: torch.Tensor, plan: BatchPlan, rows: torch.Tensor, padding: int) -> torch.Tensor:
    """Apply the plan's crops and flips of batch positions ``rows`` to x (len(rows), C, H, W) float."""
    if plan.dy is not None:
        x = crop_at(x, padding, plan.dy[rows], plan.dx[rows])
    if plan.flip is not None:
        x = flip_where(x, plan.flip[rows])
    return x


def rank_positions(batch_size: int, d: distributed.Dist) -> torch.Tensor:
    """This rank's positions in a global batch: the contiguous share of :func:`ctcbook.distributed.shard`."""
    n = distributed.per_rank_batch(batch_size, d)
    return torch.arange(d.rank * n, (d.rank + 1) * n)


def mixed_batches(split: FusionSplit, config: FusionTrainConfig, plans: list[BatchPlan], positions: torch.Tensor,
                  device: torch.device, workers: int = 0
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]]:
    """This rank's share of each planned batch, augmented and mixed: (x (n, C, H, W) float in [0, 1], m (n, cin),
    y (n,), y of the mixup partners (n,), lam) for the batch ``positions`` (n,). Only the images of those positions
    and of their mixup partners are read (decoded by ``workers`` processes for image files); one process with all
    positions gets exactly :func:`epoch_batches` followed by :func:`mixup`."""
    need = [torch.unique(torch.cat([positions, p.perm[positions]])) for p in plans]   # sorted batch positions
    reads = image_batches(split, [p.index[u] for p, u in zip(plans, need)], config.image_size, workers)
    for plan, rows, images in zip(plans, need, reads):
        x = _augment(images.float().div_(255), plan, rows, config.crop_padding)
        where = torch.full((config.batch_size,), -1, dtype=torch.long)
        where[rows] = torch.arange(len(rows))
        own, partner = where[positions], where[plan.perm[positions]]
        idx, pidx = plan.index[positions], plan.index[plan.perm[positions]]
        xm = plan.lam * x[own] + (1 - plan.lam) * x[partner] if plan.lam != 1.0 else x[own]
        mm = split.meta[idx] if plan.lam == 1.0 else plan.lam * split.meta[idx] + (1 - plan.lam) * split.meta[pidx]
        yield (xm.to(device), mm.to(device), split.labels[idx].to(device), split.labels[pidx].to(device), plan.lam)


def epoch_batches(split: FusionSplit, config: FusionTrainConfig, epoch: int, device: torch.device,
                  workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Shuffled, augmented batches of one epoch before mixup: (x float (B, C, H, W) in [0, 1], m (B, cin), y (B,));
    the last partial batch is dropped (see :func:`epoch_plan`); ``workers`` decoding processes for image files
    (:func:`image_batches`) do not change them."""
    plans = epoch_plan(len(split), config, epoch)
    rows = torch.arange(config.batch_size)
    for plan, images in zip(plans, image_batches(split, [p.index for p in plans], config.image_size, workers)):
        x = _augment(images.float().div_(255), plan, rows, config.crop_padding)
        yield x.to(device), split.meta[plan.index].to(device), split.labels[plan.index].to(device)


# --- the model ----------------------------------------------------------------------------------------------------
class FusionNet(nn.Module):
    """Backbone (images in [0, 1] -> pooled features (N, C), with its input normalisation) + fusion head.

    ``forward(x, m)``: x (N, ch, H, W) float, m (N, cin) -> (features (N, C), logits (N, K))."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone.features(x)
        return feats, self.head(feats, m)


def head_kwargs(config: FusionTrainConfig, feature_dim: int, num_classes: int, cin: int) -> dict[str, Any]:
    """Constructor arguments of the head of ``config.method`` (see :class:`FusionTrainConfig`)."""
    h, method = config.head, config.method
    if method == "image_only":
        return {}
    kw: dict[str, Any] = {"meta_width": h["meta_width"]}
    if method in ("concat", "mlp_concat"):
        kw["embed_dim"] = h["embed_dim"]
    if method.startswith("dynamic_mlp_"):
        kw.update(embed_dim=h["embed_dim"], reduced_dim=h["reduced_dim"], hidden_dim=h["hidden_dim"],
                  num_blocks=h["num_blocks"])
    if method == "mlp_concat":
        c_head = build_fusion_head("dynamic_mlp_c", feature_dim, num_classes, cin,
                                   **head_kwargs(config.replace(method="dynamic_mlp_c"), feature_dim, num_classes,
                                                 cin))
        kw["hidden_dim"] = matched_mlp_hidden(count_parameters(c_head), feature_dim, num_classes, cin,
                                              embed_dim=h["embed_dim"], meta_width=h["meta_width"])
    return kw


def build_fusion_net(config: FusionTrainConfig, num_classes: int, in_channels: int, mean, std,
                     cin: int = 6) -> FusionNet:
    """The model of ``config`` (random init from the current torch seed; ``weights`` loaded into the backbone)."""
    backbone = build_model(config.arch, num_classes, in_channels=in_channels, mean=mean, std=std,
                           depth=config.depth, width=config.width, stem_stride=config.stem_stride)
    if config.weights is not None:
        load_backbone_weights(backbone.backbone, config.weights)
    del backbone.head   # the fusion head classifies
    c = backbone.feature_dim
    head = build_fusion_head(config.method, c, num_classes, cin, **head_kwargs(config, c, num_classes, cin))
    return FusionNet(backbone, head)


def load_backbone_weights(backbone: nn.Module, path: str) -> None:
    """Load a local state dict (e.g. torchvision's ImageNet ResNet-50 file) into ``backbone``; the classifier's
    ``fc.*`` keys are skipped (the fusion head replaces it). Raises ValueError naming missing or unexpected keys."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as err:          # shapes differ
        raise ValueError(f"weights file {path} does not fit the backbone: {str(err)[:500]}") from None
    if missing or unexpected:
        raise ValueError(f"weights file {path} does not fit the backbone: missing keys {missing[:5]}, unexpected "
                         f"keys {unexpected[:5]}")


# --- the loop -----------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: FusionNet, split: FusionSplit, config: FusionTrainConfig, device: torch.device, *,
             batch_size: int = 512, amp: bool = False, workers: int = 0,
             d: distributed.Dist = distributed.SINGLE) -> tuple[float, float]:
    """(top-1 in [0, 1], mean cross-entropy in nats) on ``split``, eval mode, no augmentation; ``workers`` decoding
    processes for image files. Under torchrun each rank scores every world_size-th image and the sums are added."""
    was = model.training
    model.eval()
    correct, loss = 0, 0.0
    mine = torch.arange(d.rank, len(split), d.world_size)
    index_batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    for idx, images in zip(index_batches, image_batches(split, index_batches, config.image_size, workers)):
        x = images.float().div_(255).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            _, logits = model(x, split.meta[idx].to(device))
        y = split.labels[idx].to(device)
        loss += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    model.train(was)
    sums = distributed.all_sum(torch.tensor([correct, loss], dtype=torch.float64, device=device), d)
    return float(sums[0]) / len(split), float(sums[1]) / len(split)


def train_fusion(config: FusionTrainConfig, *, store: RunStore | None = None, device: torch.device | str | None = None,
                 progress: bool = True, amp: bool | None = None,
                 on_epoch_end: Callable[[int, FusionNet, Run], None] | None = None,
                 workers: int | None = None, wait: bool = True) -> Run:
    """Train (or reuse a finished, or resume an interrupted) end-to-end run of ``config`` and return its Run.
    Only one process trains a run (the run's writer lock, as :func:`ctcbook.train.train`; ``wait`` False refuses
    at once when another holds it).

    Per epoch, in this order: checkpoint (model weights), metrics row (``train_loss``, ``test_acc`` and
    ``test_loss`` at the epochs ``test_every`` picks, ``lr``, ``train_seconds``, ``images_per_second``,
    ``device``), resume state. ``amp`` (bfloat16 autocast) defaults to on for CUDA; it does not enter the run's
    hash, nor does ``workers`` (processes decoding image files, default :func:`default_workers`; the numbers are the
    same for any value).

    Under ``torchrun`` (the same path as :func:`ctcbook.train.train`, e.g. :func:`ctcbook.launch.train` with
    ``nproc`` > 1) every rank calls this: the model is wrapped in DistributedDataParallel; every rank draws the same
    plan of each global batch (order, crops, flips, mixup) and reads only its contiguous share of the positions and
    their mixup partners, so the global batch is the one a single process would train on; gradients are averaged
    over ranks, BatchNorm statistics stay per rank (rank 0's are saved), and rank 0 alone writes the run folder.
    """
    d, rank_device = distributed.setup(device)
    store = store or RunStore()
    if d.main:
        run = store.open(config.to_dict(), prefix=config.run_prefix)
    else:
        run = Run(store.root / f"{config.run_prefix}-{config_hash(config.to_dict())}", config.to_dict())
    distributed.barrier(d)
    if distributed.broadcast_object(run.done, d):
        return run
    with run.writer(wait=wait) if d.main else contextlib.nullcontext():
        done, failure = distributed.broadcast_object((run.done, run.failure), d)
        if done:
            return run
        if failure is not None:
            raise RunFailedError(f"run {run.path} failed earlier: {failure}; change the config or delete the folder")
        return _train_fusion_locked(run, config, d, rank_device if rank_device is not None else device, progress,
                                    amp, on_epoch_end, workers)


def _train_fusion_locked(run: Run, config: FusionTrainConfig, d: distributed.Dist, device, progress: bool,
                         amp: bool | None, on_epoch_end, workers: int | None) -> Run:
    """The body of :func:`train_fusion`, run while holding ``run``'s writer lock (rank 0)."""
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available()
                                                                          else "cpu")
    amp = device.type == "cuda" if amp is None else amp
    positions = rank_positions(config.batch_size, d)
    train, test, classes = fusion_splits(config)
    workers = default_workers(train) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0 (image-decoding processes), got {workers!r}")
    if len(train) < config.batch_size:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {len(train)} training images")
    probe = _batch_images(train, torch.arange(min(len(train), 256)), config.image_size).float().div(255)
    flat = probe.transpose(0, 1).reshape(probe.shape[1], -1)
    model_args = {"num_classes": len(classes), "in_channels": int(probe.shape[1]), "mean": flat.mean(1).tolist(),
                  "std": flat.std(1).clamp_min(1e-3).tolist(), "cin": int(train.meta.shape[1])}
    if d.main and not (run.path / "model.json").exists():
        atomic_write_json(run.path / "model.json", model_args)

    torch.manual_seed(config.seed)
    model = build_fusion_net(config, **model_args).to(device)
    net = model
    if d.active:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    steps = len(train) // config.batch_size
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, steps, config.epochs, config.warmup_epochs))
    start = 0
    state = distributed.broadcast_object(run.load_state() if d.main else None, d)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = state["epoch"]
    if d.main:
        run.truncate_metrics(start)
    k = len(classes)
    bar = tqdm(range(start + 1, config.epochs + 1), desc=run.name, disable=not progress or not d.main,
               initial=start, total=config.epochs, unit="epoch")
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        torch.manual_seed(config.seed * 100_003 + epoch)          # dropout: the same draws after a resume
        losses = torch.zeros(steps)
        plans = epoch_plan(len(train), config, epoch)
        for step, (x, m, y, y2, lam) in enumerate(mixed_batches(train, config, plans, positions, device, workers)):
            targets = (lam * smoothed_targets(y, k, config.label_smoothing)
                       + (1 - lam) * smoothed_targets(y2, k, config.label_smoothing))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                _, logits = net(x, m)
            loss = soft_cross_entropy(logits, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses[step] = loss.detach().cpu()
        losses = distributed.all_sum(losses.to(device), d).cpu() / d.world_size
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            step = int(bad[0])
            if d.main:
                run.mark_failed(epoch, step, f"non-finite training loss {losses[step].item()}")
            raise RunFailedError(f"run {run.name}: loss became {losses[step].item()} at epoch {epoch}, step {step}")
        seconds = time.perf_counter() - t0
        distributed.broadcast_buffers(model, d)   # rank 0's BatchNorm statistics, for evaluation and the checkpoint
        row = {"epoch": epoch, "train_loss": losses.mean().item()}
        if epoch % config.test_every == 0 or epoch == config.epochs:
            row["test_acc"], row["test_loss"] = evaluate(model, test, config, device, amp=amp, workers=workers, d=d)
        row.update({"lr": opt.param_groups[0]["lr"], "train_seconds": seconds,
                    "images_per_second": steps * config.batch_size / seconds, "device": str(device),
                    **({"world_size": d.world_size} if d.active else {})})
        if d.main:
            run.save_checkpoint(epoch, model.state_dict())
            run.append_metrics(row)
            run.save_state({"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict()})
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", test_acc=f"{row.get('test_acc', float('nan')):.4f}",
                            refresh=False)
            if on_epoch_end is not None:
                on_epoch_end(epoch, model, run)
        distributed.barrier(d)
    if d.main:
        final = run.metrics()[-1]
        run.mark_done({"epochs": config.epochs, "test_acc": final["test_acc"], "device": str(device)})
    distributed.barrier(d)
    return run


def load_fusion_net(run: Run, epoch: int | None = None, device: torch.device | str = "cpu") -> FusionNet:
    """The run's model with the weights of ``epoch`` (default: the last saved), eval mode."""
    import json

    config = FusionTrainConfig.from_dict({**run.config, "weights": None})   # the checkpoint holds every weight
    args = json.loads((run.path / "model.json").read_text())
    model = build_fusion_net(config, **args)
    epoch = run.saved_epochs()[-1] if epoch is None else epoch
    model.load_state_dict(run.load_checkpoint(epoch))
    return model.to(device).eval()
