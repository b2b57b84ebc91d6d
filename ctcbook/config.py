"""Run configs.

:class:`TrainConfig` holds everything that changes a training run's numbers; its hash names the run's folder
(see :mod:`ctcbook.runs`). Where data lives (``root``, ``$CTCBOOK_DATA``) and which device runs it are not part of
it: the same config gives the same run on a laptop and on a GPU box (up to floating-point differences).

The chapters' named profiles (notebook parameter values) live in :mod:`ctcbook.book.profiles`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEDULES = ("cosine", "step", "two_stage")
AUGMENTS = ("crop_flip", "crop", "flip", "none")
OBJECTIVES = ("ce", "ctc")


@dataclass(frozen=True)
class StageSchedule:
    """CTC's two-stage schedule (public code ``train_ctc.py``): stage 1 is epochs 1..``stage_two_epoch`` with weight
    decay x ``weight_decay_coef`` and the learning rate cosine-decayed from lr to 0; stage 2 is the remaining epochs
    with the plain weight decay and the learning rate restarted at ``lr_restart`` x lr, cosine-decayed to 0."""

    stage_two_epoch: int
    weight_decay_coef: float = 2.0
    lr_restart: float = 0.1

    def check(self, epochs: int) -> None:
        checks = [("stage_two_epoch", 1 <= self.stage_two_epoch < epochs, f"an epoch in 1..{epochs - 1}"),
                  ("weight_decay_coef", self.weight_decay_coef >= 0, "a number >= 0"),
                  ("lr_restart", self.lr_restart > 0, "a number > 0")]
        _raise_first("StageSchedule", checks, self)


@dataclass(frozen=True)
class CTCConfig:
    """Loss settings of contrastive temporal coding (names of the public code's options in brackets).

    Stage 1: ``alpha`` [-a] x instance discrimination with a ``instance_dim``-d projection [instance_dim],
    temperature ``instance_t`` [instance_t], memory momentum ``instance_m`` [instance_m]; ``train_instance_head``
    False keeps the projection at its random initialisation, as train_ctc.py does (it never gives that layer to the
    optimiser). Stage 2: ``beta`` [-b] x the NCE contrastive loss between the network and its frozen stage-1
    snapshot, heads of ``nce_dim`` [contrast_feat_dim], ``nce_k`` negatives [nce_k] drawn from images of other
    classes (mode ``exact``), temperature ``nce_t``, memory momentum ``nce_m``; ``refill`` [update_memory_bank]
    fills both stage-2 memories with the snapshot's embeddings at the switch.
    """

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
        _raise_first("CTCConfig", checks, self)


def _raise_first(cls: str, checks, obj) -> None:
    for name, ok, allowed in checks:
        if not ok:
            raise ValueError(f"{cls}.{name} must be {allowed}, got {getattr(obj, name)!r}")


@dataclass(frozen=True)
class TrainConfig:
    """One supervised training run.

    Data: ``source`` dataset name (see :func:`ctcbook.data.available_datasets`), ``source_classes`` the classes kept
    (relabelled 0..k-1 in that order; None keeps all), ``train_size`` a stratified subset of the train split (None
    keeps all; drawn with seed 0 so every training seed sees the same images). The test split keeps all images of
    the kept classes.
    Model: ``arch`` with ``depth``/``width``/``stem_stride`` for the CIFAR-style ResNet.
    Optimisation: SGD with Nesterov off, ``lr`` for ``batch_size``, ``momentum``, ``weight_decay``; ``schedule``
    cosine (per step, to 0 at the end) or step (x ``gamma`` at each epoch in ``milestones``).
    ``augment``: random crop with ``crop_padding`` pixels of zero padding and/or horizontal flip ("flip": flip only),
    on the device.
    ``objective`` "ce" (cross-entropy) or "ctc" (cross-entropy plus the CTC losses of ``ctc``, a :class:`CTCConfig`);
    ``schedule`` "two_stage" takes its stages from ``stages`` (a :class:`StageSchedule`; "ctc" requires it).
    ``stages`` and ``ctc`` are left out of :meth:`to_dict` when None, so adding them changed no earlier run's hash.
    ``warmup_epochs``: the learning rate rises linearly from lr / W to lr over the first W = warmup_epochs x
    steps-per-epoch optimiser steps, then follows ``schedule`` (torchvision's ``--lr-warmup-epochs`` with a linear
    warm-up; see :func:`ctcbook.train.lr_factor`); 0 (no warm-up) is left out of :meth:`to_dict`, so earlier runs keep
    their hashes.
    """

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

    def __post_init__(self):
        for name in ("source_classes", "milestones"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        for name, cls in (("stages", StageSchedule), ("ctc", CTCConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                known = {f.name for f in dataclasses.fields(cls)}
                if set(value) - known:
                    raise ValueError(f"unknown TrainConfig.{name} field(s) {sorted(set(value) - known)}; "
                                     f"allowed: {sorted(known)}")
                object.__setattr__(self, name, cls(**value))
        checks = [
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("lr", self.lr > 0, "a number > 0"),
            ("momentum", 0 <= self.momentum < 1, "a number in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "a number >= 0"),
            ("schedule", self.schedule in SCHEDULES, f"one of {SCHEDULES}"),
            ("augment", self.augment in AUGMENTS, f"one of {AUGMENTS}"),
            ("crop_padding", self.crop_padding >= 0, "an integer >= 0"),
            ("objective", self.objective in OBJECTIVES, f"one of {OBJECTIVES}"),
            ("train_size", self.train_size is None or self.train_size >= 1, "None or an integer >= 1"),
            ("milestones", all(1 <= m <= self.epochs for m in self.milestones), f"epochs in 1..{self.epochs}"),
            ("stages", (self.stages is not None) == (self.schedule == "two_stage"),
             "a StageSchedule when schedule is 'two_stage' and None otherwise"),
            ("ctc", (self.ctc is not None) == (self.objective == "ctc"),
             "a CTCConfig when objective is 'ctc' and None otherwise"),
            ("schedule", self.objective != "ctc" or self.schedule == "two_stage",
             "'two_stage' when objective is 'ctc'"),
            ("warmup_epochs", isinstance(self.warmup_epochs, int) and not isinstance(self.warmup_epochs, bool)
             and 0 <= self.warmup_epochs < (self.stages.stage_two_epoch if self.stages is not None
                                            and 1 <= self.stages.stage_two_epoch < self.epochs else self.epochs),
             "an integer >= 0 and below epochs (below stages.stage_two_epoch for 'two_stage')"),
        ]
        _raise_first("TrainConfig", checks, self)
        if self.stages is not None:
            self.stages.check(self.epochs)
        if self.ctc is not None:
            self.ctc.check()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in ("stages", "ctc"):  # optional, left out when unset: earlier runs keep their hashes
            if d[name] is None:
                del d[name]
        if d["warmup_epochs"] == 0:  # likewise: no warm-up is the earlier runs' schedule
            del d["warmup_epochs"]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; allowed: {sorted(names)}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """Read a JSON file of TrainConfig fields (missing fields take their defaults)."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    @property
    def run_prefix(self) -> str:
        return f"{self.source}-{self.objective}-s{self.seed}"
