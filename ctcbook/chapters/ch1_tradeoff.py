"""Chapter 1, the trade-off: per-epoch transfer probes of a run (cached in its folder), the validation-selected late
drop, the clean-fit criterion and the paper's probe set beside ours."""
from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing as mp
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .. import results, stats
from ..probes import (PROTOCOLS, VAL_FRACTION, extract_features, knn_accuracy, linear_probe, paper_probe,
                      paper_probe_bn, paper_probe_steps, probe_variants, stratified_holdout)
from ..runs import Run, append_jsonl, read_jsonl
from ..targets import TARGETS, check_target, probe_epochs, run_target
from ..train import default_device, load_model

#: Bump when the probing code changes its numbers; part of every cached evaluation's key.
PROBE_VERSION = 1

#: Bump when the probe variants (ctcbook.probes.probe_variants) change their numbers.
VARIANTS_VERSION = 1

#: Clean training accuracy at which the source counts as fitted (the chapter's fit criterion; the terminal phase).
FIT_THRESHOLD = 0.99

#: Columns a cached row of each protocol must hold; a row lacking one is probed again and superseded (deterministic).
ROW_COLUMNS = {"lbfgs": ("probe_acc", "probe_reg", "knn_acc", "val_acc"), "paper": ("paper_best", "paper_final"),
               "paper_bn": ("paper_best", "paper_final")}


def transfer_curve(run: Run, targets: Sequence[str], *, every: int = 1, protocol: str = "lbfgs",
                   target_train_size: int | None = None, target_test_size: int | None = None, variants: bool = False,
                   device: torch.device | str | None = None, progress: bool = True) -> pd.DataFrame:
    """Probe accuracy (fractions) of each target at each probed epoch of ``run``, one row per (epoch, target), with
    the columns of ``ROW_COLUMNS[protocol]`` (val_acc: held-out target-train images, where peaks are chosen) and,
    with ``variants`` (lbfgs only), :func:`~ctcbook.probes.probe_variants`' columns (cached beside the probe's)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    for key in targets:
        check_target(key)
    device = torch.device(device) if device is not None else default_device()
    epochs = [e for e in probe_epochs(run.config["epochs"], every) if e in set(run.saved_epochs())]
    spec = {"protocol": protocol, "train_size": target_train_size, "test_size": target_test_size,
            "version": PROBE_VERSION}
    variants = variants and protocol == "lbfgs"
    steps = None  # the paper's probe (a protocol, or a variant): the same SGD steps on every target, in the cache key
    if protocol != "lbfgs" or variants:
        steps = paper_probe_steps(len(run_target(run, k, target_train_size, target_test_size)[0]) for k in targets)
    if protocol != "lbfgs":
        spec["paper_steps"] = steps
    vspec = {"train_size": target_train_size, "test_size": target_test_size, "paper_steps": steps,
             "version": VARIANTS_VERSION}
    caches = {key: run.eval_path("transfer", {"target": key, **spec}) for key in targets}
    vcaches = {key: run.eval_path("transfer_variants", {"target": key, **vspec}) for key in targets} if variants else {}
    done = {key: {r["epoch"] for r in read_jsonl(path) if all(c in r for c in ROW_COLUMNS[protocol])}
            for key, path in caches.items()}
    vdone = {key: {r["epoch"] for r in read_jsonl(path)} for key, path in vcaches.items()}
    todo = [e for e in epochs if any(e not in done[k] or (variants and e not in vdone[k]) for k in targets)]
    for epoch in tqdm(todo, desc=f"probe {run.name}", disable=not progress or not todo, unit="epoch"):
        model = load_model(run, epoch, device)
        for key in targets:
            missing_variants = variants and epoch not in vdone[key]
            if epoch in done[key] and not missing_variants:
                continue
            train_set, test_set = run_target(run, key, target_train_size, target_test_size)
            if epoch in done[key]:  # only the variants are missing
                ftr, fte = (extract_features(model, s.images, device=device) for s in (train_set, test_set))
                _append_variants(vcaches[key], epoch, ftr, fte, train_set.labels, test_set.labels, steps, device)
                continue
            t0 = time.perf_counter()
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
                               n_val=res.n_val, knn_acc=knn_accuracy(ftr, train_set.labels, fte, test_set.labels))
                else:
                    res = paper_probe(ftr, train_set.labels, fte, test_set.labels, steps=steps, device=device)
            if protocol != "lbfgs":
                row.update(paper_best=res.best_accuracy, paper_final=res.final_accuracy, paper_steps=res.steps,
                           paper_epochs=len(res.curve))
            row["seconds"] = time.perf_counter() - t0  # this target's features + probe, wall (not in the key)
            append_jsonl(caches[key], row, unique=("epoch",), complete=ROW_COLUMNS[protocol])
            if missing_variants:
                _append_variants(vcaches[key], epoch, ftr, fte, train_set.labels, test_set.labels, steps, device)
    frames = []
    for key in targets:
        vrows = {r["epoch"]: r for r in read_jsonl(vcaches[key])} if variants else {}
        rows = {r["epoch"]: {**vrows.get(r["epoch"], {}), **r} for r in read_jsonl(caches[key])}
        if protocol == "lbfgs" and any("n_val" not in r for r in rows.values()):  # rows cached without it
            labels = run_target(run, key, target_train_size, target_test_size)[0].labels
            n_val = len(stratified_holdout(labels, VAL_FRACTION, 0)[1])
            rows = {e: {**r, "n_val": n_val} for e, r in rows.items()}
        frames += [{"target": key, **rows[e]} for e in epochs if e in rows]
    return pd.DataFrame(frames)


def _append_variants(path, epoch: int, ftr, fte, train_y, test_y, steps: int, device) -> None:
    t0 = time.perf_counter()
    row = probe_variants(ftr, train_y, fte, test_y, paper_steps=steps, device=device)
    append_jsonl(path, {"epoch": epoch, **row, "variant_seconds": time.perf_counter() - t0}, unique=("epoch",))


def _probe_in_worker(path: str, config: dict, targets: Sequence[str], kwargs: dict) -> None:
    torch.set_num_threads(1)
    transfer_curve(Run(Path(path), config), targets, progress=False, **kwargs)


def curves(runs: Iterable[Run], targets: Sequence[str], workers: int = 1, **probe_kwargs) -> pd.DataFrame:
    """Long table of every run's curves: ``"source"`` rows carry ``test_acc`` where measured, target rows the probes.

    With ``workers`` > 1 the runs are probed first by that many spawned one-thread processes (small L-BFGS fits use
    one core each, so two processes probe about 1.5 times as fast on two cores); the cache then holds their numbers."""
    runs = list(runs)
    if workers > 1 and len(runs) > 1:
        ctx = mp.get_context("spawn")  # never fork: torch's threads do not survive it
        with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            kwargs = {k: v for k, v in probe_kwargs.items() if k != "progress"}
            jobs = [pool.submit(_probe_in_worker, str(r.path), r.config, list(targets), kwargs) for r in runs]
            for job in tqdm(cf.as_completed(jobs), total=len(jobs), desc=f"probe {len(runs)} runs ({workers} "
                            f"processes)", unit="run", disable=not probe_kwargs.get("progress", True)):
                job.result()
    frames = []
    for run in runs:
        seed = run.config["seed"]
        metrics = pd.DataFrame(run.metrics())
        src = metrics[[c for c in ("epoch", "test_acc", "train_acc", "train_loss", "clean_train_acc", "lr")
                       if c in metrics]]
        src.insert(0, "target", "source")
        tgt = transfer_curve(run, targets, **probe_kwargs)
        for df in (src, tgt):
            df.insert(0, "seed", seed)
            frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _schedule(config) -> str:
    n = config.warmup_epochs
    warm = f", {n} warm-up epoch{'s' if n > 1 else ''}" if n else ""
    floor = f", floor {config.lr_floor} x lr" if config.schedule == "paper_cosine" else ""
    return f"{config.schedule} schedule{warm}{floor}"


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
             f"{config.momentum}, weight decay {config.weight_decay}, {_schedule(config)}, augmentation "
             f"`{config.augment}` (crop padding {config.crop_padding} px)"]
    lines += [f"- **Target** `{key}`: {TARGETS[key].description}" for key in targets]
    return "\n".join(lines)


# --- the late drop, one rule (ctcbook.stats) ---------------------------------------------------------------------
def late_drops(table: pd.DataFrame, test: str = "probe_acc", val: str = "val_acc",
               rule: str = "one_se") -> dict[str, stats.DropSummary]:
    """Per target, :func:`ctcbook.stats.late_drop` of the probe curves in ``table`` (peak chosen on ``val``)."""
    out = {}
    for target, g in table[table.target != "source"].groupby("target", sort=False):
        if g[val].isna().any():
            raise ValueError(f"target {target!r}: every probed epoch needs {val!r} (probe again: rows cached "
                             f"before it existed are upgraded by transfer_curve)")
        curves_ = {}
        for seed, gs in g.groupby("seed"):
            gs = gs.sort_values("epoch")
            curves_[seed] = (gs.epoch.to_numpy(), gs[val].to_numpy(), gs[test].to_numpy())
        out[target] = stats.late_drop(curves_, results.val_size(g), rule=rule)
    return out


def fit_epochs(table: pd.DataFrame, threshold: float = FIT_THRESHOLD) -> dict[int, int | None]:
    """Per seed, the first epoch whose clean training accuracy reaches ``threshold`` (the terminal phase starts)."""
    out = {}
    for seed, g in table[table.target == "source"].groupby("seed"):
        fitted = g.epoch[g.clean_train_acc >= threshold] if "clean_train_acc" in g else []
        out[int(seed)] = int(fitted.min()) if len(fitted) else None
    return out


def terminal_drops(table: pd.DataFrame, fits: Mapping[int, int | None],
                   test: str = "probe_acc") -> dict[str, stats.Interval | None]:
    """Per target, :func:`ctcbook.stats.terminal_drop` in points over the seeds that fit (None where none did)."""
    out = {}
    for target, g in table[table.target != "source"].groupby("target", sort=False):
        per = {}
        for seed, gs in g.groupby("seed"):
            gs = gs.sort_values("epoch")
            d = stats.terminal_drop(gs.epoch.to_numpy(), gs[test].to_numpy(), fits.get(int(seed)))
            if d is not None:
                per[int(seed)] = 100 * d
        out[target] = stats.t_interval(per) if per else None
    return out


def drop_panel(table: pd.DataFrame, fits: Mapping[int, int | None]) -> dict[str, stats.Robustness]:
    """The late and terminal drops per target (points) under every analysis variant (:func:`ctcbook.results.panel`)."""
    def estimate(t, test, val, rule):
        late = {f"late drop on {k}": d.selected.scaled(100) for k, d in late_drops(t, test, val, rule).items()}
        return {**late, **{f"terminal drop on {k}": iv for k, iv in terminal_drops(t, fits, test).items() if iv}}
    return results.panel(table, estimate)


def holm_signs(drops: Mapping[str, stats.DropSummary], terminal: Mapping[str, stats.Interval | None]) -> dict:
    """Holm-corrected signs of the late drops and, as a second family, of the terminal drops, over the targets."""
    late = stats.corrected_signs({t: d.selected.scaled(100) for t, d in drops.items()})
    term = stats.corrected_signs({t: iv for t, iv in terminal.items() if iv is not None})
    return {"late": late, "terminal": term}


def source_accuracy(table: pd.DataFrame, drops: Mapping[str, stats.DropSummary]) -> dict[str, dict]:
    """Per target, source test accuracy (points, intervals over seeds) at its ``first``, ``peak`` and ``last`` probed
    epochs, and the paired gains ``rise`` (last - first) and ``late_rise`` (last - peak)."""
    src = table[table.target == "source"].set_index(["seed", "epoch"])["test_acc"] * 100
    out = {}
    for target, d in drops.items():
        span = table[table.target == target].groupby("seed").epoch.agg(["min", "max"])
        first = {s: float(src.loc[(s, int(span.loc[s, "min"]))]) for s in d.per_seed}
        peak = {s: float(src.loc[(s, d.per_seed[s].peak_epoch)]) for s in d.per_seed}
        last = {s: float(src.loc[(s, int(span.loc[s, "max"]))]) for s in d.per_seed}
        out[target] = {"first": stats.t_interval(first), "peak": stats.t_interval(peak), "last": stats.t_interval(last),
                       "rise": stats.paired_interval(last, first), "late_rise": stats.paired_interval(last, peak)}
    return out


def _peaks(d: stats.DropSummary) -> str:
    return ", ".join(str(d.per_seed[s].peak_epoch) for s in sorted(d.per_seed))


_WORDS = {1: "drop", -1: "rise", 0: "inconclusive"}


def drop_table(drops: Mapping[str, stats.DropSummary], source: Mapping[str, dict],
               terminal: Mapping[str, stats.Interval | None], holm: Mapping[str, dict],
               panel: Mapping[str, stats.Robustness]) -> pd.DataFrame:
    """One row per target: late, terminal and naive drops with intervals, Holm and panel verdicts, peaks, source
    accuracy."""
    rows = []
    for target, d in drops.items():
        sel, naive, src, term = d.selected.scaled(100), d.naive.scaled(100), source[target], terminal[target]
        rows.append({
            "target": target,
            "late drop (points)": round(sel.mean, 2), "late drop, 95% CI": stats.brackets(sel),
            f"late drop, Holm over {len(drops)}": _WORDS[holm["late"][target]],
            "late drop, analysis variants": _robust_word(panel, f"late drop on {target}"),
            "terminal drop (points)": "no fit" if term is None else round(term.mean, 2),
            "terminal drop, 95% CI": "" if term is None else stats.brackets(term),
            f"terminal drop, Holm over {len(holm['terminal'])}": "" if term is None else
            _WORDS[holm["terminal"][target]],
            "terminal drop, analysis variants": "" if term is None else
            _robust_word(panel, f"terminal drop on {target}"),
            "max-of-test drop, naive (points)": round(naive.mean, 2), "max-of-test drop, 95% CI": stats.brackets(naive),
            "peak epoch per seed (chosen on validation)": _peaks(d),
            **{f"source accuracy, {k} epoch (%)": f"{src[k].mean:.2f} {stats.brackets(src[k])}"
               for k in ("first", "peak", "last")}})
    return pd.DataFrame(rows)


def _robust_word(panel: Mapping[str, stats.Robustness], key: str) -> str:
    return panel[key].word if key in panel else "not computed"


def _robust_text(panel: Mapping[str, stats.Robustness], key: str) -> str:
    return f" The verdict is {results.robust_text(panel[key])}." if key in panel else ""


def _terminal_text(target: str, term: stats.Interval | None, fits: Mapping[int, int | None]) -> str:
    if term is None:
        return f"No seed's source reached the fit criterion, so {target} has no terminal phase to measure"
    return stats.verdict(term, quantity=f"Terminal drop on {target} (fit epochs per seed: "
                         f"{', '.join('never' if e is None else str(e) for _, e in sorted(fits.items()))})",
                         positive="transfer falls after the source has fitted",
                         negative="transfer rises after the source has fitted").text


def _holm_text(target: str, holm: Mapping[str, dict]) -> str:
    said = {1: "a drop", -1: "a rise", 0: "inconclusive"}
    late = f"the late drop is {said[holm['late'][target]]} over {len(holm['late'])} targets"
    term = (f"; the terminal drop is {said[holm['terminal'][target]]} over {len(holm['terminal'])}"
            if target in holm["terminal"] else "")
    return f"Corrected for the family of targets (Holm): {late}{term}"


def drop_markdown(drops: Mapping[str, stats.DropSummary], source: Mapping[str, dict],
                  terminal: Mapping[str, stats.Interval | None], fits: Mapping[int, int | None],
                  holm: Mapping[str, dict], panel: Mapping[str, stats.Robustness]) -> str:
    """Per target, a paragraph on the late, terminal and naive drops, the peaks, source accuracy, Holm and the
    analysis variants."""
    paragraphs = []
    for target, d in drops.items():
        sel, naive, src = d.selected.scaled(100), d.naive.scaled(100), source[target]
        late = stats.verdict(src["late_rise"], quantity="Source accuracy gain from that peak to the last epoch",
                             positive="discriminability kept rising while transfer was past its peak",
                             negative="source accuracy fell too")
        paragraphs.append(
            f"**{target}**: {stats.drop_verdict(sel, target=target).text}."
            f"{_robust_text(panel, f'late drop on {target}')} The naive max-of-test drop (largest test "
            f"accuracy minus the last, >= 0 by construction) is {naive.mean:.2f} points, 95% CI {stats.brackets(naive)}: "
            f"choosing the peak on the test curve adds {naive.mean - sel.mean:.2f} points. Peak epochs per seed "
            f"(chosen on validation accuracy): {_peaks(d)}. {late.text}. "
            f"{_terminal_text(target, terminal[target], fits)}.{_robust_text(panel, f'terminal drop on {target}')} "
            f"{_holm_text(target, holm)}.")
    return "\n\n".join(paragraphs)


# --- how far training got: the clean fit ------------------------------------------------------------------------


def final_quarter(rows: Sequence[Mapping], column: str = "clean_train_acc") -> dict:
    """``mean``, ``min``, ``last`` (fractions) of ``column`` over the last max(1, n // 4) of the n ``rows`` that measure
    it, and their ``first_epoch``."""
    if not rows:
        raise ValueError("rows must hold at least one metrics row, got none")
    if column not in rows[-1]:
        raise ValueError(f"the last metrics row (epoch {rows[-1].get('epoch')}) has no {column!r} (runs trained "
                         f"before it was logged)")
    rows = [r for r in rows if column in r]  # the epochs it was measured at (test_every)
    quarter = rows[-max(1, len(rows) // 4):]
    values = [float(r[column]) for r in quarter]
    return {"mean": statistics.fmean(values), "min": min(values), "last": float(rows[-1][column]),
            "first_epoch": int(quarter[0]["epoch"])}


@dataclass(frozen=True)
class FitCheck:
    """Per-seed final-quarter means (and minima) of ``clean_train_acc``, their interval (points), ``reached``."""

    per_seed: dict
    per_seed_min: dict
    interval: stats.Interval
    mean: float
    epochs: tuple[int, int]
    threshold: float
    reached: bool


def fit_reached(runs: Iterable[Run], threshold: float = FIT_THRESHOLD) -> FitCheck:
    """Has the source model fitted its training set: final-quarter seed mean of ``clean_train_acc`` >= ``threshold``?"""
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


# --- the paper's probe as run here -------------------------------------------------------------------------------
def protocol_comparison(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Per target, the paper's protocol (one seed) against our probe: level gap, rank correlation, peak epochs."""
    from scipy.stats import spearmanr

    merged = ours.merge(paper, on=["target", "epoch"], suffixes=("", "_paper")).sort_values("epoch")
    rows = []
    for target, g in merged.groupby("target", sort=False):
        rho = spearmanr(g.probe_acc, g.paper_best).statistic if len(g) > 2 else float("nan")
        rows.append({"target": target, "probed epochs": len(g),
                     "paper's minus ours (points)": round(float(100 * (g.paper_best - g.probe_acc).mean()), 2),
                     "best-test selection gain (points)": round(float(100 * (g.paper_best - g.paper_final).mean()), 2),
                     "rank correlation of the curves": round(float(rho), 2),
                     "our peak epoch (validation)": int(g.epoch.iloc[stats.peak_index(g.val_acc.to_numpy(),
                                                                                      results.val_size(g))]),
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
        rho, gap = r["rank correlation of the curves"], r["paper's minus ours (points)"]
        ours_peak, paper_peak = r["our peak epoch (validation)"], r["paper's peak epoch (best test)"]
        shape = ("the two curves rank the epochs alike" if rho >= 0.7 else
                 "the two curves rank the epochs differently" if rho < 0.3 else
                 "the two curves rank the epochs partly alike") if math.isfinite(rho) else "too few epochs to compare shapes"
        same = ("at the same epoch" if ours_peak == paper_peak
                else f"at epochs {ours_peak} (ours) and {paper_peak} (paper's)")
        lines.append(f"`{r['target']}`: the paper's protocol as run here ({r['paper probe: SGD steps']} SGD steps, "
                     f"{r['paper probe: epochs']} epochs) minus ours: {gap:+.2f} points "
                     f"on average over {r['probed epochs']} probed epochs, of which picking its best test epoch adds "
                     f"{r['best-test selection gain (points)']:.2f}; rank correlation {_rho(rho)}: {shape}; they peak "
                     f"{same}.")
    return results.findings(lines)


# --- the closing box ---------------------------------------------------------------------------------------------
def findings_markdown(fit: FitCheck, drops: Mapping[str, stats.DropSummary], source: Mapping[str, dict],
                      terminal: Mapping[str, stats.Interval | None], fits: Mapping[int, int | None],
                      holm: Mapping[str, dict], panel: Mapping[str, stats.Robustness],
                      comparison: pd.DataFrame | None = None) -> str:
    """The "What this chapter found" list, every statement computed from the numbers."""
    items = [("The source model fitted its training set" if fit.reached else
              "The source model did NOT fit its training set") +
             f" (clean training accuracy over the final quarter {fit.interval.mean:.2f}%, 95% CI {stats.brackets(fit.interval)}, "
             f"criterion {100 * fit.threshold:.0f}%)."]
    for t, d in drops.items():
        text = stats.drop_verdict(d.selected.scaled(100), target=t).text
        items.append(f"{text[:1].upper()}{text[1:]}.{_robust_text(panel, f'late drop on {t}')} "
                     f"{_terminal_text(t, terminal[t], fits)}.{_robust_text(panel, f'terminal drop on {t}')} "
                     f"{_holm_text(t, holm)}.")
    rise = stats.verdict(next(iter(source.values()))["rise"],
                         quantity="Source test accuracy gain from the first to the last epoch",
                         positive="discriminability rose", negative="discriminability fell")
    items.append(f"{rise.text}.")
    if comparison is not None and len(comparison):
        gap_col, rho_col = "paper's minus ours (points)", "rank correlation of the curves"
        gaps = ", ".join(f"{r['target']} {r[gap_col]:+.2f} points (rank correlation "
                         f"{_rho(r[rho_col])})" for r in comparison.to_dict("records"))
        items.append(f"The paper's protocol as run here, one seed, minus ours: {gaps}.")
    return results.findings(items)
