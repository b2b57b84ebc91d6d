"""The book's results tables: each method's transfer accuracy at the final and at the best probed epoch.

A *method* is a list of finished runs that differ only in their seed (e.g. the baseline, CTC). Its probe table is
:func:`ctcbook.chapters.ch1_tradeoff.curves` of those runs (cached in the run folders, so nothing is re-probed). This module
turns such tables into the per-target summary of chapter 5 and the discriminability-transferability picture.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

COLUMNS = {"probe_acc": "linear probe", "knn_acc": "kNN (k=20)"}


def method_table(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-method :func:`ctcbook.chapters.ch1_tradeoff.curves` tables with a ``method`` column."""
    if not tables:
        raise ValueError("tables must name at least one method")
    return pd.concat([t.assign(method=name) for name, t in tables.items()], ignore_index=True)


def results_table(table: pd.DataFrame, targets: Sequence[str]) -> pd.DataFrame:
    """Per method, target and measure (linear probe, kNN): accuracy (%) at the final probed epoch and at the best
    probed epoch of each seed, as mean and standard deviation over seeds (ddof=1; 0 for one seed), the number of
    seeds, and the source test accuracy (%) at the final epoch.

    "best" is each seed's maximum over probed epochs: it selects on the target's test split, as the paper's
    protocol does, so it is an optimistic number; "final" involves no selection.
    """
    rows = []
    for method, m in table.groupby("method", sort=False):
        src = m[m.target == "source"]
        last = src.groupby("seed").epoch.max()
        src_final = np.array([src[(src.seed == s) & (src.epoch == e)].test_acc.iloc[0] for s, e in last.items()])
        for key in targets:
            g = m[m.target == key]
            if g.empty:
                continue
            for column, label in COLUMNS.items():
                if column not in g or g[column].isna().all():
                    continue
                per_seed = g.groupby("seed")
                final = per_seed.apply(lambda d: d.sort_values("epoch")[column].iloc[-1], include_groups=False)
                best = per_seed[column].max()
                best_epoch = per_seed.apply(lambda d: int(d.epoch.iloc[int(np.argmax(d[column].to_numpy()))]),
                                            include_groups=False)
                sd = (lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
                rows.append({"method": method, "target": key, "measure": label, "seeds": len(final),
                             "final_mean": 100 * final.mean(), "final_std": 100 * sd(final.to_numpy()),
                             "best_mean": 100 * best.mean(), "best_std": 100 * sd(best.to_numpy()),
                             "best_epochs": ", ".join(str(e) for e in best_epoch),
                             "source_final": 100 * src_final.mean()})
    return pd.DataFrame(rows)


def formatted(results: pd.DataFrame) -> pd.DataFrame:
    """:func:`results_table` with 'mean +- std' strings, one row per (target, measure), one column pair per method."""
    out = results.assign(final=[f"{m:.1f} ± {s:.1f}" for m, s in zip(results.final_mean, results.final_std)],
                         best=[f"{m:.1f} ± {s:.1f}" for m, s in zip(results.best_mean, results.best_std)])
    wide = out.pivot_table(index=["target", "measure"], columns="method", values=["final", "best"], aggfunc="first",
                           sort=False)
    wide.columns = [f"{method}: {kind} (%)" for kind, method in wide.columns]
    methods = list(dict.fromkeys(results.method))
    order = [f"{m}: {k} (%)" for m in methods for k in ("final", "best")]
    return wide[[c for c in order if c in wide.columns]]


def tradeoff_picture(table: pd.DataFrame, targets: Sequence[str], column: str = "probe_acc") -> Figure:
    """Transfer accuracy (y, %) against source test accuracy (x, %) over training, one panel per target, one curve
    per method (seed means at each probed epoch, joined in epoch order; the last epoch marked with a square)."""
    fig, axes = plt.subplots(1, len(targets), figsize=(3.6 * len(targets), 3.3), constrained_layout=True,
                             squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for ax, key in zip(axes[0], targets):
        for i, (method, m) in enumerate(table.groupby("method", sort=False)):
            src = m[m.target == "source"].groupby("epoch").test_acc.mean()
            tgt = m[m.target == key].groupby("epoch")[column].mean()
            both = tgt.index.intersection(src.index)
            if both.empty:
                continue
            x, y = 100 * src.loc[both], 100 * tgt.loc[both]
            ax.plot(x, y, "-o", ms=3, color=colors[i % 10], label=method)
            ax.plot([x.iloc[-1]], [y.iloc[-1]], "s", ms=7, color=colors[i % 10])
        ax.set_xlabel("source test accuracy (%)")
        ax.set_ylabel(f"{COLUMNS.get(column, column)} accuracy on {key} (%)")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def differences_markdown(results: pd.DataFrame, baseline: str, method: str) -> str:
    """One line per target and measure: ``method`` minus ``baseline`` at the final and the best epoch (points), with
    each side's seed spread, and whether the final-epoch difference exceeds the combined seed spread."""
    r = results.set_index(["method", "target", "measure"])
    lines = []
    for (m, key, measure), row in r.loc[[method]].iterrows():
        if (baseline, key, measure) not in r.index:
            continue
        b = r.loc[(baseline, key, measure)]
        d_final, d_best = row.final_mean - b.final_mean, row.best_mean - b.best_mean
        spread = float(np.hypot(row.final_std, b.final_std))
        verdict = ("larger than" if abs(d_final) > spread else "within") + f" the combined seed spread ({spread:.1f})"
        lines.append(f"- `{key}`, {measure}: {method} {row.final_mean:.1f} ± {row.final_std:.1f}% vs {baseline} "
                     f"{b.final_mean:.1f} ± {b.final_std:.1f}% at the final epoch ({d_final:+.1f} points, {verdict}); "
                     f"at the best epoch {d_best:+.1f} points.")
    return "\n".join(lines)
