"""The chapters' parameters: defaults, named profiles, and the typed configs built from resolved values.

:data:`PARAMETER_DEFAULTS` holds every chapter parameter's default (the ``default`` profile), :data:`PROFILES` what
each named profile changes; a notebook's parameters cell sets only ``profile`` (see :mod:`ctcbook.book.parameters`).
"""
from __future__ import annotations

from typing import Any

_TRADEOFF_DEFAULT: dict[str, Any] = {
    "source": "fashion_mnist",
    "source_classes": [0, 1, 2, 3, 4],
    # chosen by chapter 1's appendix rule (fit, then cost, then closeness to the paper); never by the transfer curves
    "train_size": 2000,
    "arch": "cifar_resnet",
    "depth": 8,
    "width": 16,
    "stem_stride": 2,
    "epochs": 80,
    "batch_size": 128,
    "lr": 0.1,
    "weight_decay": 5e-4,
    # "cosine": per step to 0 after warmup_epochs of linear warm-up; "paper_cosine": the public code's, per epoch,
    # warm-up then cosine to lr_floor x lr (CTC's stages follow it: "paper_two_stage"); the appendix rule chose it
    "schedule": "paper_cosine",
    "warmup_epochs": 5,
    "lr_floor": 0.1,
    # random crop with crop_padding px of zero padding and/or horizontal flip: "crop_flip", "crop", "flip", "none"
    "augment": "crop_flip",
    "crop_padding": 1,
    # source test and clean training accuracy at epoch 1, every test_every epochs and the last: measured every epoch
    # they cost more than the training itself (7,000 images against 2,000)
    "test_every": 5,
    # ten paired seeds for the headline comparisons (chapter 1's baseline, CTC, the schedule-only control)
    "seeds": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    "targets": ["fmnist_5-9", "mnist5k", "digits"],
    "target_train_size": None,
    "target_test_size": None,
    # epochs 1, 10, ..., 80: the one grid every chapter's drop is measured on, so a run's drop has one value in the book
    "probe_every": 10,
    "paper_protocol": "paper",
    "paper_protocol_seed": 0,
    "nproc": 1,
    # processes probing runs at once (ch1_tradeoff.curves); 1: in the notebook's process
    "probe_workers": 2,
    # ctcbook.dispatch: "serial"; "local" (GPU profiles: a worker per visible GPU); "slurm" (a job per run)
    "backend": "serial",
    "workers": None,
}

# Chapters 2 and 3 read chapter 1's runs: the same run parameters, without chapter 1's paper protocol and nproc.
_RUN_DEFAULT = {k: v for k, v in _TRADEOFF_DEFAULT.items()
                if k not in ("paper_protocol", "paper_protocol_seed", "nproc")}

# Chapter 2 adds the estimators' settings.
_INFORMATION_DEFAULT: dict[str, Any] = {
    **_RUN_DEFAULT,
    # estimators and geometry at chapter 1's probed epochs 1, 10, ..., 80: the book's 60-minute budget binds
    "info_every": 10,
    "renyi_n": 1000,
    "mine_seeds": [0, 1, 2, 3, 4],
    "mine_every": 20,
    "mine_restarts": 3,
    "mine_n": 2000,
    "mine_preset": "cpu",
    # ~6 s a MINE fit x 75 fits per split: only the target the mechanism is tested on (None: every split)
    "mine_splits": ["fmnist_5-9"],
}

# Chapter 3 trains CTC beside chapter 1's runs (its baseline runs are reused).
_CTC_DEFAULT: dict[str, Any] = {
    **_RUN_DEFAULT,
    # the README's "emphasise transferability" setting; stage 2 after 2/3 of the epochs, as 200 of the paper's 300
    "stage_two_epoch": 53,
    "weight_decay_coef": 2.0,
    "lr_restart": 0.1,
    "alpha": 0.5,
    "beta": 1.0,
    "instance_t": 0.1,
    "instance_m": 0.9,
    "nce_t": 0.1,
    "nce_m": 0.9,
    "embed_dim": 32,
    # negatives per anchor scaled with the training set as the paper's K: 16,384 x 2,000 / 50,000 images = 655
    "nce_k": 655,
    "refill": True,
    "train_instance_head": False,
    # the README's "emphasise discriminability" setting (alpha, beta, tau1, tau2), on discrim_seeds
    "discrim_alpha": 0.1,
    "discrim_beta": 1.0,
    "discrim_instance_t": 0.5,
    "discrim_nce_t": 0.4,
    "discrim_seeds": [0, 1, 2],
    # stage ablations (beta 0; alpha 0) on ablation_seeds; the schedule-only control (both 0) on every seed
    "ablation_seeds": [0, 1, 2],
    # probed epochs of the secondary runs (discriminability setting, ablations): 1, every control_probe_every, last
    "control_probe_every": 80,
    # the paper's probe protocol on every seed of baseline and CTC (None: not run; the GPU profiles: "paper_bn")
    "paper_protocol": None,
    "info_every": 10,
    "renyi_n": 1000,
}

# Chapter 4 (ctcbook.chapters.ch4_fusion): fusion networks on 2,000 Fashion-MNIST images with simulated
# location/date per interaction level and seed; the image-only network is also every fusion head's frozen backbone.
# Sizes by cost (~8 of the book's 60 minutes), the recipe by the public code (SGD 0.9, wd 1e-4, one warm-up epoch then
# cosine, smoothing 0.1 as the code computes it, mixup 0.4). No flips or crops: a mirrored or shifted stripe pattern
# is another season's pattern.
_DYNAMIC_MLP_DEFAULT: dict[str, Any] = {
    "source": "fashion_mnist",
    "train_size": 2000,
    "test_size": None,
    "heldout": 2000,
    "depth": 8,
    "width": 16,
    "stem_stride": 2,
    "epochs": 15,
    "warmup_epochs": 1,
    "batch_size": 128,
    "lr": 0.04,
    "weight_decay": 1e-4,
    "mixup_alpha": 0.4,
    "augment": "none",
    "interactions": [0.0, 0.25, 0.5, 1.0],
    "seeds": [0, 1, 2],
    "e2e_methods": ["image_only", "concat", "dynamic_mlp_c", "mlp_concat"],
    "methods": ["image_only", "image_mlp", "metadata_only", "concat", "add", "multiply", "geo_prior",
                "dynamic_mlp_a", "dynamic_mlp_b", "dynamic_mlp_c", "mlp_concat"],
    "head_epochs": 10,
    "head_batch_size": 512,
    "head_lr": 3e-3,
    "head_weight_decay": 1e-4,
    "label_smoothing": 0.1,
    "head_smoothing": "public",
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
    "backend": "serial",
    "workers": None,
}

# Chapter 5 reads chapters 1 and 3's runs: the same run and CTC parameters, without chapter 3's controls and estimators.
_CHAPTER3_ONLY = ("discrim_alpha", "discrim_beta", "discrim_instance_t", "discrim_nce_t", "discrim_seeds",
                  "ablation_seeds", "control_probe_every", "info_every", "renyi_n")
_TRANSFER_DEFAULT: dict[str, Any] = {k: v for k, v in _CTC_DEFAULT.items() if k not in _CHAPTER3_ONLY}

# Each profile's run parameters, shared by chapters 1, 2, 3 and 5 (see the profiles' comments below).
_SMOKE_RUN = {"train_size": 400, "epochs": 2, "seeds": [0, 1], "target_train_size": 300, "target_test_size": 300,
              "probe_every": 1, "width": 4, "warmup_epochs": 1, "test_every": 1, "probe_workers": 1}
_COSINE = {"schedule": "cosine", "warmup_epochs": 0, "lr_floor": 0.0, "test_every": 1}
_SMALL_RUN = {"train_size": 8000, "width": 8, "epochs": 30, "augment": "crop_flip", "seeds": [0, 1, 2],
              "probe_every": 3, **_COSINE}
_CIFAR100_RUN = {"source": "cifar100", "source_classes": None, "train_size": None, "depth": 20, "width": 64,
                 "stem_stride": 1, "epochs": 200, "batch_size": 64, "lr": 0.05, "augment": "crop_flip",
                 "crop_padding": 4, "seeds": [0], "targets": ["cifar10", "cinic10"], "probe_every": 2, "test_every": 1,
                 "probe_workers": 1,
                 "backend": "local"}
_IMAGENET_RUN = {"source": "imagenet", "source_classes": None, "train_size": None, "arch": "resnet50", **_COSINE,
                 "probe_workers": 1,
                 "augment": "crop_flip", "epochs": 90, "batch_size": 256, "lr": 0.1, "weight_decay": 1e-4,
                 "seeds": [0], "targets": ["cifar10", "cifar100", "cinic10"], "probe_every": 10}
# Chapter 3 on the GPU profiles: 128-d heads, 16,384 negatives (the paper's), one seed per control, the paper's probe.
_CTC_GPU = {"embed_dim": 128, "nce_k": 16384, "discrim_seeds": [0], "ablation_seeds": [0],
            "paper_protocol": "paper_bn", "renyi_n": 2000}

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "04_dynamic_mlp": {"train_size": 300, "test_size": 300, "heldout": 200, "epochs": 2, "width": 4,
                           "seeds": [0, 1], "interactions": [0.0, 1.0], "head_epochs": 2,
                           "e2e_methods": ["image_only", "concat", "dynamic_mlp_c"],
                           "meta_width": 16, "embed_dim": 16, "reduced_dim": 16, "hidden_dim": 4,
                           "tsne_points": 120, "explorer_days": [1, 183]},
        "01_tradeoff": _SMOKE_RUN,
        "02_information": {**_SMOKE_RUN, "info_every": 1, "renyi_n": 100, "mine_seeds": [0, 1], "mine_every": 1,
                           "mine_restarts": 2, "mine_n": 150, "mine_preset": "smoke"},
        "03_ctc": {**_SMOKE_RUN, "epochs": 4, "stage_two_epoch": 2, "probe_every": 2, "embed_dim": 16, "nce_k": 64,
                   "discrim_seeds": [0], "ablation_seeds": [0], "control_probe_every": 2, "info_every": 2,
                   "renyi_n": 100},
    },
    "default": {"01_tradeoff": {}, "04_dynamic_mlp": {}, "03_ctc": {}},
    # Fits only ~94% of its training images, so it never reaches the late phase the paper's claim is about.
    "small": {
        "01_tradeoff": _SMALL_RUN,
        "02_information": {**_SMALL_RUN, "info_every": 3, "mine_seeds": [0], "mine_every": 6, "mine_restarts": 1},
        "03_ctc": {**_SMALL_RUN, "stage_two_epoch": 20, "nce_k": 4096, "discrim_seeds": [0], "ablation_seeds": [0],
                   "control_probe_every": 10, "info_every": 6},
    },
    "cifar100": {
        # The paper's setting (public code README), with a wide CIFAR ResNet-20 for its ResNeXt32-16x4d.
        "01_tradeoff": {**_CIFAR100_RUN, "paper_protocol": "paper_bn"},
        # The paper's MINE settings (mine.py), batches from the whole test split as mine.py does (mine_n None).
        "02_information": {**_CIFAR100_RUN, "info_every": 10, "renyi_n": 2000, "mine_seeds": [0], "mine_every": 10,
                           "mine_restarts": 1, "mine_n": None, "mine_preset": "paper", "mine_splits": None},
        # CTC as the README's "emphasise transferability" command; the baseline trains the same 300 epochs.
        "03_ctc": {**_CIFAR100_RUN, **_CTC_GPU, "epochs": 300, "probe_every": 10, "stage_two_epoch": 200,
                   "control_probe_every": 50, "info_every": 20},
    },
    "imagenet": {
        # ImageNet-1k streamed from $CTCBOOK_DATA/imagenet (ctcbook.data.stream), ResNet-50 with torchvision's
        # references/classification recipe (Goyal et al. 2017): lr = 0.1 x B / 256, no warm-up at batch 256, cosine
        # per step to 0 (torchvision's classic recipe steps at 30/60). batch_size is the global batch under torchrun.
        "01_tradeoff": {**_IMAGENET_RUN, "paper_protocol": "paper_bn"},
        # The paper's MINE settings (mine.py); X is a stratified 10,000 validation images (1.5 GB; all: 7.5 GB).
        "02_information": {**_IMAGENET_RUN, "info_every": 30, "renyi_n": 2000, "mine_seeds": [0], "mine_every": 30,
                           "mine_restarts": 1, "mine_n": 10000, "mine_preset": "paper",
                           "mine_splits": None},
        # Stage 2 from epoch 60 (2/3, as 200 of the paper's 300); the switch refills the memories from training
        # images in evaluation transforms (ctcbook.train). Memories: 2 GB on each GPU and in each resume state.
        "03_ctc": {**_IMAGENET_RUN, **_CTC_GPU, "stage_two_epoch": 60, "control_probe_every": 30, "info_every": 30},
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


# --- end-to-end Dynamic MLP on real data: FusionTrainConfig fields per profile -----------------------------------
# Read through e2e_config() (a user's script or a GPU box); the book's chapter 4 runs the simulated default above.
E2E_PROFILES: dict[str, dict[str, Any]] = {
    # The public code's recipe at full size (ylingfeng/DynamicMLP README and train.py) on iNat21 in its official
    # layout under $CTCBOOK_DATA/inat21; `weights` is a local file, never downloaded. One difference: resize to 224
    # then pad-crop and flip, where the code uses RandomResizedCrop. GPUs: ctcbook.launch.train(config, nproc=N).
    "inat21": {"dataset": "inat21", "inat_root": None, "inat_train_split": "train_mini", "inat_test_split": "val",
               "image_size": 224, "arch": "resnet50", "weights": None, "method": "dynamic_mlp_c",
               "head": {"meta_width": 256, "embed_dim": 256, "reduced_dim": 256, "hidden_dim": 64, "num_blocks": 2},
               "epochs": 90, "warmup_epochs": 2, "batch_size": 512, "lr": 0.04,
               "momentum": 0.9, "weight_decay": 1e-4, "label_smoothing": 0.1, "mixup_alpha": 0.4,
               "augment": "crop_flip", "crop_padding": 16, "train_size": None, "seed": 0},
}


def e2e_config(profile: str, **overrides: Any):
    """The FusionTrainConfig of an end-to-end profile with ``overrides``; inat_root None: $CTCBOOK_DATA/inat21
    (else ./data/inat21)."""
    import os
    from pathlib import Path

    from ..config import FusionTrainConfig

    if profile not in E2E_PROFILES:
        raise ValueError(f"profile must be one of {sorted(E2E_PROFILES)} for end-to-end training, got {profile!r}")
    values = {**E2E_PROFILES[profile], **overrides}
    if values.get("dataset") == "inat21" and values.get("inat_root") is None:
        base = Path(os.environ["CTCBOOK_DATA"]) if os.environ.get("CTCBOOK_DATA") else Path("data").resolve()
        values["inat_root"] = str(base / "inat21")
    return FusionTrainConfig(**values)


# --- typed configs from a chapter's resolved parameters (ctcbook.book.parameters.resolve) -------------------------
_RUN_FIELDS = ("source", "source_classes", "train_size", "arch", "depth", "width", "stem_stride", "epochs",
               "batch_size", "lr", "weight_decay", "schedule", "warmup_epochs", "lr_floor", "augment", "crop_padding",
               "test_every")


def train_config(p: dict[str, Any]):
    """The cross-entropy source run of chapters 1, 2, 3 and 5 (seed 0: ``.replace(seed=s)`` per seed)."""
    from ..config import TrainConfig

    return TrainConfig(**{k: p[k] for k in _RUN_FIELDS})


def ctc_config(p: dict[str, Any]):
    """The main CTC run of chapters 3 and 5: :func:`train_config` with CTC's schedule and losses."""
    from ..chapters.ch3_ctc import ctc_config as to_ctc

    names = ("stage_two_epoch", "weight_decay_coef", "lr_restart", "alpha", "beta", "instance_t", "instance_m",
             "train_instance_head", "nce_k", "nce_t", "nce_m", "refill")
    return to_ctc(train_config(p), instance_dim=p["embed_dim"], nce_dim=p["embed_dim"], **{k: p[k] for k in names})


def fusion_config(p: dict[str, Any]):
    """Chapter 4's end-to-end network at interaction 0 (``.replace`` the metadata's interaction, method, seed)."""
    from ..config import FusionTrainConfig

    metadata = {"seed": p["metadata_seed"], "location_spread": p["location_spread"], "date_spread": p["date_spread"],
                "background": p["background"], "missing_fraction": p["missing_fraction"], "interaction": 0.0,
                "groups": [list(p["confusable"])] if p["confusable"] else None, "draw_seed": 0}
    head = {k: p[k] for k in ("meta_width", "embed_dim", "reduced_dim", "hidden_dim", "num_blocks")}
    names = ("source", "train_size", "test_size", "depth", "width", "stem_stride", "epochs", "warmup_epochs",
             "batch_size", "lr", "weight_decay", "label_smoothing", "mixup_alpha", "augment")
    return FusionTrainConfig(dataset="simulated", metadata=metadata, head=head, test_every=p["epochs"],
                             **{k: p[k] for k in names})
