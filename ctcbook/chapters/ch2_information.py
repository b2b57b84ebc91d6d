"""Chapter 2: I(X;T) and I(T;Y) of saved checkpoints (bits), their nulls, the features' geometry, the mechanism.

X is the normalised input, T a layer's output, Y the labels, from a fixed stratified sample of a test split
(``"source"`` or a target). Each (run, split, settings) has a JSON-lines cache in ``evals/``, appended as computed,
so a re-execution recomputes nothing and an interrupted pass resumes.
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm import tqdm

from .. import stats
from ..results import findings, panel as results_panel, robust_text, val_size
from ..data import ImageSet, stream, subsample
from ..estimators import (PENULTIMATE, MineSettings, PAPER_MINE_TY, PAPER_MINE_XT, activations, gaussian_gram,
                          kernel_width, label_gram, layer_names, mine, one_hot, renyi_entropy, renyi_null)
from ..geometry import effective_rank, nc1
from ..stats import (Correlation, bootstrap_correlation, mechanism_verdict, peak_index, selected_drop, sign,
                     t_interval, verdict)
from ..runs import Run, append_jsonl, read_jsonl
from ..targets import TARGETS, probe_epochs, run_target
from ..train import default_device, load_model, source_data
from ..config import TrainConfig

#: Part of each cache's key: bump one when its rows change.
INFO_VERSION = 1
MINE_VERSION = 2
GEOMETRY_VERSION = 1
NULL_VERSION = 1
#: Points kept of each MINE convergence curve in the cache.
TRACE_POINTS = 250
#: A MINE fit has converged when, over the last MINE_WINDOW of its steps, the mean of the second half differs from the
#: first half's by at most MINE_TOL of it (I(X;T) and I(T;Y), every restart): else a longer fit reports another value.
MINE_WINDOW, MINE_TOL = 0.2, 0.05
ESTIMATORS = ("renyi", "mine")
#: The Renyi order (the estimators' default), part of the cache keys.
ALPHA = 1.01
#: Renyi kernel widths, x the rule's (1: the book's), at which the mechanism is recomputed; fixed before any was seen.
KERNEL_SCALES = (0.5, 1.0, 2.0)
#: Where the geometry of the source is measured: its un-augmented training set (targets: their test splits).
GEOMETRY_SOURCE = "source_train"

#: MINE shrunk for a 2-core CPU: the paper's depth (3 hidden layers) at 64 units instead of 1024, 500 steps of batch 256
#: instead of 1e4 / 2e4 of 5,000, lr 1e-3 (not 8e-5 / 1e-5) so so few steps move. tests/test_estimators.py shows
#: settings of this size recover the MI of correlated Gaussians.
CPU_MINE = MineSettings(hidden=64, layers=3, lr=1e-3, iterations=500, batch_size=256, smoothing=100)
#: Named MINE settings: ``"cpu"`` (default), ``"paper"`` (GPU profiles), ``"smoke"`` (CI only: its values mean nothing).
SMOKE_MINE = MineSettings(hidden=16, layers=2, lr=1e-3, iterations=30, batch_size=64, smoothing=10)
MINE_PRESETS: dict[str, tuple[MineSettings, MineSettings]] = {
    "cpu": (CPU_MINE, CPU_MINE), "paper": (PAPER_MINE_XT, PAPER_MINE_TY), "smoke": (SMOKE_MINE, SMOKE_MINE)}


def _check_split(split: str) -> None:
    if split not in ("source", *TARGETS):
        raise ValueError(f"split must be one of {('source', *TARGETS)}, got {split!r}")


def estimator_sample(run: Run, split: str, n: int | None) -> ImageSet:
    """The images and labels of ``split`` the estimates use: ``n`` stratified test images (seed 0; None: all)."""
    _check_split(split)
    if split == "source":
        config = TrainConfig.from_dict(run.config)
        if stream.is_streamed(config.source):  # imagenet: a stratified n of the validation images, from disk
            return stream.load_streamed(config.source, "test", cap=n)
        return subsample(source_data(config)[1], n, seed=0)
    return run_target(run, split, None, n)[1]


def renyi_reference(x: Tensor, labels: Tensor, *, device=None,
                    scale: float = 1.0) -> tuple[Tensor, Tensor, float, float]:
    """The epoch-independent parts of the Renyi estimates: the Gram matrices of X and Y and their entropies (bits)."""
    x = x.to(device or "cpu")
    kx, ky = gaussian_gram(x, scale * kernel_width(x)), label_gram(labels.to(x.device))
    return kx, ky, renyi_entropy(kx), renyi_entropy(ky)


def renyi_plane(ref: tuple[Tensor, Tensor, float, float], ts: dict[str, Tensor],
                scale: float = 1.0) -> dict[str, dict[str, float]]:
    """Matrix-based Renyi I(X;T), I(T;Y) and S(T) in bits for each layer's T, given :func:`renyi_reference`."""
    kx, ky, h_x, h_y = ref
    out = {}
    for name, t in ts.items():
        t = t.to(kx.device)
        kt = gaussian_gram(t, scale * kernel_width(t))
        st = renyi_entropy(kt)
        out[name] = {"i_xt": h_x + st - renyi_entropy(kx * kt), "i_ty": st + h_y - renyi_entropy(kt * ky),
                     "h_t": st, "h_x": h_x, "h_y": h_y}
    return out


def _thin(curve, points: int = TRACE_POINTS) -> list[float]:
    """A per-step curve as at most ``points`` bin means (a convergence curve's shape at a bounded size)."""
    c = np.asarray(curve, dtype=float)
    return [round(float(b.mean()), 5) for b in (np.array_split(c, points) if c.size > points else c)]


def mine_plane(x: Tensor, t: Tensor, labels: Tensor, num_classes: int, settings_xt: MineSettings,
               settings_ty: MineSettings, *, device=None, restart: int = 0, shuffle: bool = False) -> dict:
    """MINE's I(X;T) and I(T;Y) (bits) of one layer's T, seed + ``restart``; ``shuffle``: the null (T permuted)."""
    batch = min(settings_xt.batch_size, settings_ty.batch_size, len(x))
    settings_xt, settings_ty = (dataclasses.replace(s, batch_size=min(s.batch_size, batch), seed=s.seed + restart)
                                for s in (settings_xt, settings_ty))
    if shuffle:
        t = t[torch.randperm(len(t), generator=torch.Generator().manual_seed(1000 + restart))]
    xt = mine(x, t, settings_xt, device=device)
    ty = mine(t, one_hot(labels, num_classes), settings_ty, device=device)
    return {"i_xt": xt.mi_bits, "i_ty": ty.mi_bits, "seconds_xt": xt.seconds, "seconds_ty": ty.seconds,
            "batch": batch, "curve_xt": _thin(xt.curve), "curve_ty": _thin(ty.curve), "steps_xt": len(xt.curve),
            "steps_ty": len(ty.curve)}


def _check_settings(estimator: str, n: int | None, mine_preset: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 2):
        raise ValueError(f"n must be None or an int >= 2, got {n!r}")
    if mine_preset not in MINE_PRESETS:
        raise ValueError(f"mine_preset must be one of {sorted(MINE_PRESETS)}, got {mine_preset!r}")


def _checked_epochs(run: Run, epochs: Sequence[int]) -> list[int]:
    saved = set(run.saved_epochs())
    bad = [e for e in epochs if e not in saved]
    if bad:
        raise ValueError(f"epochs {bad} have no checkpoint in {run.name}; saved: {sorted(saved)}")
    return list(epochs)


def information_curve(run: Run, splits: Sequence[str] = ("source",), *, estimators: Sequence[str] = ("renyi",),
                      every: int = 1, epochs: Sequence[int] | None = None, layers: Sequence[str] | None = None,
                      n: int | None = None, mine_n: int | None = 2000, mine_preset: str = "cpu",
                      mine_restarts: int = 1, scale: float = 1.0, device=None, progress: bool = True) -> pd.DataFrame:
    """I(X;T) and I(T;Y) (bits) at each probed epoch of ``run``, per split and estimator, cached in the run folder.

    Renyi reads ``layers`` (default: all on ``"source"``, the penultimate on targets) on ``n`` images; MINE the
    penultimate, batches from ``mine_n`` images (None: the whole test split, as ``mine.py``), once per restart.
    ``scale``: Renyi's kernel widths x the rule's (cached apart from the book's, 1)."""
    for split in splits:
        _check_split(split)
    for estimator in estimators:
        _check_settings(estimator, n, mine_preset)
    if isinstance(mine_restarts, bool) or not isinstance(mine_restarts, int) or mine_restarts < 1:
        raise ValueError(f"mine_restarts must be an int >= 1, got {mine_restarts!r}")
    if epochs is None:
        epochs = [e for e in probe_epochs(run.config["epochs"], every) if e in set(run.saved_epochs())]
    epochs = _checked_epochs(run, epochs)
    device = torch.device(device) if device is not None else default_device()
    xt, ty = MINE_PRESETS[mine_preset]
    all_layers = layer_names(load_model(run, epochs[0], "cpu")) if epochs else [PENULTIMATE]
    jobs = []   # (split, estimator, layers, n, restarts, cache path, done (epoch, layer, restart))
    for split in splits:
        for estimator in estimators:
            if estimator == "renyi":
                use_n, restarts = (n if n is not None else 1000), 1
                wanted = list(layers) if layers is not None else all_layers if split == "source" else [PENULTIMATE]
                spec = {"split": split, "estimator": "renyi", "n": use_n, "alpha": ALPHA, "version": INFO_VERSION,
                        **({"scale": scale} if scale != 1 else {})}
            else:
                use_n, restarts, wanted = mine_n, mine_restarts, [PENULTIMATE]
                spec = {"split": split, "estimator": "mine", "n": use_n, "xt": dataclasses.asdict(xt),
                        "ty": dataclasses.asdict(ty), "version": MINE_VERSION}
            if not set(wanted) <= set(all_layers):
                raise ValueError(f"layers must be a subset of {all_layers}, got {list(wanted)}")
            path = run.eval_path("information", spec)
            done = {(r["epoch"], r["layer"], r.get("restart", 0)) for r in read_jsonl(path)}
            jobs.append((split, estimator, wanted, use_n, restarts, path, done))

    def missing(job, epoch: int) -> list[str]:
        _, _, wanted, _, restarts, _, done = job
        return [lay for lay in wanted if any((epoch, lay, k) not in done for k in range(restarts))]

    pending = [e for e in epochs if any(missing(job, e) for job in jobs)]
    sets: dict[tuple[str, int | None], ImageSet] = {}
    refs: dict[tuple[str, int | None], tuple] = {}
    for epoch in tqdm(pending, desc=f"information {run.name}", disable=not progress or not pending, unit="epoch"):
        model = load_model(run, epoch, device)
        for job in jobs:
            split, estimator, _, use_n, restarts, path, done = job
            names = missing(job, epoch)
            if not names:
                continue
            key = (split, use_n)
            if key not in sets:
                sets[key] = estimator_sample(run, split, use_n)
            images = sets[key]
            start = time.perf_counter()
            x, ts = activations(model, images.images, names, device=device)
            if estimator == "renyi":
                if key not in refs:
                    refs[key] = renyi_reference(x, images.labels, device=device, scale=scale)
                res = renyi_plane(refs[key], ts, scale)
                per_layer = (time.perf_counter() - start) / len(names)
                for lay in names:
                    append_jsonl(path, {"epoch": epoch, "layer": lay, "n": len(images), "seconds": per_layer,
                                        **res[lay]}, unique=("epoch", "layer"))
                continue
            for k in range(restarts):
                if (epoch, PENULTIMATE, k) in done:
                    continue
                start = time.perf_counter()
                res = mine_plane(x, ts[PENULTIMATE], images.labels, len(images.classes), xt, ty, device=device,
                                 restart=k)
                row = {"epoch": epoch, "layer": PENULTIMATE, "restart": k, "n": len(images),
                       "seconds": time.perf_counter() - start, **res}
                append_jsonl(path, row, unique=("epoch", "layer", "restart"))
    rows = [{"seed": run.config["seed"], "split": split, "estimator": estimator, "restart": 0, **r}
            for split, estimator, wanted, _, restarts, path, _ in jobs for r in read_jsonl(path)
            if r["epoch"] in epochs and r["layer"] in wanted and r.get("restart", 0) < restarts]
    table = pd.DataFrame(rows)
    if len(table):
        table = table.drop_duplicates(["split", "estimator", "epoch", "layer", "restart"], keep="last")
        table = table.sort_values(["split", "estimator", "layer", "epoch", "restart"]).reset_index(drop=True)
    return table


def information_curves(runs: Sequence[Run], splits: Sequence[str] = ("source",), **kwargs) -> pd.DataFrame:
    """:func:`information_curve` of several runs (e.g. seeds), concatenated."""
    frames = [f for run in runs if len(f := information_curve(run, splits, **kwargs))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --------------------------------------------------------------------------------------------------- summaries
def cost_table(info: pd.DataFrame) -> pd.DataFrame:
    """Seconds per checkpoint (mean over epochs and seeds, summed over layers) per estimator and split."""
    per_ckpt = info.groupby(["estimator", "split", "seed", "epoch"]).agg(seconds=("seconds", "sum"), n=("n", "first"),
                                                                         layers=("layer", "nunique")).reset_index()
    return per_ckpt.groupby(["estimator", "split"]).agg(seconds_per_checkpoint=("seconds", "mean"),
                                                        n=("n", "first"), layers=("layers", "max")).reset_index()


def preset_differences(preset: str) -> list[str]:
    """One phrase per field where the MINE ``preset`` differs from the paper's ``mine.py`` settings."""
    _check_settings("mine", None, preset)
    out = []
    for what, ours, paper in (("I(X;T)", MINE_PRESETS[preset][0], PAPER_MINE_XT),
                              ("I(T;Y)", MINE_PRESETS[preset][1], PAPER_MINE_TY)):
        for f in dataclasses.fields(MineSettings):
            a, b = getattr(paper, f.name), getattr(ours, f.name)
            if a != b:
                spec = "," if isinstance(a, int) else "g" if isinstance(a, float) else ""
                out.append(f"{what} {f.name.replace('_', ' ')}: {b:{spec}} here, {a:{spec}} in the paper")
    return out


def penultimate(info: pd.DataFrame, estimator: str, split: str) -> pd.DataFrame:
    """The rows of ``info`` of ``estimator`` on ``split``'s penultimate layer."""
    return info[(info.estimator == estimator) & (info.split == split) & (info.layer == PENULTIMATE)]


def epoch_values(info: pd.DataFrame, table: pd.DataFrame, split: str) -> pd.DataFrame:
    """Seed-mean I(X;T) and I(T;Y) per estimator at the first, transfer-peak (chosen on the seed-mean validation
    accuracy, :func:`~ctcbook.stats.peak_index`) and last epochs of ``split``."""
    rows_ = table[table.target == split]
    acc = rows_.groupby("epoch").probe_acc.mean()
    val = rows_.groupby("epoch").val_acc.mean()
    peak = int(val.index[peak_index(val.to_numpy(), val_size(rows_))])
    rows = []
    for est in sorted(info.estimator.unique()):
        m = penultimate(info, est, split).groupby("epoch")[["i_xt", "i_ty"]].mean()   # over seeds and restarts
        if m.empty:
            continue
        epochs = m.index.to_numpy()
        picks = {"first": int(epochs.min()), "transfer peak": int(epochs[np.argmin(np.abs(epochs - peak))]),
                 "final": int(epochs.max())}
        for label, e in picks.items():
            rows.append({"estimator": est, "split": split, "point": label, "epoch": e, "i_xt": float(m.i_xt[e]),
                         "i_ty": float(m.i_ty[e]), "probe_acc": 100 * float(acc.get(e, np.nan))})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ feature geometry
def geometry_curve(run: Run, splits: Sequence[str], epochs: Sequence[int], *, test_size: int | None = None,
                   device=None, progress: bool = True) -> pd.DataFrame:
    """NC1 and effective rank of the penultimate features at each of ``epochs``, per split, cached in the run folder."""
    epochs = _checked_epochs(run, epochs)
    for split in splits:   # validate every split before any work
        if split != GEOMETRY_SOURCE and split not in TARGETS:
            raise ValueError(f"split must be {GEOMETRY_SOURCE!r} or one of {sorted(TARGETS)}, got {split!r}")
    device = torch.device(device) if device is not None else default_device()
    paths = {split: run.eval_path("geometry", {"split": split, "test_size": None if split == GEOMETRY_SOURCE
                                               else test_size, "version": GEOMETRY_VERSION}) for split in splits}
    done = {split: {r["epoch"] for r in read_jsonl(path)} for split, path in paths.items()}
    pending = [e for e in epochs if any(e not in done[s] for s in splits)]
    sets: dict[str, ImageSet] = {}
    for epoch in tqdm(pending, desc=f"geometry {run.name}", disable=not progress or not pending, unit="epoch"):
        model = load_model(run, epoch, device)
        for split in (s for s in splits if epoch not in done[s]):
            if split not in sets:
                sets[split] = (source_data(TrainConfig.from_dict(run.config))[0] if split == GEOMETRY_SOURCE
                               else run_target(run, split, None, test_size)[1])
            images = sets[split]
            start = time.perf_counter()
            feats = activations(model, images.images, [PENULTIMATE], device=device)[1][PENULTIMATE]
            append_jsonl(paths[split], {"epoch": epoch, "nc1": nc1(feats, images.labels),
                                        "eff_rank": effective_rank(feats), "n": len(images),
                                        "seconds": time.perf_counter() - start}, unique=("epoch",))
    rows = [{"seed": run.config["seed"], "split": split, **r} for split, path in paths.items()
            for r in read_jsonl(path) if r["epoch"] in set(epochs)]
    out = pd.DataFrame(rows)
    return out.sort_values(["split", "epoch"]).reset_index(drop=True) if len(out) else out


def geometry_curves(runs: Sequence[Run], splits: Sequence[str], epochs: Sequence[int], **kwargs) -> pd.DataFrame:
    """:func:`geometry_curve` of several runs (seeds), concatenated."""
    return pd.concat([geometry_curve(run, splits, epochs, **kwargs) for run in runs], ignore_index=True)


# ---------------------------------------------------------------------------------------------- null baselines
def null_baseline(run: Run, split: str, estimator: str, *, n: int | None = 1000, mine_n: int | None = 2000,
                  mine_preset: str = "cpu", restarts: int = 1, shuffles: int = 3, device=None) -> pd.DataFrame:
    """The estimator on independent pairs (T's rows permuted) at the last epoch with ``split``'s settings, cached:
    Renyi one row (mean and SD over ``shuffles``), MINE one per restart."""
    _check_split(split)
    _check_settings(estimator, n, mine_preset)
    epoch = run.saved_epochs()[-1]
    xt, ty = MINE_PRESETS[mine_preset]
    if estimator == "renyi":
        spec = {"split": split, "estimator": "renyi", "n": n, "alpha": ALPHA, "shuffles": shuffles, "epoch": epoch,
                "version": NULL_VERSION}
        keys = [0]
    else:
        spec = {"split": split, "estimator": "mine", "n": mine_n, "xt": dataclasses.asdict(xt),
                "ty": dataclasses.asdict(ty), "epoch": epoch, "version": NULL_VERSION}
        keys = list(range(restarts))
    path = run.eval_path("information_null", spec)
    todo = [k for k in keys if k not in {r["restart"] for r in read_jsonl(path)}]
    if todo:
        device = torch.device(device) if device is not None else default_device()
        images = estimator_sample(run, split, n if estimator == "renyi" else mine_n)
        x, ts = activations(load_model(run, epoch, device), images.images, [PENULTIMATE], device=device)
        for k in todo:
            if estimator == "renyi":
                res = renyi_null(x, ts[PENULTIMATE], images.labels, shuffles=shuffles)
                row = {"i_xt": res.i_xt, "i_ty": res.i_ty, "i_xt_sd": res.i_xt_sd, "i_ty_sd": res.i_ty_sd}
            else:
                res = mine_plane(x, ts[PENULTIMATE], images.labels, len(images.classes), xt, ty, device=device,
                                 restart=k, shuffle=True)
                row = {"i_xt": res["i_xt"], "i_ty": res["i_ty"]}
            append_jsonl(path, {"restart": k, "n": len(images), **row}, unique=("restart",))
    rows = [{"seed": run.config["seed"], "split": split, "estimator": estimator, "epoch": epoch, **r}
            for r in read_jsonl(path) if r["restart"] in keys]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------- the mechanism, tested
def mine_drift(curve: Sequence[float]) -> float:
    """A MINE trace's relative change over its last MINE_WINDOW: |second half's mean - first's| / |second's|."""
    c = np.asarray(curve, dtype=float)
    k = max(1, round(len(c) * MINE_WINDOW / 2))
    return float(abs(c[-k:].mean() - c[-2 * k:-k].mean()) / abs(c[-k:].mean())) if len(c) >= 2 else math.inf


def mine_convergence(info: pd.DataFrame) -> pd.DataFrame:
    """Per MINE checkpoint (split, seed, epoch) of ``info``: each trace's largest :func:`mine_drift` over restarts."""
    m = info[info.estimator == "mine"]
    m = m.assign(drift_xt=m.curve_xt.map(mine_drift), drift_ty=m.curve_ty.map(mine_drift))
    out = m.groupby(["split", "seed", "epoch"]).agg(restarts=("restart", "nunique"), drift_xt=("drift_xt", "max"),
                                                    drift_ty=("drift_ty", "max")).reset_index()
    return out.assign(converged=out[["drift_xt", "drift_ty"]].max(axis=1) <= MINE_TOL)


def converged_only(info: pd.DataFrame, conv: pd.DataFrame) -> pd.DataFrame:
    """``info`` without the MINE rows of checkpoints that miss the convergence criterion (``conv``)."""
    keys = ["split", "seed", "epoch"]
    bad = pd.MultiIndex.from_frame(conv.loc[~conv.converged.astype(bool), keys])
    return info[~((info.estimator == "mine").to_numpy() & pd.MultiIndex.from_frame(info[keys]).isin(bad))]


def convergence_text(conv: pd.DataFrame, results: Sequence[dict]) -> str:
    """How many MINE checkpoints meet the criterion, that the others are left out, and whether MINE gives a verdict."""
    ok, on = int(conv.converged.sum()), [f"`{r['target']}`" for r in results if r["estimator"] == "mine"]
    return (f"{ok} of {len(conv)} MINE checkpoints meet the convergence criterion" + (
        f"; the rest ({len(conv) - ok}) are left out of every MINE number, figure and verdict" if ok < len(conv)
        else "") + (f"; MINE's verdicts (Table 1) rest on converged checkpoints only: {', '.join(on)}" if on else
                    "; that leaves MINE no verdict: on this page it is exploratory"))


def restart_mean(info: pd.DataFrame) -> pd.DataFrame:
    """The mean ``i_xt`` and ``i_ty`` over MINE restarts per (seed, split, estimator, epoch, layer)."""
    keys = ["seed", "split", "estimator", "epoch", "layer"]
    return info.groupby(keys)[["i_xt", "i_ty"]].mean().reset_index()


def _seed_curves(info: pd.DataFrame, table: pd.DataFrame, estimator: str, key: str, test: str = "probe_acc",
                 val: str = "val_acc"):
    """seed -> (epochs, validation accuracy, probe test accuracy, I(X;T)) at the epochs both were measured (>= 2)."""
    g = restart_mean(penultimate(info, estimator, key))
    t = table[table.target == key]
    out = {}
    for seed, gi in g.groupby("seed"):
        ti = t[(t.seed == seed) & t[val].notna()].set_index("epoch") if val in t else pd.DataFrame()
        gi = gi.set_index("epoch")
        common = sorted(set(gi.index) & set(ti.index))
        if len(common) >= 2:
            out[int(seed)] = (common, ti.loc[common, val].to_numpy(float), ti.loc[common, test].to_numpy(float),
                              gi.loc[common, "i_xt"].to_numpy(float))
    return out


def mechanism_panel(info: pd.DataFrame, table: pd.DataFrame, targets: Sequence[str],
                    estimator: str = "renyi") -> dict[str, stats.Robustness]:
    """The mechanism's two intervals per target (transfer's late drop, I(X;T)'s fall over the same epochs) under
    every analysis variant (:func:`ctcbook.results.panel`)."""
    def estimate(t, test, val, rule):
        out = {}
        for key in targets:
            if curves := _seed_curves(info, t, estimator, key, test, val):
                m = mechanism_verdict(curves, n_val=val_size(t[t.target == key]), target=key, rule=rule)
                out[f"late drop on {key} ({estimator})"] = m.transfer
                out[f"fall of I(X;T) on {key} ({estimator}, bits)"] = m.compression
        return out
    return results_panel(table, estimate, decimals=3)


def mechanism(info: pd.DataFrame, table: pd.DataFrame, targets: Sequence[str],
              estimator: str = "renyi") -> list[dict]:
    """Per target: the mechanism verdict, the late-phase correlation of I(X;T) with probe accuracy, and its controls."""
    out = []
    for key in targets:
        curves = _seed_curves(info, table, estimator, key)
        if not curves:
            continue
        mech = mechanism_verdict(curves, n_val=val_size(table[table.target == key]), target=f"`{key}`")
        xs, ys = {}, {}
        for s, (e, _, test, ixt) in curves.items():
            i = list(e).index(mech.peak_epochs[s])
            if len(e) - i >= 2:
                xs[s], ys[s] = ixt[i:], 100 * test[i:]
        corr = bootstrap_correlation(xs, ys) if xs else None
        out.append({"target": key, "estimator": estimator, "seeds": len(curves),
                    "epochs": list(next(iter(curves.values()))[0]), "mechanism": mech, "correlation": corr,
                    "late_seeds": len(xs), "controls": controls(curves, table),
                    "last_epochs": {s: int(c[0][-1]) for s, c in curves.items()}})
    return out


def width_info(runs: Sequence[Run], result: dict, *, n: int, device=None) -> pd.DataFrame:
    """Renyi estimates on ``result``'s target at each seed's peak and last epochs, at KERNEL_SCALES other than 1."""
    peaks, last = result["mechanism"].peak_epochs, result["last_epochs"]
    return pd.concat([information_curve(run, [result["target"]], epochs=sorted({peaks[s], last[s]}), n=n, scale=k,
                                        layers=[PENULTIMATE], device=device, progress=False).assign(scale=k)
                      for run in runs if (s := run.config["seed"]) in peaks for k in KERNEL_SCALES if k != 1])


def width_table(result: dict, info: pd.DataFrame, widths: pd.DataFrame) -> pd.DataFrame:
    """The mechanism's fall of I(X;T) (bits) and verdict at each of KERNEL_SCALES (``widths``: :func:`width_info`)."""
    m, last, rows = result["mechanism"], result["last_epochs"], []
    for k in KERNEL_SCALES:
        at = restart_mean(penultimate(info if k == 1 else widths[widths.scale == k], result["estimator"],
                                      result["target"])).set_index(["seed", "epoch"]).i_xt
        iv = t_interval({s: at[s, p] - at[s, last[s]] for s, p in m.peak_epochs.items()})
        yes = sign(m.transfer) > 0 and sign(iv) > 0
        rows.append({"kernel width (x the rule's)": f"{k:g}", "fall of I(X;T), peak to last epoch (bits)":
                     _signed(iv.mean, iv.low, iv.high, 3), "coincides": "yes" if yes else "no"})
    return pd.DataFrame(rows)


def width_text(widths: pd.DataFrame) -> str:
    """Whether the mechanism's verdict holds at every kernel width of :func:`width_table`."""
    at = {v: ", ".join(f"{k}x" for k in g.iloc[:, 0]) for v, g in widths.groupby("coincides")}
    if len(at) == 1:
        v, where = at.popitem()
        return f"the verdict (coincides: {v}) holds at every kernel width tried ({where} the rule's)"
    return (f"the verdict depends on the kernel width: the fall of I(X;T) co-occurs with the fall of transfer at "
            f"{at['yes']} the rule's width, not at {at['no']}, so it is not a robust reading of the estimator")


def controls(curves: dict, table: pd.DataFrame) -> dict[str, Correlation] | None:
    """Negative controls over every probed epoch, within seed: transfer and I(X;T) each against the epoch and the
    learning rate, transfer against I(X;T), and that correlation partial on the epoch (None with < 3 epochs)."""
    src = table[table.target == "source"].set_index(["seed", "epoch"])
    seeds = [s for s, c in curves.items() if len(c[0]) >= 3]
    if not seeds:
        return None
    epoch = {s: np.asarray(curves[s][0], dtype=float) for s in seeds}
    transfer = {s: 100 * curves[s][2] for s in seeds}
    ixt = {s: curves[s][3] for s in seeds}
    out = {"transfer ~ epoch": bootstrap_correlation(transfer, epoch),
           "I(X;T) ~ epoch": bootstrap_correlation(ixt, epoch)}
    if "lr" in src:
        lr = {s: src.loc[[(s, int(e)) for e in curves[s][0]], "lr"].to_numpy(float) for s in seeds}
        out["transfer ~ lr"] = bootstrap_correlation(transfer, lr)
        out["I(X;T) ~ lr"] = bootstrap_correlation(ixt, lr)
    out["transfer ~ I(X;T)"] = bootstrap_correlation(transfer, ixt)
    out["transfer ~ I(X;T) | epoch"] = bootstrap_correlation(transfer, ixt, given=epoch)
    return out


def _excludes_zero(c: Correlation) -> bool:
    return math.isfinite(c.low) and (c.low > 0 or c.high < 0)


def controls_text(c: dict[str, Correlation] | None) -> str:
    """The controls in words: is the association of transfer with I(X;T) more than their shared trend over epochs?"""
    if c is None:
        return "no seed has three or more probed epochs with an estimate: no controls"
    shown = "; ".join(f"{name} r = {v.r:+.2f} [{v.low:+.2f}, {v.high:+.2f}]" for name, v in c.items())
    raw, partial = c["transfer ~ I(X;T)"], c["transfer ~ I(X;T) | epoch"]
    if not _excludes_zero(raw):
        reading = "transfer and I(X;T) are not associated beyond the seeds' spread over the whole curve"
    elif _excludes_zero(partial) and np.sign(partial.r) == np.sign(raw.r):
        reading = "their association survives the control for the epoch (the partial correlation excludes 0)"
    else:
        reading = ("the control flags it: given the epoch their partial correlation is indistinguishable from 0, so "
                   "the association is what a shared trend over training predicts")
    return (f"negative controls over every probed epoch (within seed, bootstrap 95% CI over seeds): {shown}: "
            f"{reading}")


def correlation_text(corr: Correlation | None, late_seeds: int, seeds: int) -> str:
    """The late-phase correlation in words, with its bootstrap interval."""
    if corr is None:
        return "no seed has two or more probed epochs after its transfer peak: no late-phase correlation"
    if late_seeds < 2 or not math.isfinite(corr.low):
        return (f"late-phase correlation of I(X;T) with probe accuracy r = {corr.r:+.2f} on {late_seeds} of {seeds} "
                f"seeds (no interval: fewer than 2 seeds have a late phase)")
    return (f"late-phase correlation of I(X;T) with probe accuracy (within seed, pooled) r = {corr.r:+.2f}, "
            f"{round(100 * corr.level)}% bootstrap CI over seeds [{corr.low:+.2f}, {corr.high:+.2f}] on "
            f"{late_seeds} of {seeds} seeds; the paper's account predicts r > 0")


def _signed(mean: float, low: float, high: float, decimals: int) -> str:
    return f"{mean:+.{decimals}f} [{low:+.{decimals}f}, {high:+.{decimals}f}]"


def mechanism_table(results: Sequence[dict], changes: Sequence[dict] = ()) -> pd.DataFrame:
    """The mechanism results as a table with human column names (points, bits), with the target's NC1 change."""
    rows, nc = [], {c["target"]: c["intervals"]["nc1_target"] for c in changes}
    for r in results:
        m, c = r["mechanism"], r["correlation"]
        p = r["controls"]["transfer ~ I(X;T) | epoch"] if r["controls"] else None
        rows.append({"estimator": r["estimator"], "target": r["target"], "seeds": r["seeds"],
                     "late drop of transfer (points)": _signed(m.transfer.mean, m.transfer.low, m.transfer.high, 2),
                     "fall of I(X;T), same epochs (bits)": _signed(m.compression.mean, m.compression.low,
                                                                   m.compression.high, 3),
                     "late-phase r [bootstrap CI]": "n/a" if c is None else
                     _signed(c.r, c.low, c.high, 2) if math.isfinite(c.low) else f"{c.r:+.2f}",
                     "r given the epoch, all epochs": "n/a" if p is None else _signed(p.r, p.low, p.high, 2),
                     "coincides": "yes" if m.coincides else "no", "NC1 of the target, peak minus last": "n/a"
                     if (iv := nc.get(r["target"])) is None else _signed(iv.mean, iv.low, iv.high, 3)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- geometry over the late phase
def _seeds_with_peaks(geom: pd.DataFrame, table: pd.DataFrame, split: str):
    """Per seed with >= 2 epochs of target and source geometry and probe: rows, those epochs, the validation peak."""
    for seed, gt in geom[geom.split == split].groupby("seed"):
        t = table[(table.target == split) & (table.seed == seed) & table["val_acc"].notna()].set_index("epoch")
        gs = geom[(geom.split == GEOMETRY_SOURCE) & (geom.seed == seed)].set_index("epoch")
        gt = gt.set_index("epoch")
        common = sorted(set(gt.index) & set(t.index) & set(gs.index))
        if len(common) < 2:
            continue
        peak = selected_drop(common, t.loc[common, "val_acc"].to_numpy(float),
                             t.loc[common, "probe_acc"].to_numpy(float), val_size(t)).peak_epoch
        yield seed, gt, gs, t, common, peak


def geometry_change(geom: pd.DataFrame, table: pd.DataFrame, targets: Sequence[str]) -> list[dict]:
    """Per target: NC1 and effective rank at each seed's validation-selected transfer peak minus at the last epoch."""
    out = []
    for key in targets:
        per = {"nc1_target": {}, "nc1_source": {}, "rank_target": {}}
        peaks = {}
        for seed, gt, gs, _, common, p in _seeds_with_peaks(geom, table, key):
            last = common[-1]
            peaks[int(seed)] = p
            per["nc1_target"][int(seed)] = float(gt.nc1[p] - gt.nc1[last])
            per["nc1_source"][int(seed)] = float(gs.nc1[p] - gs.nc1[last])
            per["rank_target"][int(seed)] = float(gt.eff_rank[p] - gt.eff_rank[last])
        if not peaks:
            continue
        collapse = ("they collapse further after the peak", "they spread out after the peak")
        names = {"nc1_target": (f"NC1 of `{key}` test features, transfer peak minus last epoch", *collapse),
                 "nc1_source": ("NC1 of the source training features over the same epochs", *collapse),
                 "rank_target": (f"effective rank of `{key}` features, transfer peak minus last epoch",
                                 "fewer directions are used after the peak", "more directions are used after the peak")}
        ivs = {k: t_interval(v) for k, v in per.items()}
        verdicts = {}
        for k, (quantity, positive, negative) in names.items():
            v = verdict(ivs[k], quantity=quantity, unit="", decimals=3, positive=positive, negative=negative)
            verdicts[k] = dataclasses.replace(v, text=v.text.replace(" , ", ", "),   # no space for the empty unit
                                              numbers=v.numbers.replace(" , ", ", "))
        out.append({"target": key, "seeds": len(peaks), "peak_epochs": peaks, "intervals": ivs,
                    "verdicts": verdicts})
    return out


def nc1_weighed(change: dict, results: Sequence[dict]) -> str:
    """The target NC1 change after the transfer peak weighed against the mechanism (which predicts collapse)."""
    v, key = change["verdicts"]["nc1_target"], change["target"]
    held = ", ".join(r["estimator"] for r in results if r["target"] == key and r["mechanism"].coincides)
    if v.sign > 0:
        return (f"{v.numbers}: in the direction the mechanism predicts (the features collapse further while transfer "
                f"falls), " + (f"consistent with the co-occurrence in Table 1 ({held})" if held else
                               "but Table 1 does not confirm the mechanism, and collapse alone does not"))
    if v.sign < 0:
        return (f"{v.numbers}: against the mechanism (the features spread out after the peak, the opposite of the "
                f"collapse compression predicts); " + (f"so the fall of I(X;T) in Table 1 ({held}) is not a collapse "
                f"of these features, which weakens that co-occurrence as evidence of over-compression" if held else
                                                        "it adds to Table 1, where the mechanism is not confirmed"))
    return f"{v.numbers}: inconclusive (the interval contains 0), neither for nor against the mechanism"


def geometry_points(geom: pd.DataFrame, table: pd.DataFrame, split: str) -> pd.DataFrame:
    """Seed means of the geometry of ``split`` (a target) at the first epoch, the transfer peak and the last epoch."""
    rows = []
    for _, g, gs, t, common, peak in _seeds_with_peaks(geom, table, split):
        for label, e in (("first epoch", common[0]), ("transfer peak (validation)", peak), ("last epoch", common[-1])):
            rows.append({"point": label, "epoch (seed mean)": e, "NC1, target test features": g.nc1[e],
                         "effective rank, target test features": g.eff_rank[e],
                         "NC1, source train features": gs.nc1[e], "probe accuracy (%)": 100 * t.probe_acc[e]})
    if not rows:
        return pd.DataFrame()
    out = pd.DataFrame(rows).groupby("point", sort=False).mean().reset_index()
    out.insert(0, "target", split)
    return out.round(3)


def panel_words(panel: Mapping[str, stats.Robustness], target: str, estimator: str) -> str:
    """"; over the analysis variants, ...": whether both of the mechanism's intervals keep their verdicts."""
    keys = [k for k in panel if k.endswith(f"on {target} ({estimator})") or k.endswith(f"on {target} ({estimator}, "
                                                                                       "bits)")]
    if not keys:
        return ""
    return "; over the analysis variants, " + "; ".join(f"{k.split(' on ')[0]} {robust_text(panel[k], 3)}"
                                                         for k in keys)


def findings_markdown(results: Sequence[dict], changes: Sequence[dict], info: pd.DataFrame,
                      nulls: pd.DataFrame, panel: Mapping[str, stats.Robustness] | None = None) -> str:
    """The chapter's findings: the mechanism per estimator and target (and its robustness), collapse after the peak,
    I(X;T) above null."""
    lines = []
    for r in results:
        m = r["mechanism"]
        tv = verdict(m.transfer, quantity="late drop", decimals=2)
        cv = verdict(m.compression, quantity="fall of I(X;T)", unit="bits", decimals=3)
        reason = re.split(r" seeds?: ", m.text, maxsplit=1)[-1]      # the words after the two intervals
        lines.append(f"**{r['estimator']}, `{r['target']}`**: "
                     f"{'the mechanism holds' if m.coincides else 'the mechanism is not confirmed'}: {reason} "
                     f"({tv.numbers}; {cv.numbers}){panel_words(panel or {}, r['target'], r['estimator'])}.")
    lines += [f"**Collapse weighed**: {nc1_weighed(c, results)}." for c in changes]
    for (est, split), nl in nulls.groupby(["estimator", "split"]) if len(nulls) else []:
        m = restart_mean(penultimate(info, est, split))     # the last-epoch I(X;T) minus the null's mean, over seeds
        if (last := m[m.epoch == nl.epoch.max()]).empty:
            continue
        iv = t_interval(dict(zip(last.seed, last.i_xt - float(nl.i_xt.mean()))))
        v = verdict(iv, quantity=f"{est} I(X;T) on `{split}` at the last epoch above its shuffled-pairs null",
                    unit="bits", decimals=3, positive="above the null", negative="below the null")
        lines.append(f"{v.text}.")
    return findings(lines)
