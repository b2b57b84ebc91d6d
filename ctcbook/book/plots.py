"""Figures of the book. Every function returns a matplotlib Figure and never calls ``plt.show``."""
from __future__ import annotations

from typing import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..chapters.ch2_information import GEOMETRY_SOURCE, penultimate
from ..stats import t_interval

SOURCE_COLOR = "black"
TARGET_COLORS = plt.get_cmap("tab10").colors
METHOD_COLORS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown")
PROBE_NAMES = {"probe_acc": "linear probe", "knn_acc": "kNN (k=20)"}


def _band(ax, g: pd.DataFrame, column: str, color, label: str | None = None, scale: float = 1.0,
          style: str = "-o") -> None:
    """Seed mean of ``column`` (x ``scale``) against epoch, banded by its 95% t interval over seeds."""
    per = (g.groupby(["epoch", "seed"])[column].mean() * scale).dropna()  # epochs it was measured at (test_every)
    if per.empty:
        return
    stats = _t_stats(per, "epoch")
    ax.plot(stats.index, stats["mean"], style, ms=3, color=color, label=label, lw=1.4)
    several = stats["count"] > 1
    if several.any():
        ax.fill_between(stats.index, stats["low"].where(several, stats["mean"]),
                        stats["high"].where(several, stats["mean"]), color=color, alpha=0.2, lw=0)


def _t_stats(per: pd.Series, level: str) -> pd.DataFrame:
    """Per value of index ``level``: mean, 95% t interval (low, high) and count of the per-seed values ``per``."""
    rows = {k: t_interval(v.to_numpy()) for k, v in per.groupby(level=level)}
    return pd.DataFrame([(iv.mean, iv.low, iv.high, iv.n) for iv in rows.values()],
                        columns=["mean", "low", "high", "count"], index=pd.Index(list(rows), name=level))


def _subplots(rows: int, cols: int, width: float, height: float, **kw) -> tuple[Figure, np.ndarray]:
    """``rows`` x ``cols`` panels (axes always 2-D) on a ``width`` x ``height`` inch figure, constrained layout."""
    return plt.subplots(rows, cols, figsize=(width, height), layout="constrained", squeeze=False, **kw)


def _panel_grid(n: int) -> tuple[Figure, list]:
    """A two-column grid of ``n`` panels (4.5 x 3.3 in each); unused cells are removed. Returns (fig, the n axes)."""
    rows = -(-n // 2)
    fig, grid = _subplots(rows, 2, 9.0, 3.3 * rows)
    axes = grid.flatten()
    for ax in axes[n:]:
        ax.remove()
    return fig, list(axes[:n])


def tradeoff_figure(table: pd.DataFrame, targets: Sequence[str], peak_epochs: dict[str, list[int]] | None = None,
                    titles: dict[str, str] | None = None) -> Figure:
    """Source and each target's transfer accuracy against epoch (seed means, 95% t bands); ``peak_epochs``' per-seed
    validation-selected peaks tick the top edge; the clean training accuracy, when logged, is dashed."""
    titles, peak_epochs = titles or {}, peak_epochs or {}
    fig, axes = _panel_grid(len(targets) + 1)
    ax = axes[0]
    src = table[table.target == "source"]
    _band(ax, src, "test_acc", SOURCE_COLOR, "source test accuracy", 100, "-")
    if "clean_train_acc" in src and src.clean_train_acc.notna().all():
        _band(ax, src, "clean_train_acc", "grey", "source clean training accuracy", 100, "--")
    ax.set_title("discriminability (source)")
    for i, key in enumerate(targets):
        ax, g = axes[i + 1], table[table.target == key]
        color = TARGET_COLORS[i % len(TARGET_COLORS)]
        _band(ax, g, "probe_acc", color, "linear probe (test)", 100, "-")
        _band(ax, g, "knn_acc", color, "kNN, k = 20 (test)", 100, "--")
        for j, epoch in enumerate(peak_epochs.get(key, [])):
            ax.axvline(epoch, ymin=0.93, ymax=1.0, color="grey", lw=1.2,
                       label="peak epoch of a seed (chosen on validation)" if j == 0 else None)
        ax.set_title(f"transferability: {titles.get(key, key)}", wrap=True)
    for ax in axes:
        _axes(ax, "training epoch", "top-1 accuracy (%)")
    _legend_below(fig, axes)
    return fig


def protocol_figure(ours: pd.DataFrame, paper: pd.DataFrame, targets: Sequence[str]) -> Figure:
    """Our probe against the paper's protocol as run here (``paper`` or ``paper_bn`` rows), one panel per target."""
    fig, grid = _subplots(1, len(targets), 3.6 * len(targets), 3.4)
    for ax, key in zip(grid[0], targets):
        a, b = ours[ours.target == key], paper[paper.target == key]
        ax.plot(a.epoch, 100 * a.probe_acc, "-o", ms=3, label="ours: L-BFGS, regularisation chosen on held-out train")
        ax.plot(b.epoch, 100 * b.paper_best, "-s", ms=3, label="the paper's protocol as run here: best test epoch")
        ax.plot(b.epoch, 100 * b.paper_final, ":", label="the paper's protocol as run here: its last epoch")
        ax.set_title(key)
        _axes(ax, "training epoch", "probe top-1 accuracy (%)")
    _legend_below(fig, list(grid[0]))
    return fig


def _null_line(ax, nulls: pd.DataFrame | None, estimator: str, split: str, column: str, vertical: bool = False):
    """The estimator's shuffled-pairs null on ``split`` (mean, and +- 1 SD band over fits when there are several)."""
    g = nulls[(nulls.estimator == estimator) & (nulls.split == split)] if nulls is not None and len(nulls) else []
    if not len(g):
        return
    m, sd = float(g[column].mean()), float(g[column].std()) if len(g) > 1 else 0.0
    line, span = (ax.axvline, ax.axvspan) if vertical else (ax.axhline, ax.axhspan)
    line(m, color="grey", ls="--", lw=1.0, label="null (shuffled pairs)")
    if sd > 0:
        span(m - sd, m + sd, color="grey", alpha=0.15, lw=0)


def _axes(ax, xlabel: str, ylabel: str, title: str | None = None) -> None:
    """Label both axes (quantity and unit), draw a light grid and set a small ``title``."""
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if title is not None:
        ax.set_title(title, fontsize=9)


def _legend_below(fig: Figure, axes, ncol: int = 4, fontsize: int = 8, frameon: bool = False) -> None:
    """One legend for the figure, below the panels (never over the data), in at most ``ncol`` columns."""
    handles = {}
    for ax in axes:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(ncol, len(handles)),
                   fontsize=fontsize, frameon=frameon)


def information_plane_figure(info: pd.DataFrame, splits: Sequence[str], estimators: Sequence[str],
                             nulls: pd.DataFrame | None = None) -> Figure:
    """The penultimate layer's information plane (seed means, coloured by epoch) per estimator (rows) and split."""
    epochs = sorted(info.epoch.unique())
    norm = matplotlib.colors.Normalize(min(epochs), max(epochs))
    cmap = plt.get_cmap("viridis")
    fig, axes = _subplots(len(estimators), len(splits), 2.9 * len(splits) + 0.8, 2.8 * len(estimators))
    for r, est in enumerate(estimators):
        for c, split in enumerate(splits):
            ax = axes[r][c]
            per_seed = penultimate(info, est, split).groupby(["seed", "epoch"])[["i_xt", "i_ty"]].mean()  # restarts
            if per_seed.empty:
                ax.set_axis_off()
                continue
            m = per_seed.groupby("epoch").mean()
            x, y = m["i_xt"], m["i_ty"]
            ax.plot(x, y, "-", color="grey", lw=0.8, zorder=1)
            ax.scatter(x, y, c=[cmap(norm(e)) for e in m.index], s=22, zorder=2, edgecolors="none")
            ax.annotate(f"{m.index[0]}", (x.iloc[0], y.iloc[0]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
            ax.annotate(f"{m.index[-1]}", (x.iloc[-1], y.iloc[-1]), fontsize=7, xytext=(3, -9),
                        textcoords="offset points")
            _null_line(ax, nulls, est, split, "i_ty")
            _null_line(ax, nulls, est, split, "i_xt", vertical=True)
            _axes(ax, "I(X;T) (bits)", "I(T;Y) (bits)", f"{split}: {est}")
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, label="training epoch", shrink=0.8)
    _legend_below(fig, axes.flatten())
    return fig


def information_epochs_figure(info: pd.DataFrame, table: pd.DataFrame, splits: Sequence[str],
                              estimators: Sequence[str], nulls: pd.DataFrame | None = None) -> Figure:
    """Per split: each estimator's penultimate I(X;T) and its null against epoch, beside chapter 1's accuracy."""
    fig, axes = _subplots(len(splits), len(estimators) + 1, 3.2 * (len(estimators) + 1), 2.5 * len(splits) + 0.4)
    for r, split in enumerate(splits):
        for c, est in enumerate(estimators):
            g = penultimate(info, est, split)
            _band(axes[r][c], g, "i_xt", TARGET_COLORS[c], f"I(X;T), {est}")
            _null_line(axes[r][c], nulls if len(g) else None, est, split, "i_xt")
            _axes(axes[r][c], "training epoch", "I(X;T) (bits)", f"{split}: I(X;T), {est}")
        if split == "source":
            _band(axes[r][-1], table[table.target == "source"], "test_acc", SOURCE_COLOR, "source test accuracy", 100,
                  "-")
            title = "source test accuracy"
        else:
            _band(axes[r][-1], table[table.target == split], "probe_acc", TARGET_COLORS[3], "linear-probe accuracy",
                  100)
            title = f"{split}: linear-probe accuracy"
        _axes(axes[r][-1], "training epoch", "top-1 accuracy (%)", title)
    _legend_below(fig, axes.flatten())
    return fig


def information_geometry_figure(info: pd.DataFrame, geom: pd.DataFrame, table: pd.DataFrame,
                                splits: Sequence[str], estimator: str = "renyi",
                                nulls: pd.DataFrame | None = None) -> Figure:
    """Per target: Renyi I(X;T), NC1 (target and source features), effective rank and probe accuracy against epoch."""
    fig, axes = _subplots(len(splits), 4, 13.0, 2.5 * len(splits) + 0.4)
    for r, split in enumerate(splits):
        a = axes[r]
        _band(a[0], penultimate(info, estimator, split), "i_xt", TARGET_COLORS[0], f"I(X;T), {estimator}")
        _null_line(a[0], nulls, estimator, split, "i_xt")
        _band(a[1], geom[geom.split == split], "nc1", TARGET_COLORS[1], "NC1, target test features")
        _band(a[1], geom[geom.split == GEOMETRY_SOURCE], "nc1", SOURCE_COLOR, "NC1, source training features")
        a[1].set_yscale("log")
        _band(a[2], geom[geom.split == split], "eff_rank", TARGET_COLORS[2], "effective rank, target features")
        _band(a[3], table[table.target == split], "probe_acc", TARGET_COLORS[3], "linear-probe accuracy", 100)
        ylabels = ("I(X;T) (bits)", "NC1 (dimensionless)", "effective rank", "top-1 accuracy (%)")
        titles = (f"I(X;T), {estimator}", "within-class collapse", "effective rank", "transfer")
        for ax, ylabel, title in zip(a, ylabels, titles):
            _axes(ax, "training epoch", ylabel, f"{split}: {title}")
    _legend_below(fig, axes.flatten())
    return fig


def mine_convergence_figure(info: pd.DataFrame, split: str, seed: int, epoch: int) -> Figure:
    """MINE's running DV estimate (bits) against optimisation step for every restart at one checkpoint."""
    g = info[(info.estimator == "mine") & (info.split == split) & (info.seed == seed) & (info.epoch == epoch)]
    fig, (axes,) = _subplots(1, 2, 8.5, 3.2)
    for ax, col, name in zip(axes, ("curve_xt", "curve_ty"), ("I(X;T)", "I(T;Y)")):
        for i, row in enumerate(g.sort_values("restart").itertuples()):
            c, steps, color = getattr(row, col), getattr(row, col.replace("curve", "steps")), TARGET_COLORS[i % 10]
            # the cache keeps bin means of the per-step curve: each is drawn at its bin's centre step
            ax.plot([(k + 0.5) * steps / len(c) for k in range(len(c))], c, lw=1.0, color=color,
                    label=f"restart {row.restart}")
            ax.axhline(getattr(row, col.replace("curve", "i")), color=color, ls=":", lw=0.8)
        _axes(ax, "optimisation step", f"DV bound on {name} (bits)", f"{split}, seed {seed}, epoch {epoch}: {name}")
    _legend_below(fig, axes)
    return fig


def information_layers_figure(info: pd.DataFrame, split: str = "source", estimator: str = "renyi") -> Figure:
    """I(X;T) and I(T;Y) (bits, seed means) of every analysed layer against epoch, one line per layer."""
    g = info[(info.estimator == estimator) & (info.split == split)]
    layers = [l for l in ("stage1", "stage2", "stage3", "penultimate") if l in set(g.layer)]
    fig, (axes,) = _subplots(1, 2, 8.5, 3.3)
    for i, layer in enumerate(layers):
        m = g[g.layer == layer].groupby("epoch")[["i_xt", "i_ty"]].mean()
        for ax, col in zip(axes, ("i_xt", "i_ty")):
            ax.plot(m.index, m[col], "-o", ms=3, color=plt.get_cmap("plasma")(i / max(1, len(layers))), label=layer)
    for ax, name in zip(axes, ("I(X;T)", "I(T;Y)")):
        _axes(ax, "training epoch", f"{name} (bits)", f"{split}: {name} per layer, {estimator}")
    _legend_below(fig, axes)
    return fig


def _switch(ax, switch_epoch: int | None) -> None:
    if switch_epoch is not None:
        ax.axvline(switch_epoch, color="grey", lw=0.9, ls=":", label="stage switch")


def method_comparison_figure(table: pd.DataFrame, targets: Sequence[str], switch_epoch: int | None = None,
                             column: str = "probe_acc", methods: Sequence[str] | None = None) -> Figure:
    """Source and each target's probe accuracy (%) against epoch, one line per method (seed mean, 95% t band)."""
    fig, axes = _panel_grid(len(targets) + 1)
    methods = list(methods) if methods is not None else list(table.method.unique())
    for i, method in enumerate(methods):
        g, color = table[table.method == method], METHOD_COLORS[i % len(METHOD_COLORS)]
        _band(axes[0], g[g.target == "source"], "test_acc", color, method, scale=100.0)
        for ax, key in zip(axes[1:], targets):
            _band(ax, g[g.target == key], column, color, method, scale=100.0)
    axes[0].set_title("discriminability: source test accuracy")
    for ax, key in zip(axes[1:], targets):
        ax.set_title(f"transferability: {key} (linear probe)")
    for ax in axes:
        _switch(ax, switch_epoch)
        _axes(ax, "training epoch", "top-1 accuracy (%)")
    _legend_below(fig, [axes[0]])
    return fig


def information_methods_figure(info: dict[str, pd.DataFrame], methods: Sequence[str],
                               switch_epoch: int | None = None) -> Figure:
    """I(X;T) and I(T;Y) of the penultimate layer against epoch, one row per split, one line per method."""
    fig, grid = _subplots(len(info), 2, 9.0, 3.0 * len(info) + 0.4)
    for axes, (split, rows) in zip(grid, info.items()):
        for i, method in enumerate(methods):
            g = rows[rows.method == method]
            color = METHOD_COLORS[i % len(METHOD_COLORS)]
            _band(axes[0], g, "i_xt", color, method)
            _band(axes[1], g, "i_ty", color, method)
        for ax, name in zip(axes, ("I(X;T) (bits)", "I(T;Y) (bits)")):
            _switch(ax, switch_epoch)
            _axes(ax, "training epoch", name, f"{name.split(' ')[0]} of the penultimate features, {split} test split")
    _legend_below(fig, [grid[0][0]])
    return fig


def close(fig: Figure) -> None:
    """Free a figure after it has been displayed or saved."""
    plt.close(fig)


# --- chapter 4: Dynamic MLP --------------------------------------------------------------------------------------
def simulated_metadata_figure(meta, labels, class_names: Sequence[str], simulator=None, n: int = 2000) -> Figure:
    """The first ``n`` images' simulated locations by class (centres as crosses) and day-of-year per class."""
    labels = np.asarray(labels)[:n]
    lat, lon, day = meta.latitude[:n], meta.longitude[:n], meta.day_of_year[:n]
    fig, ((ax_map, ax_day),) = _subplots(1, 2, 10.0, 3.6, gridspec_kw={"width_ratios": [1.6, 1]})
    for k, name in enumerate(class_names):
        sel, c = labels == k, TARGET_COLORS[k % len(TARGET_COLORS)]
        ax_map.scatter(lon[sel], lat[sel], s=3, alpha=0.5, color=c, label=name)
        if simulator is not None:
            ax_map.plot(simulator.centre_lon[k], simulator.centre_lat[k], "x", color=c, ms=9, mew=2.5)
        ax_day.hist(day[sel], bins=np.arange(1, 367, 14), histtype="step", color=c, lw=1.3)
    ax_map.set_xlim(-180, 180)
    ax_map.set_ylim(-90, 90)
    _axes(ax_map, "longitude (degrees)", "latitude (degrees)",
          f"simulated locations of {len(labels)} train images (x: class centres)")
    # the legend below both panels, off the data
    fig.legend(*ax_map.get_legend_handles_labels(), fontsize=7, markerscale=3, ncol=5, loc="outside lower center")
    _axes(ax_day, "day of year (1 = 1 January)", "images per 14-day bin", "simulated dates, per class")
    return fig


def tsne_figure(panels: dict, class_names: Sequence[str]) -> Figure:
    """Side-by-side t-SNE maps: ``panels`` maps a title to (coords (n, 2), labels (n,)); colours are classes."""
    fig, axes = _subplots(1, len(panels), 4.4 * len(panels), 4.0)
    for ax, (title, (coords, labels)) in zip(axes[0], panels.items()):
        labels = np.asarray(labels)
        for k in sorted(set(labels.tolist())):
            pts = coords[labels == k]
            ax.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.6, color=TARGET_COLORS[k % len(TARGET_COLORS)],
                       label=class_names[k])
        ax.set_title(title, fontsize=9)
        ax.set(xlabel="t-SNE 1 (a.u.)", ylabel="t-SNE 2 (a.u.)")
    # one legend for all panels (the same classes), right of them, off the data
    fig.legend(*axes[0][0].get_legend_handles_labels(), fontsize=7, markerscale=3, loc="outside right center")
    return fig


def interaction_pictures_figure(images, class_names: Sequence[str], latitudes: Sequence[float],
                                days: Sequence[float], level: float) -> Figure:
    """The same image of each class rendered at several (latitude, day) pairs: rows are classes."""
    rows, cols = len(images), len(days)
    fig, axes = _subplots(rows, cols, 1.25 * cols + 0.8, 1.3 * rows + 0.6)
    for r, (k, pics) in enumerate(images.items()):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(pics[c].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=255)
            ax.set(xticks=[], yticks=[])
            if r == 0:
                ax.set_title(f"lat {latitudes[c]:+.0f} deg\nday {days[c]:.0f}", fontsize=7)
            if c == 0:
                ax.set_ylabel(class_names[k], fontsize=7)
    fig.suptitle(f"interaction a = {level:g}: one image per class, rendered at each (latitude, day of year)",
                 fontsize=9)
    return fig


def interaction_sweep_figure(results: pd.DataFrame, gains: dict[str, dict[str, pd.DataFrame]],
                             labels: dict[str, str], reference: str | None = None) -> Figure:
    """Per mode: test top-1 (%) against the interaction level (seed mean, 95% t bar; ``reference`` dashed) above
    each method's paired gain over image only (95% t interval)."""
    modes = [m for m in ("frozen", "end to end") if m in set(results["mode"])]
    fig, axes = _subplots(2, len(modes), 4.9 * len(modes), 6.6, sharex=True)
    colors = dict(zip(list(labels), list(TARGET_COLORS) * 2))
    for col, mode in enumerate(modes):
        ax, ax_gain = axes[0][col], axes[1][col]
        sub = results[results["mode"] == mode]
        for method in dict.fromkeys(sub.method):
            g = _t_stats(sub[sub.method == method].groupby(["level", "seed"]).test_acc.mean() * 100, "level")
            style = dict(ls="--", color="black", lw=1.2) if method == reference else dict(
                ls="-", marker="o", ms=3.5, lw=1.4, color=colors.get(method))
            ax.plot(g.index, g["mean"], label=labels.get(method, method), **style)
            if method != reference:
                several = g[g["count"] > 1]
                ax.vlines(several.index, several["low"], several["high"], color=style["color"], lw=1, alpha=0.6)
        _axes(ax, "", "test top-1 (%)", f"{mode}: top-1 (mean, 95% t CI over seeds)")
        for method, frame in gains.get(mode, {}).items():
            if frame.empty:
                continue
            c = colors.get(method)
            ax_gain.plot(frame.level, frame["mean"], "-o", ms=3.5, lw=1.4, color=c, label=labels.get(method, method))
            ax_gain.fill_between(frame.level, frame["low"], frame["high"], color=c, alpha=0.15, lw=0)
        ax_gain.axhline(0, color="black", lw=0.8)
        _axes(ax_gain, "image-metadata interaction a (0 = independent given the class)", "gain (percentage points)",
              f"{mode}: gain over image only (95% t CI, paired by seed)")
    _legend_below(fig, axes.flatten(), ncol=3, fontsize=7, frameon=True)
    return fig


def tradeoff_picture(table: pd.DataFrame, targets: Sequence[str], column: str = "probe_acc") -> Figure:
    """Transfer accuracy against source test accuracy over training, one panel per target, one curve per method."""
    fig, axes = _subplots(1, len(targets), 3.6 * len(targets), 3.6)
    for ax, key in zip(axes[0], targets):
        for i, (method, m) in enumerate(table.groupby("method", sort=False)):
            src = m[m.target == "source"].groupby("epoch").test_acc.mean().dropna()
            tgt = m[m.target == key].groupby("epoch")[column].mean()
            both = tgt.index.intersection(src.index)
            if both.empty:
                continue
            x, y = 100 * src.loc[both], 100 * tgt.loc[both]
            ax.plot(x, y, "-o", ms=3, color=TARGET_COLORS[i % 10], label=method)
            ax.plot([x.iloc[-1]], [y.iloc[-1]], "s", ms=7, color=TARGET_COLORS[i % 10])
        _axes(ax, "source test accuracy (%)", f"{PROBE_NAMES.get(column, column)} accuracy on {key} (%)")
        ax.set_title(key)
    _legend_below(fig, [axes[0][0]], ncol=len(table.method.unique()), frameon=True)
    return fig
