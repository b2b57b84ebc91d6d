"""Chapter 4's sweep over the image-metadata interaction level: end-to-end fusion networks, frozen heads and the
Bayes reference, per seed. Frozen heads read the (level, seed) ``image_only`` network on ``heldout`` images it never
trained on; results are cached in the runs' folders.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .. import stats
from ..dispatch import dispatch
from ..config import FusionTrainConfig
from ..results import findings
from ..runs import Run, RunStore
from . import ch4_fusion as ft

#: The backbone of the frozen heads at each level and seed.
BACKBONE_METHOD = "image_only"
#: Labels of the modes and of the Bayes reference in tables and figures.
MODES = ("frozen", "end to end")
BAYES = "bayes_reference"
LABELS = {**ft.METHOD_LABELS, BAYES: "Bayes reference: image-only head x exact p(m | y)"}

Key = tuple[float, int, str]


def sweep_configs(base: FusionTrainConfig, levels: Sequence[float], seeds: Sequence[int],
                  methods: Sequence[str]) -> dict[Key, FusionTrainConfig]:
    """{(level, seed, method): ``base`` with that method and seed, metadata interaction = level, draw_seed = seed}."""
    if not levels or not seeds or not methods:
        raise ValueError(f"levels, seeds and methods must be non-empty, got {list(levels)!r}, {list(seeds)!r}, "
                         f"{list(methods)!r}")
    if BACKBONE_METHOD not in methods:
        raise ValueError(f"e2e_methods must include {BACKBONE_METHOD!r} (the frozen heads' backbone), got "
                         f"{list(methods)!r}")
    return {(float(a), int(s), m): base.replace(method=m, seed=int(s),
                                                metadata={**base.metadata, "interaction": float(a),
                                                          "draw_seed": int(s)})
            for a in levels for s in seeds for m in methods}


def train_sweep(configs: dict[Key, FusionTrainConfig], *, backend: str = "serial", workers: int | None = None,
                store: RunStore | None = None, device: torch.device | str | None = None) -> dict[Key, Run]:
    """Train what is missing (through :func:`ctcbook.dispatch.dispatch`: finished runs are reused, interrupted ones
    resume, ``local`` runs several side by side) and return {key: finished run}."""
    runs = dispatch(list(configs.values()), backend=backend, workers=workers, store=store, device=device)
    return dict(zip(configs, runs))


def e2e_results(runs: dict[Key, Run]) -> pd.DataFrame:
    """One row per end-to-end run: mode, level, seed, method, test_acc (last epoch), train_seconds (all epochs)."""
    rows = []
    for (a, s, m), run in runs.items():
        metrics = run.metrics()
        rows.append({"mode": "end to end", "level": a, "seed": s, "method": m, "test_acc": metrics[-1]["test_acc"],
                     "train_seconds": float(sum(r["train_seconds"] for r in metrics))})
    return pd.DataFrame(rows)


def frozen_experiments(runs: dict[Key, Run], settings: ft.HeadSettings, heldout: int | None,
                       device: torch.device | str = "cpu") -> dict[tuple[float, int], ft.FusionExperiment]:
    """{(level, seed): the heads' experiment on the frozen features of that level and seed's image-only run}."""
    return {(a, s): ft.FusionExperiment(run, ft.fusion_data_from_e2e(run, device, heldout=heldout), settings)
            for (a, s, m), run in runs.items() if m == BACKBONE_METHOD}


def frozen_results(exps: dict[tuple[float, int], ft.FusionExperiment], methods: Sequence[str], *,
                   progress: bool = True) -> pd.DataFrame:
    """Every head of ``methods`` (head seed = the level's seed) plus the Bayes reference, one row each: mode,
    level, seed, method, test_acc, train_seconds, n_params. Heads are trained once and cached."""
    frames = []
    todo = any(exp.missing(methods, [s]) for (a, s), exp in exps.items())   # no bar when everything is cached
    for (a, s), exp in tqdm(exps.items(), desc="frozen heads per (level, seed)", disable=not progress or not todo,
                            unit="backbone"):
        r = exp.results(methods, [s], progress=False)
        image = "image_mlp" if "image_mlp" in methods else "image_only" if "image_only" in methods else None
        if image is not None:
            bayes = ft.bayes_ceiling(exp, [s], image)
            r = pd.concat([r, pd.DataFrame({"method": BAYES, "seed": s, "test_acc": bayes.test_acc / 100,
                                            "train_seconds": 0.0, "n_params": 0})], ignore_index=True)
        frames.append(r.assign(mode="frozen", level=a))
    return pd.concat(frames, ignore_index=True)


def _accs(results: pd.DataFrame, mode: str, level: float, method: str) -> dict[int, float]:
    """seed -> top-1 (%) of one cell."""
    rows = results[(results["mode"] == mode) & (results.level == level) & (results.method == method)]
    return {int(s): float(v) * 100 for s, v in zip(rows.seed, rows.test_acc)}


def _mean(results: pd.DataFrame, mode: str, level: float, method: str) -> float:
    """Seed-mean top-1 (%) of one cell."""
    return np.mean(list(_accs(results, mode, level, method).values()))


def sweep_table(results: pd.DataFrame, labels: dict[str, str] = LABELS) -> pd.DataFrame:
    """Top-1 (%) per (mode, method) row and interaction level column: "mean ± std (n)" over seeds (std ddof 1)."""
    levels = sorted(results.level.unique())
    rows = []
    for mode in [m for m in MODES if m in set(results["mode"])]:
        sub = results[results["mode"] == mode]
        order = [m for m in (*ft.ALL_METHODS, BAYES) if m in set(sub.method)]
        for method in order:
            row = {"training": mode, "method": labels.get(method, method)}
            for a in levels:
                v = np.array(list(_accs(results, mode, a, method).values()))
                row[f"a = {a:g}"] = ("" if len(v) == 0 else f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1
                                     else f"{v.mean():.2f}")
            rows.append(row)
    return pd.DataFrame(rows)


def gains(results: pd.DataFrame, mode: str, method: str, over: str) -> pd.DataFrame:
    """Per level: the mean over seeds of ``method`` minus ``over`` (points, paired by seed) with its 95% t
    interval; columns level, mean, low, high, n."""
    rows = []
    for a in sorted(results.level.unique()):
        a_m, a_o = _accs(results, mode, a, method), _accs(results, mode, a, over)
        if a_m and a_o:
            iv = stats.paired_interval(a_m, a_o)
            rows.append({"level": a, "mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n})
    return pd.DataFrame(rows)


def findings_markdown(results: pd.DataFrame) -> str:
    """The findings from the per-seed ``results``, each comparison paired by seed and judged on its interval."""
    levels = sorted(results.level.unique())
    lo, hi = levels[0], levels[-1]
    frozen = results[results["mode"] == "frozen"]
    if frozen.empty or not {"image_only", "dynamic_mlp_c"} <= set(frozen.method):
        raise ValueError("results need frozen image_only and dynamic_mlp_c rows")
    simple = [m for m in ("concat", "add", "multiply", "geo_prior") if m in set(frozen.method)]
    items = []

    def diff(mode, a, m, o, quantity, pos="Dynamic MLP-C is better", neg="Dynamic MLP-C is worse"):
        return stats.verdict(stats.paired_interval(_accs(results, mode, a, m), _accs(results, mode, a, o)),
                             quantity=quantity, positive=pos, negative=neg).text

    if simple:
        best = max(simple, key=lambda m: _mean(results, "frozen", lo, m))
        items.append(f"At interaction {lo:g} (frozen heads): "
                     + diff("frozen", lo, "dynamic_mlp_c", best,
                            f"Dynamic MLP-C minus the best simple fusion ({LABELS[best]})") + ".")
    for mode in [m for m in MODES if m in set(results["mode"])]:
        have = set(results[results["mode"] == mode].method)
        if "mlp_concat" in have and "dynamic_mlp_c" in have:
            items.append(f"Against the MLP on [x; e] with as many parameters ({mode}): "
                         + "; ".join(f"at interaction {a:g}, "
                                     + diff(mode, a, "dynamic_mlp_c", "mlp_concat",
                                            "Dynamic MLP-C minus the parameter-matched MLP")
                                     for a in sorted({lo, hi})) + ".")
    if BAYES in set(frozen.method):
        head = "image-only MLP head" if "image_mlp" in set(frozen.method) else "linear image-only head"
        items.append(f"At interaction {lo:g}, the Bayes reference ({head} x exact metadata likelihood) "
                     f"reaches {_mean(results, 'frozen', lo, BAYES):.2f}% and Dynamic MLP-C "
                     f"{_mean(results, 'frozen', lo, 'dynamic_mlp_c'):.2f}%: "
                     + diff("frozen", lo, "dynamic_mlp_c", BAYES, "Dynamic MLP-C minus the Bayes reference",
                            "Dynamic MLP-C is above it", "Dynamic MLP-C is below it") + ".")
    for mode in [m for m in MODES if m in set(results["mode"])]:
        have = set(results[results["mode"] == mode].method)
        if "concat" in have and "dynamic_mlp_c" in have:
            items.append(f"At interaction {hi:g} ({mode}): "
                         + diff(mode, hi, "dynamic_mlp_c", "concat", "Dynamic MLP-C minus concatenation") + ".")
            lead = {a: {s: v - _accs(results, mode, a, "concat")[s]
                        for s, v in _accs(results, mode, a, "dynamic_mlp_c").items()} for a in (lo, hi)}
            items.append(f"Does Dynamic MLP-C's lead over concatenation grow with the interaction ({mode})? "
                         + stats.verdict(stats.paired_interval(lead[hi], lead[lo]),
                                         quantity=f"its lead at {hi:g} minus its lead at {lo:g}",
                                         positive="it grows", negative="it shrinks").text + ".")
    e2e = results[results["mode"] == "end to end"]
    if not e2e.empty and "dynamic_mlp_c" in set(e2e.method):
        items.append(f"End to end against frozen heads, Dynamic MLP-C at interaction {hi:g}: "
                     + stats.verdict(stats.paired_interval(_accs(results, "end to end", hi, "dynamic_mlp_c"),
                                                           _accs(results, "frozen", hi, "dynamic_mlp_c")),
                                     quantity="end to end minus frozen", positive="end to end is better",
                                     negative="end to end is worse").text + ".")
    return findings(items)


def per_class_sentence(per_class: pd.DataFrame, confusable: Sequence[str], method: str = "dynamic_mlp_c") -> str:
    """What the per-class table says about where the gain comes from, computed (not assumed): the three classes
    that gain most and the mean gain of the confusable classes against the others."""
    g = (per_class[method] - per_class["image_only"]).sort_values(ascending=False)   # points, largest first
    top = ", ".join(f"{name} ({v:+.1f})" for name, v in g.head(3).items())
    conf = [c for c in g.index if c in set(confusable)]
    rest = [c for c in g.index if c not in set(confusable)]
    words = (f"The largest per-class gains of {LABELS.get(method, method)} over image only are {top} points.")
    if conf and rest:
        c, r = g[conf].mean(), g[rest].mean()
        words += (f" The confusable classes ({', '.join(conf)}) gain {c:+.1f} points on average, the others "
                  f"{r:+.1f}: the confusable classes gain {'more' if c > r else 'less'} than the rest.")
    return words


def per_class(exps: dict[tuple[float, int], ft.FusionExperiment], level: float, methods: Sequence[str]
              ) -> pd.DataFrame:
    """Test top-1 (%) per class (rows, in class order) and method (columns) at ``level``, the mean over the
    level's seeds (each seed its own backbone, metadata draw and heads)."""
    frames = [ft.per_class_accuracy(exp, methods, [s]) for (a, s), exp in exps.items() if a == level]
    if not frames:
        raise ValueError(f"no frozen experiment at interaction level {level!r}")
    return sum(frames[1:], frames[0]) / len(frames)


def paper_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The public code's iNat21-mini numbers beside ours (image only and Dynamic MLP-C per level, seed means)."""
    rows = [{"setting": f"paper: iNat21 mini, {net}, end to end, 90 epochs", "image only (%)": a,
             "Dynamic MLP-C (%)": b, "gain (points)": round(b - a, 3)} for net, a, b in ft.PAPER_INAT21_MINI]
    mode = "end to end" if "end to end" in set(results["mode"]) else "frozen"
    for a in sorted(results.level.unique()):
        img, c = _mean(results, mode, a, "image_only"), _mean(results, mode, a, "dynamic_mlp_c")
        rows.append({"setting": f"ours: Fashion-MNIST + simulated metadata, interaction {a:g}, {mode}",
                     "image only (%)": round(img, 2), "Dynamic MLP-C (%)": round(c, 2),
                     "gain (points)": round(c - img, 2)})
    return pd.DataFrame(rows)
