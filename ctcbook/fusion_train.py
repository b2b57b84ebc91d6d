"""End-to-end training of an image backbone with a fusion head on images plus metadata: the task of a
:class:`~ctcbook.config.FusionTrainConfig` (Dynamic MLP's recipe, github ylingfeng/DynamicMLP ``train.py``).

Label smoothing as that code computes it; mixup with one lambda ~ Beta(alpha, alpha) per batch on images and metadata
alike. An epoch's randomness is drawn from (seed, epoch) before any image is read (:func:`epoch_plan`), so a resumed
run equals an uninterrupted one and every rank draws the same plan.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .config import FusionTrainConfig
from .data import load_dataset, select_classes, subsample, unseen_subset
from .data.loader import crop_at, flip_where
from .data.metadata import MetadataArrays
from .models import build_model
from .models.fusion import build_head
from .runs import Run


# --- the recipe's pieces ----------------------------------------------------------------------------------------
def smoothed_targets(y: torch.Tensor, num_classes: int, epsilon: float) -> torch.Tensor:
    """(N, K) targets: 1 - epsilon on the true class, epsilon / (K - 1) on each other one (the public code's; not
    ``F.cross_entropy(label_smoothing=)``, which spreads epsilon / K over all K)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
    t = torch.full((len(y), num_classes), epsilon / (num_classes - 1), device=y.device)
    return t.scatter_(1, y.view(-1, 1), 1.0 - epsilon)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_k targets_k log softmax(logits)_k, in nats."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def mixup_draw(n: int, alpha: float, rng: np.random.Generator) -> tuple[float, torch.Tensor]:
    """(lam ~ Beta(alpha, alpha), partner permutation), drawn in that order; alpha 0 draws nothing."""
    if alpha <= 0:
        return 1.0, torch.arange(n)
    return float(rng.beta(alpha, alpha)), torch.from_numpy(rng.permutation(n))


# --- data ---------------------------------------------------------------------------------------------------------
@dataclass
class FusionSplit:
    """One split: uint8 ``images`` or files at ``paths``; ``meta`` encoded metadata, ``raw`` it in degrees and days."""

    labels: torch.Tensor
    meta: torch.Tensor
    raw: MetadataArrays
    images: torch.Tensor | None = None
    paths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


def _source(config: FusionTrainConfig, split: str):
    ds = load_dataset(config.source, split)
    return ds if config.source_classes is None else select_classes(ds, config.source_classes)


def _simulated_split(config: FusionTrainConfig, split: str):
    ds = subsample(_source(config, split), config.train_size if split == "train" else config.test_size, seed=0)
    sample_seed = 2 * int(config.metadata.get("draw_seed", 0)) + (split != "train")
    return _with_metadata(config, ds, sample_seed), ds.classes


#: Sample seed of the held-out images' metadata draw: HELDOUT_DRAW + draw_seed (train uses 2 draw_seed, test
#: 2 draw_seed + 1, so the streams never meet for draw_seed < HELDOUT_DRAW / 2).
HELDOUT_DRAW = 1_000_000


def heldout_split(config: FusionTrainConfig, n: int) -> tuple[FusionSplit, tuple[str, ...]]:
    """``n`` train-split images the run of ``config`` did not train on, with their own metadata draw."""
    if config.dataset != "simulated":
        raise ValueError(f"heldout_split needs dataset 'simulated', got {config.dataset!r}")
    full = _source(config, "train")
    ds = unseen_subset(full, subsample(full, config.train_size, seed=0), n, seed=1)
    return _with_metadata(config, ds, HELDOUT_DRAW + int(config.metadata.get("draw_seed", 0))), ds.classes


def _with_metadata(config: FusionTrainConfig, ds, sample_seed: int) -> FusionSplit:
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


class _ImageFiles(torch.utils.data.Dataset):
    """Image files: item i -> uint8 (3, size, size), RGB, resized with PIL's bilinear filter."""

    def __init__(self, paths, size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            arr = np.asarray(im.convert("RGB").resize((self.size, self.size), Image.BILINEAR))
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def image_batches(split: FusionSplit, index_batches: list[torch.Tensor], size: int, workers: int = 0
                  ) -> Iterator[torch.Tensor]:
    """uint8 images of ``split`` per index batch, decoded here (``workers`` 0) or by read-ahead DataLoader workers."""
    if split.images is not None:
        for idx in index_batches:
            yield split.images[idx.cpu()]
        return
    files = _ImageFiles(split.paths, size)
    if workers == 0:
        for idx in index_batches:
            yield torch.stack([files[i] for i in idx.tolist()])
        return
    loader = torch.utils.data.DataLoader(files,
                                         batch_sampler=[idx.cpu().tolist() for idx in index_batches],
                                         num_workers=workers, multiprocessing_context="spawn",
                                         pin_memory=torch.cuda.is_available())
    yield from loader


@dataclass
class BatchPlan:
    """Everything random about one global batch: images, crop offsets, flips, mixup ``lam`` and partner positions."""

    index: torch.Tensor
    dy: torch.Tensor | None
    dx: torch.Tensor | None
    flip: torch.Tensor | None
    lam: float
    perm: torch.Tensor


def epoch_plan(n: int, config: FusionTrainConfig, epoch: int) -> list[BatchPlan]:
    """The epoch's full batches: order, crops, flips (torch) and mixup (numpy generator), seeded by (seed, epoch)."""
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
    """The plan's crops and flips of batch positions ``rows`` applied to x."""
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
    """(x, m, y, partner y, lam) of this rank's ``positions`` in each planned batch, augmented and mixed; only those
    images and their mixup partners are read."""
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


# --- the model ----------------------------------------------------------------------------------------------------
class FusionNet(nn.Module):
    """Backbone (with its input normalisation) + fusion head: ``forward(x, m)`` -> (features, logits)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone.features(x)
        return feats, self.head(feats, m)


def build_fusion_net(config: FusionTrainConfig, num_classes: int, in_channels: int, mean, std,
                     cin: int = 6) -> FusionNet:
    """The model of ``config`` (random init from the current torch seed; ``weights`` loaded into the backbone)."""
    backbone = build_model(config.arch, num_classes, in_channels=in_channels, mean=mean, std=std,
                           depth=config.depth, width=config.width, stem_stride=config.stem_stride)
    if config.weights is not None:
        load_backbone_weights(backbone.backbone, config.weights)
    del backbone.head   # the fusion head classifies
    return FusionNet(backbone, build_head(config.method, backbone.feature_dim, num_classes, cin, config.head))


def load_backbone_weights(backbone: nn.Module, path: str) -> None:
    """Load a local state dict (e.g. torchvision's ResNet-50) into ``backbone``, skipping the classifier ``fc.*``."""
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


# --- the task ----------------------------------------------------------------------------------------------------
class FusionTask:
    """An end-to-end run: planned, mixed batches, the smoothed soft-target loss, tests every ``test_every`` epochs."""

    def __init__(self, config: FusionTrainConfig, d: distributed.Dist, device: torch.device, amp: bool,
                 workers: int | None, batch_size: int):
        self.config, self.d, self.device, self.amp = config, d, device, amp
        self.positions = rank_positions(config.batch_size, d)
        self.train, self.test, classes = fusion_splits(config)
        if workers is None:
            workers = 0 if self.train.images is not None else distributed.default_workers()
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be an integer >= 0 (image-decoding processes), got {workers!r}")
        self.workers = workers
        if len(self.train) < config.batch_size:
            raise ValueError(f"batch_size {config.batch_size} exceeds the {len(self.train)} training images")
        self.steps_per_epoch = len(self.train) // config.batch_size
        sample = next(image_batches(self.train, [torch.arange(min(len(self.train), 256))], config.image_size))
        flat = sample.float().div(255).transpose(0, 1).reshape(sample.shape[1], -1)
        self.model_args = {"num_classes": len(classes), "in_channels": int(sample.shape[1]),
                           "mean": flat.mean(1).tolist(), "std": flat.std(1).clamp_min(1e-3).tolist(),
                           "cin": int(self.train.meta.shape[1])}
        # Step losses stay on the CPU: their float32 mean (train_loss) could round differently on a GPU.
        self.loss_device = torch.device("cpu")

    def build_model(self) -> FusionNet:
        return build_fusion_net(self.config, **self.model_args).to(self.device)

    def prepare(self, model: FusionNet) -> None:
        self.parameters = list(model.parameters())

    def load_state(self, state: dict[str, Any], model: FusionNet) -> None:
        pass

    def start_epoch(self, epoch: int) -> Iterator:
        torch.manual_seed(self.config.seed * 100_003 + epoch)  # dropout: the same draws after a resume
        plans = epoch_plan(len(self.train), self.config, epoch)
        return mixed_batches(self.train, self.config, plans, self.positions, self.device, self.workers)

    def loss(self, net: nn.Module, batch, epoch: int, step: int) -> torch.Tensor:
        x, m, y, y2, lam = batch
        k, eps = self.model_args["num_classes"], self.config.label_smoothing
        targets = lam * smoothed_targets(y, k, eps) + (1 - lam) * smoothed_targets(y2, k, eps)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            _, logits = net(x, m)
        return soft_cross_entropy(logits, targets)

    def after_backward(self) -> None:
        pass

    def train_metrics(self) -> dict[str, float]:
        return {}

    def eval_sets(self, epoch: int) -> dict[str, Iterator]:
        if epoch % self.config.test_every and epoch != self.config.epochs:
            return {}
        return {"test": eval_batches(self.test, self.config, self.device, self.workers, self.d)}

    def end_epoch(self, model: FusionNet, epoch: int) -> tuple[dict[str, Any], dict[str, Any]]:
        return {}, {}


def eval_batches(split: FusionSplit, config: FusionTrainConfig, device: torch.device, workers: int = 0,
                 d: distributed.Dist = distributed.SINGLE, batch_size: int = 512) -> Iterator:
    """((images, metadata), labels) batches of every world_size-th image of ``split``, not augmented."""
    mine = torch.arange(d.rank, len(split), d.world_size)
    index_batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    for idx, images in zip(index_batches, image_batches(split, index_batches, config.image_size, workers)):
        yield (images.float().div_(255).to(device), split.meta[idx].to(device)), split.labels[idx].to(device)


def load_fusion_net(run: Run, epoch: int | None = None, device: torch.device | str = "cpu") -> FusionNet:
    """The run's model with the weights of ``epoch`` (default: the last saved), eval mode."""
    config = FusionTrainConfig.from_dict({**run.config, "weights": None})  # the checkpoint holds every weight
    model = build_fusion_net(config, **run.model_args())
    epoch = run.saved_epochs()[-1] if epoch is None else epoch
    model.load_state_dict(run.load_checkpoint(epoch))
    return model.to(device).eval()
