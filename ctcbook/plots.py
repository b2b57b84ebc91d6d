"""Figures of the book. Every function returns a matplotlib Figure and never calls ``plt.show``."""
from __future__ import annotations

from typing import Sequence

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

SOURCE_COLOR = "black"
TARGET_COLORS = plt.get_cmap("tab10").colors


def _band(ax, g: pd.DataFrame, column: str, color, label: str, style: str = "-") -> None:
    """Seed mean of ``column`` (x100, percent) against epoch, with a min-max band over seeds."""
    stats = g.groupby("epoch")[column].agg(["mean", "min", "max"]) * 100
    ax.plot(stats.index, stats["mean"], style, color=color, label=label, lw=1.6)
    if g["seed"].nunique() > 1:
        ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.18, lw=0)


def tradeoff_figure(table: pd.DataFrame, summary: pd.DataFrame, targets: Sequence[str],
                    titles: dict[str, str] | None = None) -> Figure:
    """Source test accuracy and each target's transfer accuracy against epoch.

    ``table``: :func:`ctcbook.tradeoff.curves` output; ``summary``: :func:`ctcbook.tradeoff.summarize` (its
    ``"mean"`` rows mark each target's peak epoch). Lines are means over seeds, bands the min-max range.
    """
    titles = titles or {}
    n = len(targets) + 1
    rows = -(-n // 2)
    fig, grid = plt.subplots(rows, 2, figsize=(9.0, 3.3 * rows), constrained_layout=True, squeeze=False)
    axes = grid.flatten()
    for ax in axes[n:]:
        ax.remove()
    axes = axes[:n]
    ax = axes[0]
    _band(ax, table[table.target == "source"], "test_acc", SOURCE_COLOR, "source test")
    ax.set_title("discriminability (source)")
    ax.set_ylabel("top-1 accuracy (%)")
    for i, key in enumerate(targets):
        ax, g = axes[i + 1], table[table.target == key]
        color = TARGET_COLORS[i % len(TARGET_COLORS)]
        _band(ax, g, "probe_acc", color, "linear probe")
        _band(ax, g, "knn_acc", color, "kNN (k=20)", style="--")
        peak = summary[(summary.target == key) & (summary.seed == "mean")].iloc[0]
        ax.axvline(peak.peak_epoch, color="grey", lw=0.8, ls=":")
        ax.plot([peak.peak_epoch], [100 * peak.peak], "v", color=color, ms=8, label=f"peak (epoch {peak.peak_epoch})")
        ax.set_title(f"transferability: {titles.get(key, key)}")
    for ax in axes:
        ax.set_xlabel("training epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return fig


def protocol_figure(ours: pd.DataFrame, paper: pd.DataFrame, targets: Sequence[str]) -> Figure:
    """Our probe (L-BFGS, regularisation chosen on held-out train data) against the paper's protocol (SGD on a new
    linear layer, best test accuracy over 30 epochs; ``paper`` or ``paper_bn`` rows), one panel per target, one
    seed."""
    fig, axes = plt.subplots(1, len(targets), figsize=(3.6 * len(targets), 3.1), constrained_layout=True, squeeze=False)
    for ax, key in zip(axes[0], targets):
        a, b = ours[ours.target == key], paper[paper.target == key]
        ax.plot(a.epoch, 100 * a.probe_acc, "-o", ms=3, label="ours: L-BFGS, reg. on held-out train")
        ax.plot(b.epoch, 100 * b.paper_best, "-s", ms=3, label="paper: SGD, best test epoch of 30")
        ax.plot(b.epoch, 100 * b.paper_final, ":", label="paper's probe, its last epoch")
        ax.set_title(key)
        ax.set_xlabel("training epoch")
        ax.set_ylabel("probe top-1 accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return fig


def close(fig: Figure) -> None:
    """Free a figure after it has been displayed or saved."""
    plt.close(fig)


__all__ = ["tradeoff_figure", "protocol_figure", "close", "matplotlib"]
