"""Fit of candidate source models for the default profile, and the recorded appendix that chose among them.

Trains each candidate with the book's engine (:func:`ctcbook.train.train`; source Fashion-MNIST classes 0-4, SGD lr 0.1
batch 128, weight decay 5e-4, cosine) in a temporary run store and prints, per candidate, the clean training accuracy
(``clean_train_acc``: eval mode, un-augmented training images) averaged over the final quarter of the epochs, its
minimum there, the last epoch's value, and the median seconds per training epoch. FIT ONLY: the transfer curves are
deliberately not computed here.

Run: ``python benchmarks/fit_candidates.py [--epochs 100] [--seed 0] [--only w16_flip w16_pad1] [--store DIR]
[--note "busy machine"]``. Each candidate's row is merged into ``benchmarks/results/fit_candidates.csv`` (``--csv``;
a row with the same candidate, epochs and seed replaces the old one; the file is rewritten atomically). A row
measured elsewhere is added the same way:
``python benchmarks/fit_candidates.py --add w24_pad1 60 0 0.9921 0.9890 0.9930 0.62 85 "busy machine"``.
Seconds per epoch depend on the machine and its load: compare them as ratios between candidates run together.

``--report`` writes ``benchmarks/results/default_choice.md``, the appendix chapter 1 shows as recorded: the candidates
table and rules (a) fit, (b) budget (from the complete build ``benchmarks/book_costs.py`` measured) and (c) closeness
to the paper applied to them.
"""
from __future__ import annotations

import argparse
import datetime
import io
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd
import torch

from book_costs import RESULTS, SOURCE_MODEL_KEYS, SOURCE_SIZED, BookCosts, read_book_costs
from ctcbook.chapters.ch1_tradeoff import FIT_THRESHOLD, final_quarter
from ctcbook.config import TrainConfig
from ctcbook.runs import RunStore, atomic_write_bytes
from ctcbook.train import train

CANDIDATES_CSV = RESULTS / "fit_candidates.csv"
REPORT_MD = RESULTS / "default_choice.md"
CANDIDATE_COLUMNS = ("candidate", "description", "epochs", "seed", "final_quarter_mean", "final_quarter_min", "last",
                     "seconds_per_epoch", "wall_seconds", "meets_fit", "date", "note")
#: name -> (description, TrainConfig fields that differ from the base).
CANDIDATES: dict[str, tuple[str, dict]] = {
    "w8_8k_cropflip": ("ResNet-8 w8, 8,000 images, crop(2)+flip (old default)", dict(width=8, train_size=8000)),
    "w16_cropflip": ("ResNet-8 w16, 2,000 images, crop(2)+flip", dict(width=16)),
    "w16_pad1": ("ResNet-8 w16, 2,000 images, crop(1)+flip", dict(width=16, crop_padding=1)),
    "w16_flip": ("ResNet-8 w16, 2,000 images, flip only", dict(width=16, augment="flip")),
    "w16_none": ("ResNet-8 w16, 2,000 images, no augmentation", dict(width=16, augment="none")),
    "w24_cropflip": ("ResNet-8 w24, 2,000 images, crop(2)+flip", dict(width=24)),
    "w24_pad1": ("ResNet-8 w24, 2,000 images, crop(1)+flip", dict(width=24, crop_padding=1)),
    "w16_pad1_paper": ("ResNet-8 w16, 2,000 images, crop(1)+flip, the paper's schedule (5 warm-up epochs, cosine per "
                       "epoch to 0.1 x lr)", dict(width=16, crop_padding=1, schedule="paper_cosine", warmup_epochs=5,
                                                  lr_floor=0.1)),
}
BASE = dict(source="fashion_mnist", source_classes=(0, 1, 2, 3, 4), train_size=2000, depth=8, batch_size=128,
            lr=0.1, weight_decay=5e-4, schedule="cosine", warmup_epochs=0, lr_floor=0.0, augment="crop_flip",
            crop_padding=2)
BOOK_LIMIT = 60 * 60


def read_candidates(path: str | Path = CANDIDATES_CSV) -> pd.DataFrame:
    """The measured candidates (columns :data:`CANDIDATE_COLUMNS`; accuracies are fractions)."""
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    missing = [c for c in CANDIDATE_COLUMNS if c not in df]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; expected {list(CANDIDATE_COLUMNS)}")
    return df[list(CANDIDATE_COLUMNS)]


def merge_candidates(path: str | Path, rows: Iterable[Mapping]) -> pd.DataFrame:
    """Add ``rows`` to the CSV at ``path`` (``meets_fit``, ``date`` and ``note`` filled in when absent): a row with the
    same (candidate, epochs, seed) replaces the old one. The file is replaced atomically; returns the merged table."""
    new = []
    for r in rows:
        r = {"meets_fit": r["final_quarter_mean"] >= FIT_THRESHOLD, "date": datetime.date.today().isoformat(),
             "note": "", **r}
        unknown, missing = set(r) - set(CANDIDATE_COLUMNS), set(CANDIDATE_COLUMNS) - set(r)
        if unknown or missing:
            raise ValueError(f"a candidate row needs exactly the columns {list(CANDIDATE_COLUMNS)}; unknown: "
                             f"{sorted(unknown)}, missing: {sorted(missing)}")
        new.append(r)
    old = read_candidates(path) if Path(path).exists() else pd.DataFrame(columns=list(CANDIDATE_COLUMNS))
    merged = pd.concat([old, pd.DataFrame(new, columns=list(CANDIDATE_COLUMNS))], ignore_index=True)
    merged = merged.drop_duplicates(subset=["candidate", "epochs", "seed"], keep="last").reset_index(drop=True)
    buf = io.StringIO()
    merged.to_csv(buf, index=False)
    atomic_write_bytes(Path(path), buf.getvalue().encode())
    return merged


def closeness(description: str) -> tuple[int, int, int]:
    """How close a recipe is to the paper's, augmentation first: random crop (4 px padding) + flip; crop(p)+flip ranks
    (2, p) (more padding is closer), flip only (1, 0), no augmentation (0, 0); then the paper's schedule (1) or not."""
    schedule = int("the paper's schedule" in description)
    m = re.search(r"crop\((\d+)\)\s*\+\s*flip", description)
    if m:
        return 2, int(m.group(1)), schedule
    return (1, 0, schedule) if "flip" in description else (0, 0, schedule)


def rule_pick(candidates: Mapping[str, tuple[str, float, float]]) -> str | None:
    """Rule (c) among the candidates meeting the fit (a) and the budget (b): the augmentation closest to the paper's,
    then the cheaper book. ``candidates``: name -> (description, final-quarter mean, book seconds)."""
    both = [n for n, (_, fit, book) in candidates.items() if fit >= FIT_THRESHOLD and book <= BOOK_LIMIT]
    return max(both, key=lambda n: (closeness(candidates[n][0]), -candidates[n][2])) if both else None


def source_model(name: str, epochs: int) -> dict:
    """The :data:`~book_costs.SOURCE_MODEL_KEYS` of candidate ``name`` trained for ``epochs``."""
    config = {**BASE, **CANDIDATES[name][1], "epochs": int(epochs)}
    return {k: config[k] for k in SOURCE_MODEL_KEYS}


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) or "none"


def report(candidates: pd.DataFrame, costs: BookCosts) -> str:
    """The appendix "How the default was chosen" in Markdown: the candidates table and rules (a), (b), (c) applied."""
    rows, picked, measured = [], {}, []
    for r in candidates.itertuples(index=False):
        name, model = f"{r.candidate}/{r.epochs}", source_model(r.candidate, r.epochs)
        if costs.measured_model(model):
            measured.append(name)
            book, how = costs.total, "measured"
        else:
            book, how = costs.book_seconds(model["epochs"], model["width"]), "estimated"
        picked[name] = (r.description, float(r.final_quarter_mean), book)
        note = f", {r.note}" if isinstance(r.note, str) and r.note else ""
        rows.append({"candidate": f"`{name}`: {r.description}", "seed": str(r.seed),
                     "clean train acc., final quarter mean (%)": f"{100 * r.final_quarter_mean:.2f}",
                     "minimum there (%)": f"{100 * r.final_quarter_min:.2f}", "last epoch (%)": f"{100 * r.last:.2f}",
                     "(a) meets the 99% fit": "yes" if r.final_quarter_mean >= FIT_THRESHOLD else "no",
                     "training s/epoch": f"{r.seconds_per_epoch:.2f}", "(b) book (min)": f"{book / 60:.1f} {how}",
                     "fit measured": f"{r.date}{note}"})
    fitting = [n for n, (_, fit, _) in picked.items() if fit >= FIT_THRESHOLD]
    both = [n for n in fitting if picked[n][2] <= BOOK_LIMIT]
    pick = rule_pick(picked)
    default = [n for n in picked if source_model(*n.split("/")) == SOURCE_SIZED]
    within = "within" if costs.total <= BOOK_LIMIT else "over"
    table = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    table += ["| " + " | ".join(r.values()) + " |" for r in rows]
    text = [
        f"**(a) Fit.** Clean training accuracy (eval mode, un-augmented training images) at least "
        f"{100 * FIT_THRESHOLD:.0f}% over the final quarter of the epochs, one seed per candidate: {_names(fitting)}.",
        f"**(b) Budget.** A complete `make book` with the source model {_names(measured)} was measured at "
        f"{costs.total / 60:.1f} min ({costs.measured}), {within} the {BOOK_LIMIT / 60:.0f}-minute limit. Of it, "
        f"{costs.rest / 60:.1f} min do not grow with the source model; the other {(costs.total - costs.rest) / 60:.1f} "
        f"min (the source-sized runs' training and linear probes) are scaled for each other candidate by its epochs "
        f"and the square of its width (a convolution's multiply-adds grow with the square of its channels; the probes "
        f"grow more slowly with the width, so a wider candidate is slightly overestimated). Meeting (a) and within "
        f"the book limit: {_names(both)}.",
        f"**(c) Closest to the paper.** Among those, the augmentation closest to the paper's random crop (4 px) + "
        f"flip, then the paper's schedule (linear warm-up, cosine per epoch to a floor of 0.1 x lr), then the cheaper "
        f"book: " + (f"`{pick}` ({picked[pick][0]}). " if pick else "none. ")
        + ("It is the `default` profile's source model." if [pick] == default else
           f"The `default` profile's source model is {_names(default)}.")]
    return "\n".join(table) + "\n\n" + "\n\n".join(text) + "\n"


def write_report(csv: str | Path = CANDIDATES_CSV, out: Path = REPORT_MD) -> None:
    """:func:`report` of the recorded files, under a line that says when and at which commit it was written."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or "unknown"
    head = (f"Recorded on {datetime.date.today().isoformat()} at commit {commit} by `python "
            f"benchmarks/fit_candidates.py --report`, from `fit_candidates.csv` and `book_costs.json` in "
            f"`benchmarks/results/`.\n\n")
    atomic_write_bytes(out, (head + report(read_candidates(csv), read_book_costs())).encode())
    print(f"written to {out}")


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
    parser.add_argument("--report", action="store_true", help=f"write {REPORT_MD} from the CSV and book_costs.json "
                        "and exit")
    args = parser.parse_args()
    if args.add:
        add_row(args.csv, args.add)
        return
    if args.report:
        write_report(args.csv)
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
