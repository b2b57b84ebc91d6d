"""Run configs: everything that changes a training run's numbers; the hash of ``to_dict()`` names its folder.

Where data lives and which device trains are not part of them: the same config gives the same run anywhere.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .data.metadata import MetadataSimulator

SCHEDULES = ("cosine", "step", "two_stage", "paper_cosine", "paper_two_stage")
#: The schedules with a stage switch (``stages``); the ``paper_`` ones are the public code's, set once per epoch.
TWO_STAGE = ("two_stage", "paper_two_stage")
AUGMENTS = ("crop_flip", "crop", "flip", "none")
OBJECTIVES = ("ce", "ctc")


@dataclass(frozen=True)
class StageSchedule:
    """CTC's two stages (``train_ctc.py``): epochs 1..``stage_two_epoch`` with weight decay x ``weight_decay_coef``
    and lr cosine to 0; then the plain weight decay and lr restarted at ``lr_restart`` x lr, cosine to 0."""

    stage_two_epoch: int
    weight_decay_coef: float = 2.0
    lr_restart: float = 0.1

    def check(self, epochs: int) -> None:
        checks = [("stage_two_epoch", 1 <= self.stage_two_epoch < epochs, f"an epoch in 1..{epochs - 1}"),
                  ("weight_decay_coef", self.weight_decay_coef >= 0, "a number >= 0"),
                  ("lr_restart", self.lr_restart > 0, "a number > 0")]
        check_fields(self, checks)


@dataclass(frozen=True)
class CTCConfig:
    """Loss settings of contrastive temporal coding (names of the public code's options in brackets).

    Stage 1: ``alpha`` [-a] x instance discrimination with a ``instance_dim``-d projection [instance_dim],
    temperature ``instance_t`` [instance_t], memory momentum ``instance_m`` [instance_m]; ``train_instance_head``
    False keeps the projection at its random initialisation, as train_ctc.py does (it never gives that layer to the
    optimiser). Stage 2: ``beta`` [-b] x the NCE contrastive loss between the network and its frozen stage-1
    snapshot, heads of ``nce_dim`` [contrast_feat_dim], ``nce_k`` negatives [nce_k] drawn from images of other
    classes (mode ``exact``), temperature ``nce_t``, memory momentum ``nce_m``; ``refill`` [update_memory_bank]
    fills both stage-2 memories with the snapshot's embeddings at the switch."""

    alpha: float = 0.5
    beta: float = 1.0
    instance_dim: int = 128
    instance_t: float = 0.1
    instance_m: float = 0.9
    train_instance_head: bool = False
    nce_dim: int = 128
    nce_k: int = 16384
    nce_t: float = 0.1
    nce_m: float = 0.9
    refill: bool = True

    def check(self) -> None:
        checks = [("alpha", self.alpha >= 0, "a number >= 0"), ("beta", self.beta >= 0, "a number >= 0"),
                  ("instance_dim", self.instance_dim >= 1, "an integer >= 1"),
                  ("instance_t", self.instance_t > 0, "a number > 0"),
                  ("instance_m", 0 <= self.instance_m <= 1, "a number in [0, 1]"),
                  ("nce_dim", self.nce_dim >= 1, "an integer >= 1"), ("nce_k", self.nce_k >= 1, "an integer >= 1"),
                  ("nce_t", self.nce_t > 0, "a number > 0"), ("nce_m", 0 <= self.nce_m <= 1, "a number in [0, 1]")]
        check_fields(self, checks)


def check(name: str, value, ok: bool, allowed: str) -> None:
    """Refuse ``value`` unless ``ok``: "<name> must be <allowed>, got <value>"."""
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_fields(obj, checks) -> None:
    """Refuse the first failed (field, ok, what is allowed) check, naming the field and its value."""
    for name, ok, allowed in checks:
        check(f"{type(obj).__name__}.{name}", getattr(obj, name), ok, allowed)


def _check_known(names, cls, what: str) -> None:
    """Refuse ``names`` that are not fields of the dataclass ``cls``, listing the allowed ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    if set(names) - known:
        raise ValueError(f"unknown {what} field(s) {sorted(set(names) - known)}; allowed: {sorted(known)}")


def is_int(v, low: int) -> bool:
    """An int (not a bool) of at least ``low``."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


class _Config:
    """What both run configs share: ``to_dict`` (hashed into the run folder's name), ``from_dict``, ``replace``."""

    #: Fields left out of ``to_dict`` at these values, so runs made before the field existed keep their hashes.
    _left_out: ClassVar[dict[str, Any]] = {}
    #: Constant entries of ``to_dict`` (hashed with the fields).
    _constants: ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        d = {**dataclasses.asdict(self), **self._constants}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()
                if not (k in self._left_out and v == self._left_out[k])}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        _check_known(set(d) - set(cls._constants), cls, cls.__name__)
        return cls(**{k: v for k, v in d.items() if k not in cls._constants})

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TrainConfig(_Config):
    """One source run: ``source_classes`` relabelled 0..k-1 (None: all), ``train_size`` a stratified subset drawn
    with seed 0 (None: all); SGD with ``schedule`` cosine, step (x ``gamma`` after each of ``milestones``), two_stage
    (``stages``; objective "ctc" needs a two-stage schedule and ``ctc``) or the public code's per-epoch paper_cosine
    (to ``lr_floor``) and paper_two_stage; ``warmup_epochs``: :func:`ctcbook.train.lr_factor`; ``test_every``: the
    source test and clean training splits are measured at epoch 1, every ``test_every`` epochs and the last."""

    source: str = "fashion_mnist"
    source_classes: tuple[int, ...] | None = (0, 1, 2, 3, 4)
    train_size: int | None = 8000
    arch: str = "cifar_resnet"
    depth: int = 8
    width: int = 8
    stem_stride: int = 2
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    augment: str = "crop_flip"
    crop_padding: int = 2
    objective: str = "ce"
    seed: int = 0
    stages: StageSchedule | None = None
    ctc: CTCConfig | None = None
    warmup_epochs: int = 0
    lr_floor: float = 0.0
    test_every: int = 1

    _left_out = {"stages": None, "ctc": None, "warmup_epochs": 0, "lr_floor": 0.0, "test_every": 1}

    def __post_init__(self):
        for name in ("source_classes", "milestones"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        for name, cls in (("stages", StageSchedule), ("ctc", CTCConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                _check_known(value, cls, f"TrainConfig.{name}")
                object.__setattr__(self, name, cls(**value))
        checks = [
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("test_every", is_int(self.test_every, 1), "an integer >= 1"),
            ("lr", self.lr > 0, "a number > 0"),
            ("momentum", 0 <= self.momentum < 1, "a number in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "a number >= 0"),
            ("schedule", self.schedule in SCHEDULES, f"one of {SCHEDULES}"),
            ("augment", self.augment in AUGMENTS, f"one of {AUGMENTS}"),
            ("crop_padding", self.crop_padding >= 0, "an integer >= 0"),
            ("objective", self.objective in OBJECTIVES, f"one of {OBJECTIVES}"),
            ("train_size", self.train_size is None or self.train_size >= 1, "None or an integer >= 1"),
            ("milestones", all(1 <= m <= self.epochs for m in self.milestones), f"epochs in 1..{self.epochs}"),
            ("stages", (self.stages is not None) == (self.schedule in TWO_STAGE),
             f"a StageSchedule when schedule is one of {TWO_STAGE} and None otherwise"),
            ("ctc", (self.ctc is not None) == (self.objective == "ctc"),
             "a CTCConfig when objective is 'ctc' and None otherwise"),
            ("schedule", self.objective != "ctc" or self.schedule in TWO_STAGE,
             f"one of {TWO_STAGE} when objective is 'ctc'"),
            ("lr_floor", 0 <= self.lr_floor < 1 and (self.lr_floor == 0 or self.schedule == "paper_cosine"),
             "a number in [0, 1), and 0 unless schedule is 'paper_cosine'"),
            ("warmup_epochs", is_int(self.warmup_epochs, 0) and self.warmup_epochs < (
                self.stages.stage_two_epoch if self.stages and 1 <= self.stages.stage_two_epoch < self.epochs
                else self.epochs),
             "an integer >= 0 and below epochs (below stages.stage_two_epoch for a two-stage schedule)"),
        ]
        check_fields(self, checks)
        if self.stages is not None:
            self.stages.check(self.epochs)
        if self.ctc is not None:
            self.ctc.check()

    @property
    def run_prefix(self) -> str:
        return f"{self.source}-{self.objective}-s{self.seed}"


#: Bump when the end-to-end loop changes the numbers a run produces; part of every end-to-end run's config.
E2E_VERSION = 1
#: Heads that train end to end with one loss (geo_prior and metadata_only do not fit this loop).
E2E_METHODS = ("image_only", "concat", "add", "multiply", "dynamic_mlp_a", "dynamic_mlp_b", "dynamic_mlp_c",
               "mlp_concat")
HEAD_KEYS = ("meta_width", "embed_dim", "reduced_dim", "hidden_dim", "num_blocks")


@dataclass(frozen=True)
class FusionTrainConfig(_Config):
    """One end-to-end run: a backbone trained with a fusion head on images plus location/date metadata.

    ``dataset`` "simulated" (``metadata``: MetadataSimulator arguments plus ``draw_seed``; train and test draw with
    sample seeds 2 draw_seed and 2 draw_seed + 1) or "inat21" (the official layout under ``inat_root``). ``weights``:
    a local state-dict file for the backbone (never downloaded). ``test_every``: epochs between test passes (the
    last epoch is always tested; other rows carry no ``test_acc``)."""

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

    _left_out = {"test_every": 1}
    _constants = {"e2e_version": E2E_VERSION}
    # The recipe's fixed schedule, read by ctcbook.train.lr_factor and weight_decay_at (not fields: not hashed).
    schedule: ClassVar[str] = "cosine"
    stages: ClassVar[None] = None

    def __post_init__(self):
        checks = [
            ("dataset", self.dataset in ("simulated", "inat21"), "'simulated' or 'inat21'"),
            ("method", self.method in E2E_METHODS, f"one of {E2E_METHODS}"),
            ("epochs", is_int(self.epochs, 1), "an integer >= 1"),
            ("warmup_epochs", is_int(self.warmup_epochs, 0) and self.warmup_epochs < self.epochs,
             "an integer >= 0 and below epochs"),
            ("batch_size", is_int(self.batch_size, 2), "an integer >= 2"),
            ("lr", isinstance(self.lr, (int, float)) and self.lr > 0, "a number > 0"),
            ("momentum", isinstance(self.momentum, (int, float)) and 0 <= self.momentum < 1, "a number in [0, 1)"),
            ("weight_decay", isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0, "a number >= 0"),
            ("label_smoothing", isinstance(self.label_smoothing, (int, float)) and 0 <= self.label_smoothing < 1,
             "a number in [0, 1)"),
            ("mixup_alpha", isinstance(self.mixup_alpha, (int, float)) and self.mixup_alpha >= 0, "a number >= 0"),
            ("augment", self.augment in AUGMENTS, f"one of {AUGMENTS}"),
            ("image_size", is_int(self.image_size, 8), "an integer >= 8"),
            ("seed", is_int(self.seed, 0), "an integer >= 0"),
            ("test_every", is_int(self.test_every, 1), "an integer >= 1"),
            ("inat_root", self.dataset != "inat21" or isinstance(self.inat_root, str),
             "a folder path (str) when dataset is 'inat21'"),
            ("head", set(self.head) == set(HEAD_KEYS), f"a dict with exactly the keys {sorted(HEAD_KEYS)}"),
            ("weights", self.weights is None or Path(self.weights).is_file(), "an existing local file (no download)"),
        ]
        check_fields(self, checks)
        known = {"seed", "location_spread", "date_spread", "background", "missing_fraction", "interaction",
                 "groups", "draw_seed"}
        if set(self.metadata) - known:
            raise ValueError(f"FusionTrainConfig.metadata has unknown keys {sorted(set(self.metadata) - known)}; "
                             f"allowed: {sorted(known)}")

    @property
    def run_prefix(self) -> str:
        return f"e2e-{self.method}"

    def simulator(self, num_classes: int, class_names=None) -> MetadataSimulator:
        return MetadataSimulator(num_classes, class_names=class_names,
                                 **{k: v for k, v in self.metadata.items() if k != "draw_seed"})


def config_from_dict(fields: dict[str, Any]) -> TrainConfig | FusionTrainConfig:
    """The config whose ``to_dict()`` (or JSON file) ``fields`` are: an end-to-end run's carry its ``e2e_version``."""
    return FusionTrainConfig.from_dict(fields) if "e2e_version" in fields else TrainConfig.from_dict(fields)
