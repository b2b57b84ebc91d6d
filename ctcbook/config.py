"""Run configs and named profiles.

:class:`TrainConfig` holds everything that changes a training run's numbers; its hash names the run's folder
(see :mod:`ctcbook.runs`). Where data lives (``root``, ``$CTCBOOK_DATA``) and which device runs it are not part of
it: the same config gives the same run on a laptop and on a GPU box (up to floating-point differences).

:data:`PROFILES` gives, for each chapter notebook, the parameter values of each named profile. A notebook's
parameters cell holds the ``default`` profile's values; the runner injects another profile's values.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEDULES = ("cosine", "step")
AUGMENTS = ("crop_flip", "crop", "none")
OBJECTIVES = ("ce",)


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
    ``augment``: random crop with ``crop_padding`` pixels of zero padding and/or horizontal flip, on the device.
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

    def __post_init__(self):
        for name in ("source_classes", "milestones"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
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
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{name} must be {allowed}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
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


# --- profiles ------------------------------------------------------------------------------------------------
# Per chapter, the parameter values of each profile. The default profile's values are the notebook's own
# parameters cell (kept equal by a test); the others override some of them.
_TRADEOFF_DEFAULT: dict[str, Any] = {
    "source": "fashion_mnist",
    "source_classes": [0, 1, 2, 3, 4],
    "train_size": 8000,
    "arch": "cifar_resnet",
    "depth": 8,
    "width": 8,
    "stem_stride": 2,
    "epochs": 30,
    "batch_size": 128,
    "lr": 0.1,
    "weight_decay": 5e-4,
    "seeds": [0, 1, 2],
    "targets": ["fmnist_5-9", "mnist5k", "digits"],
    "target_train_size": None,
    "target_test_size": None,
    "probe_every": 3,
    "paper_protocol": "paper",
    "paper_protocol_seed": 0,
}

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "01_tradeoff": {"train_size": 400, "epochs": 2, "seeds": [0, 1], "target_train_size": 300,
                        "target_test_size": 300, "probe_every": 1, "width": 4},
    },
    "default": {
        "01_tradeoff": {},
    },
    "cifar100": {
        # The paper's setting (public code README): CIFAR-100 source, SGD lr 0.05, momentum 0.9, wd 5e-4, batch 64,
        # 200 epochs, a checkpoint probed every 2 epochs. Its ResNeXt32-16x4d is replaced by a wide CIFAR ResNet-20.
        "01_tradeoff": {"source": "cifar100", "source_classes": None, "train_size": None, "depth": 20, "width": 64,
                        "stem_stride": 1, "epochs": 200, "batch_size": 64, "lr": 0.05, "seeds": [0],
                        "targets": ["cifar10", "cinic10"], "probe_every": 2, "paper_protocol": "paper_bn"},
    },
}

PARAMETER_DEFAULTS: dict[str, dict[str, Any]] = {"01_tradeoff": _TRADEOFF_DEFAULT}


def profile_parameters(chapter: str, profile: str) -> dict[str, Any]:
    """The notebook parameters of ``chapter`` under ``profile`` (only those that differ from the default)."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    return dict(PROFILES[profile].get(chapter, {}))
