"""What a complete default `make book` cost, split for chapter 1's budget arithmetic (issue 12 point 2 (b)).

After `make book` from a fresh clone, run ``python benchmarks/book_costs.py --runs RUNS --total SECONDS [--write]``
with the build's run store and its total wall seconds (set-up included). It prints, and with ``--write`` stores in
``benchmarks/results/book_costs.json`` (atomically):

* ``ctc_epoch_factor``: the median wall seconds per epoch (:func:`ctcbook.chapters.ch1_tradeoff.epoch_seconds`:
  training, per-epoch evaluation, checkpoint) of the CTC-objective runs over that of the cross-entropy runs;
* ``total_seconds``: the build's wall time, which chapter 1 sets beside its own estimate of the same build;
* ``source_model``: the default source model whose runs were measured (chapter 1 says the budget was measured, not
  estimated, when its own runs are of that model);
* ``rest``: the parts of the build that do not grow with the source model's epochs and width, i.e. the total minus
  the wall time of every source-sized run (epochs x its seconds per epoch) and of every linear probe of those runs
  (the ``seconds`` of each cached L-BFGS probe row).
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
from pathlib import Path

from ctcbook.book.profiles import PARAMETER_DEFAULTS
from ctcbook.chapters import ch1_tradeoff as tradeoff
from ctcbook.runs import Run, RunStore, atomic_write_bytes, read_jsonl


#: The source-sized runs are those of the default's source model (chapters 1, 3 and 5); chapter 4's backbone is not.
SOURCE_SIZED = {k: PARAMETER_DEFAULTS["01_tradeoff"][k] for k in tradeoff.SOURCE_MODEL_KEYS}


def measure(store: RunStore) -> dict:
    """Per run kind (ce / ctc) of the source-sized runs: wall seconds per epoch and in all; and the seconds of all
    their cached L-BFGS probes."""
    kinds: dict[str, list[float]] = {"ce": [], "ctc": []}
    trained = {"ce": 0.0, "ctc": 0.0}
    probes = 0.0
    for folder in sorted(p for p in store.root.iterdir() if (p / "DONE").exists()):
        config = json.loads((folder / "config.json").read_text())
        if any(config.get(k) != v for k, v in SOURCE_SIZED.items()):
            continue
        run = Run(folder, config)
        kind = "ctc" if config.get("objective") == "ctc" else "ce"
        per_epoch = tradeoff.epoch_seconds(run)
        kinds[kind].append(per_epoch)
        trained[kind] += per_epoch * config["epochs"]
        for cache in (folder / "evals").glob("transfer-*.jsonl"):
            probes += sum(r.get("seconds", 0.0) for r in read_jsonl(cache) if "probe_acc" in r)
    return {"per_epoch": kinds, "trained": trained, "probes": probes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="the build's run store")
    parser.add_argument("--total", type=float, required=True, help="the build's total wall seconds, set-up included")
    parser.add_argument("--note", default="", help="what was measured (e.g. 'fresh clone at <commit>')")
    parser.add_argument("--write", action="store_true", help=f"store the result in {tradeoff.BOOK_COSTS_JSON}")
    args = parser.parse_args()
    m = measure(RunStore(args.runs))
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
        atomic_write_bytes(tradeoff.BOOK_COSTS_JSON, (json.dumps(data, indent=2) + "\n").encode())
        print(f"written to {tradeoff.BOOK_COSTS_JSON}")


if __name__ == "__main__":
    main()
