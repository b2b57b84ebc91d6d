"""What a complete default `make book` cost: the measured budget behind the default's source model.

After `make book` from a fresh clone, run ``python benchmarks/book_costs.py --runs RUNS --total SECONDS --note
"make book from a fresh clone at <commit>" [--write]`` with the build's run store and its total wall seconds (set-up
included). It prints, and with ``--write`` stores in ``benchmarks/results/book_costs.json`` (atomically):

* ``total_seconds``: the build's wall time;
* ``source_model``: the source model its source-sized runs trained (chapters 1, 3 and 5; :data:`SOURCE_MODEL_KEYS`);
* ``rest``: the part of the build that does not grow with the source model's epochs and width: the total minus the
  wall time of every source-sized run (epochs x its seconds per epoch) and of every linear probe of those runs;
* ``ctc_epoch_factor``: a CTC-style run's seconds per epoch over a cross-entropy run's (for the record).

Then ``python benchmarks/fit_candidates.py --report`` rewrites the recorded appendix chapter 1 shows.

``--log BUILD.LOG`` (the output of ``make book``) adds the cost table: each chapter's wall time and, from the run
store, what its parts cost (training compute, per-epoch evaluation, probes and their variants, the estimators), with
the book's wall time over the training compute of all its runs.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ctcbook.book.profiles import PARAMETER_DEFAULTS
from ctcbook.runs import Run, RunStore, atomic_write_bytes, read_jsonl

RESULTS = Path(__file__).resolve().parent / "results"
BOOK_COSTS_JSON = RESULTS / "book_costs.json"
#: The run parameters that size a source run (CTC and its controls share them with the baseline).
SIZE_KEYS = ("source", "train_size", "depth", "width", "epochs", "augment", "crop_padding")
#: The run parameters that make a source model the same model for the budget.
SOURCE_MODEL_KEYS = (*SIZE_KEYS, "schedule", "warmup_epochs", "lr_floor")
#: The default's source model (chapters 1, 3 and 5 train it; chapter 4's backbone is another).
SOURCE_SIZED = {k: PARAMETER_DEFAULTS["01_tradeoff"][k] for k in SOURCE_MODEL_KEYS}


@dataclass(frozen=True)
class BookCosts:
    """:data:`BOOK_COSTS_JSON` read: what was ``measured`` (with its date), the build's ``total`` seconds, the
    ``rest`` that does not grow with the source model, and the ``source_model`` the build trained."""

    measured: str
    total: float
    rest: float
    source_model: Mapping[str, Any]

    def measured_model(self, model: Mapping[str, Any]) -> bool:
        """Whether the measured build trained ``model`` (every key of :data:`SOURCE_MODEL_KEYS` equal)."""
        return all(model.get(k) == self.source_model.get(k) for k in SOURCE_MODEL_KEYS)

    def book_seconds(self, epochs: int, width: int) -> float:
        """The book with a source model of ``epochs`` and ``width``: the measured part that grows with the source model
        scaled by the epochs and the square of the width (a convolution's multiply-adds), plus the rest."""
        scale = epochs / self.source_model["epochs"] * (width / self.source_model["width"]) ** 2
        return self.rest + (self.total - self.rest) * scale


def read_book_costs(path: str | Path = BOOK_COSTS_JSON) -> BookCosts:
    data = json.loads(Path(path).read_text())
    rest = float(sum(r["seconds"] for r in data["rest"]))
    total = float(data["total_seconds"])
    if not 0 <= rest <= total:
        raise ValueError(f"{path}: the rest ({rest} s) must lie between 0 and the total ({total} s)")
    return BookCosts(data["measured"], total, rest, data["source_model"])


def epoch_seconds(run: Run) -> float:
    """Wall seconds per epoch of a finished run (training, per-epoch evaluation, checkpoint): the median gap between
    consecutive checkpoints; with fewer than two checkpoints, the median ``train_seconds``."""
    times = sorted(run.checkpoint_path(e).stat().st_mtime for e in run.saved_epochs())
    gaps = [b - a for a, b in zip(times, times[1:]) if b > a]
    if gaps:
        return statistics.median(gaps)
    return statistics.median(r["train_seconds"] for r in run.metrics())


def measure(store: RunStore) -> dict:
    """Per run kind (ce / ctc) of the source-sized runs: wall seconds per epoch and in all; and the seconds of all
    their cached L-BFGS probes."""
    kinds: dict[str, list[float]] = {"ce": [], "ctc": []}
    trained = {"ce": 0.0, "ctc": 0.0}
    probes = 0.0
    for folder in sorted(p for p in store.root.iterdir() if (p / "DONE").exists()):
        config = json.loads((folder / "config.json").read_text())
        if any(config.get(k) != SOURCE_SIZED[k] for k in SIZE_KEYS):
            continue
        run = Run(folder, config)
        kind = "ctc" if config.get("objective") == "ctc" else "ce"
        per_epoch = epoch_seconds(run)
        kinds[kind].append(per_epoch)
        trained[kind] += per_epoch * config["epochs"]
        for cache in (folder / "evals").glob("transfer*.jsonl"):
            probes += sum(r.get("seconds", 0.0) + r.get("variant_seconds", 0.0) for r in read_jsonl(cache))
    # the probes' seconds are summed over the processes that probed at once: their wall share is that / processes
    workers = PARAMETER_DEFAULTS["01_tradeoff"]["probe_workers"]
    return {"per_epoch": kinds, "trained": trained, "probes": probes / workers}


def cost_table(store: RunStore, total: float, log: str) -> str:
    """Markdown: chapter wall times from a ``make book`` log, the parts' seconds from the store, and the ratio."""
    parts: dict[str, float] = collections.defaultdict(float)
    for folder in sorted(p for p in store.root.iterdir() if (p / "config.json").exists()):
        config = json.loads((folder / "config.json").read_text())
        kind = ("end-to-end fusion (chapter 4)" if folder.name.startswith("e2e") else "CTC and its ablations"
                if config.get("objective") == "ctc" else "schedule only" if config.get("stages") else "baseline")
        rows = Run(folder, config).metrics()
        parts[f"training compute: {kind}"] += sum(r.get("train_seconds", 0.0) for r in rows)
        parts["per-epoch evaluation (test and clean training splits)"] += sum(r.get("eval_seconds", 0.0) for r in rows)
        for cache in (folder / "evals").glob("*.jsonl"):
            what = {"transfer": "linear probes and kNN", "transfer_variants": "probe variants (robustness panel)",
                    "information": "information estimators (chapter 2)", "geometry": "NC1 and effective rank",
                    "information_null": "shuffled-pairs nulls", "fusion": "fusion heads (chapter 4)"}.get(
                cache.name.rsplit("-", 1)[0], cache.name.rsplit("-", 1)[0])
            for r in read_jsonl(cache):
                parts[f"{what}, summed over processes"] += sum(float(v or 0) for k, v in r.items()
                                                              if k.endswith("seconds") and k != "train_seconds")
    training = sum(v for k, v in parts.items() if k.startswith("training compute"))
    chapters = re.findall(r"\[ctcbook\] (\S+) done in ([\d.]+) s", Path(log).read_text())
    lines = ["| part | seconds | share of the book |", "|---|---|---|"]
    lines += [f"| chapter {name} (wall) | {float(s):.0f} | {float(s) / total:.0%} |" for name, s in chapters]
    rest = total - sum(float(s) for _, s in chapters)
    lines.append(f"| set-up and the HTML build (wall) | {rest:.0f} | {rest / total:.0%} |")
    lines += [f"| {k} | {v:.0f} | {v / total:.0%} |" for k, v in sorted(parts.items())]
    lines.append(f"| **the book** (wall, set-up included) / training compute of all runs | {total:.0f} / "
                 f"{training:.0f} | **{total / training:.2f} x** |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="the build's run store")
    parser.add_argument("--total", type=float, required=True, help="the build's total wall seconds, set-up included")
    parser.add_argument("--note", default="", help="what was measured (e.g. 'make book from a fresh clone at X')")
    parser.add_argument("--write", action="store_true", help=f"store the result in {BOOK_COSTS_JSON}")
    parser.add_argument("--log", help="the make book output: print the cost table too")
    args = parser.parse_args()
    if args.log:
        print(cost_table(RunStore(args.runs), args.total, args.log))
    m = measure(RunStore(args.runs))
    if not m["per_epoch"]["ce"]:
        raise SystemExit(f"no finished run in {args.runs} trained the default's source model {SOURCE_SIZED}")
    ce, ctc = m["per_epoch"]["ce"], m["per_epoch"]["ctc"]
    factor = statistics.median(ctc) / statistics.median(ce) if ce and ctc else 1.0
    scaled = sum(m["trained"].values()) + m["probes"]
    rest = args.total - scaled
    print(f"{len(ce)} cross-entropy runs ({statistics.median(ce):.2f} s/epoch), {len(ctc)} CTC runs "
          f"({statistics.median(ctc) if ctc else float('nan'):.2f} s/epoch): ctc_epoch_factor {factor:.2f}")
    print(f"training {sum(m['trained'].values()):.0f} s + linear probes {m['probes']:.0f} s = {scaled:.0f} s of "
          f"{args.total:.0f} s; the rest {rest:.0f} s")
    if args.write:
        data = {"measured": f"{args.note or 'a complete make book'}, {datetime.date.today().isoformat()}",
                "total_seconds": round(args.total),
                "ctc_epoch_factor": round(factor, 3),
                "source_model": SOURCE_SIZED,
                "rest": [{"part": "set-up, chapter 1's paper probe and explorer, chapter 2, chapter 3's estimates, "
                                  "chapter 4, chapter 5 and the HTML build", "seconds": round(rest)}]}
        atomic_write_bytes(BOOK_COSTS_JSON, (json.dumps(data, indent=2) + "\n").encode())
        print(f"written to {BOOK_COSTS_JSON}; now run benchmarks/fit_candidates.py --report")


if __name__ == "__main__":
    main()
