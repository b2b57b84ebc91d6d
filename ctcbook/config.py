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

SCHEDULES = ("cosine", "step", "two_stage")
AUGMENTS = ("crop_flip", "crop", "none")
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
    ``augment``: random crop with ``crop_padding`` pixels of zero padding and/or horizontal flip, on the device.
    ``objective`` "ce" (cross-entropy) or "ctc" (cross-entropy plus the CTC losses of ``ctc``, a :class:`CTCConfig`);
    ``schedule`` "two_stage" takes its stages from ``stages`` (a :class:`StageSchedule`; "ctc" requires it).
    ``stages`` and ``ctc`` are left out of :meth:`to_dict` when None, so adding them changed no earlier run's hash.
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

# Chapter 2 reads chapter 1's runs (same run parameters) and adds the estimators' settings.
_INFORMATION_DEFAULT: dict[str, Any] = {
    **{k: v for k, v in _TRADEOFF_DEFAULT.items() if k not in ("paper_protocol", "paper_protocol_seed")},
    "info_every": 3,
    "renyi_n": 1000,
    "mine_seeds": [0],
    "mine_every": 6,
    "mine_n": 2000,
    "mine_preset": "cpu",
}

# Chapter 3 trains CTC beside chapter 1's runs (same run parameters: its baseline runs are reused).
_CTC_DEFAULT: dict[str, Any] = {
    **{k: v for k, v in _TRADEOFF_DEFAULT.items() if k not in ("paper_protocol", "paper_protocol_seed")},
    "stage_two_epoch": 20,
    "weight_decay_coef": 2.0,
    "lr_restart": 0.1,
    "alpha": 0.5,
    "beta": 1.0,
    "instance_t": 0.1,
    "instance_m": 0.9,
    "nce_t": 0.1,
    "nce_m": 0.9,
    "embed_dim": 32,
    "nce_k": 4096,
    "refill": True,
    "train_instance_head": False,
    "sweep_scales": [0.0, 0.5, 1.0],
    "sweep_seed": 0,
    "sweep_probe_every": 10,
    "info_every": 6,
    "renyi_n": 1000,
}

# Chapter 4: one image backbone on all ten Fashion-MNIST classes, then fusion heads on its frozen features plus
# simulated location/date metadata (see ctcbook.fusion_training).
_DYNAMIC_MLP_DEFAULT: dict[str, Any] = {
    "source": "fashion_mnist",
    "train_size": 10000,
    "depth": 8,
    "width": 16,
    "stem_stride": 2,
    "epochs": 10,
    "batch_size": 128,
    "lr": 0.1,
    "weight_decay": 5e-4,
    "backbone_seed": 0,
    "methods": ["image_only", "metadata_only", "concat", "add", "multiply", "geo_prior", "dynamic_mlp_a",
                "dynamic_mlp_b", "dynamic_mlp_c"],
    "seeds": [0, 1, 2],
    "head_epochs": 10,
    "head_batch_size": 512,
    "head_lr": 3e-3,
    "head_weight_decay": 1e-4,
    "label_smoothing": 0.1,
    "meta_width": 64,
    "embed_dim": 64,
    "reduced_dim": 64,
    "hidden_dim": 16,
    "num_blocks": 2,
    "metadata_seed": 0,
    "location_spread": 25.0,
    "date_spread": 45.0,
    "background": 0.3,
    "missing_fraction": 0.05,
    "confusable": [0, 2, 4, 6],
    "tsne_points": 800,
    "explorer_days": [1, 122, 244],
    "inat_root": "tests/fixtures/inat21_mini",
}

# Chapter 5 reads chapters 1 and 3's runs: the same run and CTC parameters, without the sweep and estimator ones.
_CHAPTER3_ONLY = ("sweep_scales", "sweep_seed", "sweep_probe_every", "info_every", "renyi_n")
_TRANSFER_DEFAULT: dict[str, Any] = {k: v for k, v in _CTC_DEFAULT.items() if k not in _CHAPTER3_ONLY}

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "04_dynamic_mlp": {"train_size": 600, "epochs": 1, "width": 4, "seeds": [0], "head_epochs": 2,
                           "meta_width": 16, "embed_dim": 16, "reduced_dim": 16, "hidden_dim": 4,
                           "tsne_points": 120, "explorer_days": [1, 183]},
        "01_tradeoff": {"train_size": 400, "epochs": 2, "seeds": [0, 1], "target_train_size": 300,
                        "target_test_size": 300, "probe_every": 1, "width": 4},
        "02_information": {"train_size": 400, "epochs": 2, "seeds": [0, 1], "target_train_size": 300,
                           "target_test_size": 300, "probe_every": 1, "width": 4, "info_every": 1, "renyi_n": 100,
                           "mine_every": 1, "mine_n": 150, "mine_preset": "smoke"},
        "03_ctc": {"train_size": 400, "epochs": 4, "stage_two_epoch": 2, "seeds": [0, 1], "width": 4,
                   "target_train_size": 300, "target_test_size": 300, "probe_every": 2, "embed_dim": 16,
                   "nce_k": 64, "sweep_probe_every": 2, "info_every": 2, "renyi_n": 100},
    },
    "default": {
        "01_tradeoff": {},
        "04_dynamic_mlp": {},
        "03_ctc": {},
    },
    "cifar100": {
        # The paper's setting (public code README): CIFAR-100 source, SGD lr 0.05, momentum 0.9, wd 5e-4, batch 64,
        # 200 epochs, a checkpoint probed every 2 epochs. Its ResNeXt32-16x4d is replaced by a wide CIFAR ResNet-20.
        "01_tradeoff": {"source": "cifar100", "source_classes": None, "train_size": None, "depth": 20, "width": 64,
                        "stem_stride": 1, "epochs": 200, "batch_size": 64, "lr": 0.05, "seeds": [0],
                        "targets": ["cifar10", "cinic10"], "probe_every": 2, "paper_protocol": "paper_bn"},
        # The paper's MINE settings (mine.py) on the penultimate layer, every 10th epoch.
        "02_information": {"source": "cifar100", "source_classes": None, "train_size": None, "depth": 20,
                           "width": 64, "stem_stride": 1, "epochs": 200, "batch_size": 64, "lr": 0.05, "seeds": [0],
                           "targets": ["cifar10", "cinic10"], "probe_every": 2, "info_every": 10, "renyi_n": 2000,
                           "mine_every": 10, "mine_n": 5000, "mine_preset": "paper"},
        # CTC as the README's "emphasise transferability" command: 300 epochs, stage 2 from epoch 200, 128-d heads,
        # 16,384 negatives; the baseline is vanilla training for the same 300 epochs.
        "03_ctc": {"source": "cifar100", "source_classes": None, "train_size": None, "depth": 20, "width": 64,
                   "stem_stride": 1, "epochs": 300, "batch_size": 64, "lr": 0.05, "seeds": [0],
                   "targets": ["cifar10", "cinic10"], "probe_every": 10, "stage_two_epoch": 200, "embed_dim": 128,
                   "nce_k": 16384, "sweep_seed": 0, "sweep_probe_every": 50, "info_every": 20, "renyi_n": 2000},
    },
}

PARAMETER_DEFAULTS: dict[str, dict[str, Any]] = {"04_dynamic_mlp": _DYNAMIC_MLP_DEFAULT,
                                                 "01_tradeoff": _TRADEOFF_DEFAULT,
                                                 "02_information": _INFORMATION_DEFAULT,
                                                 "03_ctc": _CTC_DEFAULT,
                                                 "05_transfer": _TRANSFER_DEFAULT}
# Chapter 5 runs under each profile with chapter 3's run parameters, so it reads chapter 3's finished runs.
for _profile in PROFILES.values():
    if "03_ctc" in _profile:
        _profile["05_transfer"] = {k: v for k, v in _profile["03_ctc"].items() if k not in _CHAPTER3_ONLY}


def profile_parameters(chapter: str, profile: str) -> dict[str, Any]:
    """The notebook parameters of ``chapter`` under ``profile`` (only those that differ from the default)."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    return dict(PROFILES[profile].get(chapter, {}))
