"""Fit and cost of candidate source models for the default profile (issue 12, point 2): FIT ONLY, never transfer.

Trains each candidate with the book's engine (:func:`ctcbook.train.train`; source Fashion-MNIST classes 0-4, SGD lr 0.1
batch 128, weight decay 5e-4, cosine) in a temporary run store and prints, per candidate, the clean training accuracy
(``clean_train_acc``: eval mode, un-augmented training images) averaged over the final quarter of the epochs, its
minimum there, the last epoch's value, and the median seconds per training epoch. The selection rule of issue 12 asks
for a mean of at least 99% over the final quarter; the transfer curves are deliberately not computed here.

Run: ``python benchmarks/fit_candidates.py [--epochs 100] [--seed 0] [--only w16_flip w16_pad1] [--store DIR]
[--note "busy machine"]``. Each candidate's row is merged into ``benchmarks/results/fit_candidates.csv`` (``--csv``;
a row with the same candidate, epochs and seed replaces the old one; the file is rewritten atomically), which
chapter 1's appendix "How the default was chosen" renders. A row measured elsewhere is added the same way:
``python benchmarks/fit_candidates.py --add w24_pad1 60 0 0.9921 0.9890 0.9930 0.62 85 "busy machine"``.
Seconds per epoch depend on the machine and its load: compare them as ratios between candidates run together.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch

from ctcbook.chapters.ch1_tradeoff import CANDIDATES_CSV, FIT_THRESHOLD, final_quarter, merge_candidates
from ctcbook.config import TrainConfig
from ctcbook.runs import RunStore
from ctcbook.train import train

#: name -> (description, TrainConfig fields that differ from the base).
CANDIDATES: dict[str, tuple[str, dict]] = {
    "w8_8k_cropflip": ("ResNet-8 w8, 8,000 images, crop(2)+flip (old default)", dict(width=8, train_size=8000)),
    "w16_cropflip": ("ResNet-8 w16, 2,000 images, crop(2)+flip", dict(width=16)),
    "w16_pad1": ("ResNet-8 w16, 2,000 images, crop(1)+flip", dict(width=16, crop_padding=1)),
    "w16_flip": ("ResNet-8 w16, 2,000 images, flip only", dict(width=16, augment="flip")),
    "w16_none": ("ResNet-8 w16, 2,000 images, no augmentation", dict(width=16, augment="none")),
    "w24_cropflip": ("ResNet-8 w24, 2,000 images, crop(2)+flip", dict(width=24)),
    "w24_pad1": ("ResNet-8 w24, 2,000 images, crop(1)+flip", dict(width=24, crop_padding=1)),
}
BASE = dict(source="fashion_mnist", source_classes=(0, 1, 2, 3, 4), train_size=2000, depth=8, batch_size=128,
            lr=0.1, weight_decay=5e-4, schedule="cosine", augment="crop_flip", crop_padding=2)


def fit_summary(rows: list[dict]) -> dict:
    """Clean-fit numbers of one run's metrics rows: mean and min of ``clean_train_acc`` over the final quarter of the
    epochs (at least one epoch; :func:`ctcbook.chapters.ch1_tradeoff.final_quarter`, the chapter's own rule), the last
    epoch's value, and the median training seconds per epoch."""
    q = final_quarter(rows)
    return {"final_quarter_mean": q["mean"], "final_quarter_min": q["min"], "last": q["last"],
            "first_epoch_of_quarter": q["first_epoch"],
            "seconds_per_epoch": statistics.median(r["train_seconds"] for r in rows)}


def add_row(csv: str, values: list[str]) -> None:
    """``--add CANDIDATE EPOCHS SEED MEAN MIN LAST S_PER_EPOCH WALL [NOTE]``: merge one row measured elsewhere."""
    if len(values) not in (8, 9):
        sys.exit("--add needs CANDIDATE EPOCHS SEED MEAN MIN LAST S_PER_EPOCH WALL [NOTE] (accuracies as fractions)")
    name = values[0]
    if name not in CANDIDATES:
        sys.exit(f"--add: candidate must be one of {sorted(CANDIDATES)}, got {name!r} (add it to CANDIDATES first)")
    mean, low, last = (float(v) for v in values[3:6])
    for label, v in (("MEAN", mean), ("MIN", low), ("LAST", last)):
        if not 0 <= v <= 1:
            sys.exit(f"--add: {label} must be a fraction in [0, 1], got {v}")
    merge_candidates(csv, [{"candidate": name, "description": CANDIDATES[name][0], "epochs": int(values[1]),
                            "seed": int(values[2]), "final_quarter_mean": mean, "final_quarter_min": low,
                            "last": last, "seconds_per_epoch": float(values[6]), "wall_seconds": float(values[7]),
                            "note": values[8] if len(values) == 9 else ""}])
    print(f"merged {name} ({values[1]} epochs, seed {values[2]}) into {csv}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=sorted(CANDIDATES), default=["w16_cropflip", "w16_pad1",
                                                                                  "w16_flip", "w24_pad1"])
    parser.add_argument("--store", default=None, help="run store (default: a temporary folder, deleted at the end)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--csv", default=str(CANDIDATES_CSV), help="CSV the rows are merged into")
    parser.add_argument("--note", default="", help="a note stored with each row (e.g. 'busy machine')")
    parser.add_argument("--add", nargs="+", metavar="VALUE", help="merge one row measured elsewhere and exit: "
                        "CANDIDATE EPOCHS SEED MEAN MIN LAST S_PER_EPOCH WALL [NOTE]")
    args = parser.parse_args()
    if args.add:
        add_row(args.csv, args.add)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="fit_candidates_") as tmp:
        store = RunStore(args.store or tmp)
        results = []
        for name in args.only:
            desc, fields = CANDIDATES[name]
            config = TrainConfig(**{**BASE, **fields, "epochs": args.epochs, "seed": args.seed})
            t0 = time.perf_counter()
            run = train(config, store=store, device="cpu", progress=False)
            s = fit_summary(run.metrics())
            wall = time.perf_counter() - t0
            results.append((name, desc, s))
            merge_candidates(args.csv, [{"candidate": name, "description": desc, "epochs": args.epochs,
                                         "seed": args.seed, "final_quarter_mean": s["final_quarter_mean"],
                                         "final_quarter_min": s["final_quarter_min"], "last": s["last"],
                                         "seconds_per_epoch": s["seconds_per_epoch"], "wall_seconds": round(wall, 1),
                                         "note": args.note}])
            print(f"{name:14s} {desc:55s} clean train acc over epochs {s['first_epoch_of_quarter']}-{args.epochs}: "
                  f"mean {100 * s['final_quarter_mean']:.2f}% min {100 * s['final_quarter_min']:.2f}% "
                  f"last {100 * s['last']:.2f}%; {s['seconds_per_epoch']:.2f} s/epoch "
                  f"({wall:.0f} s wall; merged into {args.csv})", flush=True)
    print(f"\n| candidate | clean train acc, final quarter mean (min) | last epoch | s/epoch | meets 99% |")
    print("|---|---|---|---|---|")
    for name, desc, s in results:
        print(f"| {desc} | {100 * s['final_quarter_mean']:.2f}% ({100 * s['final_quarter_min']:.2f}%) | "
              f"{100 * s['last']:.2f}% | {s['seconds_per_epoch']:.2f} | "
              f"{'yes' if s['final_quarter_mean'] >= FIT_THRESHOLD else 'no'} |")


if __name__ == "__main__":
    main()
