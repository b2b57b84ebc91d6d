"""Explorers: pick a saved epoch (or, in chapter 4, a place and a day) and see what the model does there.

Each drawing function (:func:`draw`, :func:`information_draw`, :func:`draw_metadata`) has two front ends: frames under
matplotlib's JavaScript slider (the HTML book) and live ipywidgets controls (JupyterLab, :class:`FrameCache`).
"""
from __future__ import annotations

import io
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib import animation

from ..chapters.ch2_information import estimator_sample
from ..estimators import PENULTIMATE, activations
from ..runs import Run
from ..train import load_model


#: Size of one explorer view (inches): curves on the left, the PCA on the right.
FIGSIZE = (9.5, 3.6)


@dataclass
class Frame:
    """One epoch's view: PCA coordinates (n, 2) of a layer's test features, labels (n,), variance ``explained``."""

    epoch: int
    coords: np.ndarray
    labels: np.ndarray
    explained: float
    layer: str = PENULTIMATE


def project(feats: torch.Tensor) -> tuple[np.ndarray, float]:
    """PCA onto 2 components: (coords, variance fraction); signs fixed so the static slider and live widget agree."""
    feats = feats.double()
    feats = feats - feats.mean(0)
    u, s, v = torch.linalg.svd(feats, full_matrices=False)
    coords = (feats @ v[:2].T).numpy()
    flip = np.sign(coords[np.abs(coords).argmax(0), [0, 1]])
    coords = coords * np.where(flip == 0, 1.0, flip)
    total = float((s ** 2).sum())
    return coords, float((s[:2] ** 2).sum() / total) if total > 0 else 0.0


class FrameCache:
    """PCA frames of ``n`` test images of a split, computed from checkpoints on demand; the last ``maxsize`` kept."""

    def __init__(self, n: int = 1000, device: torch.device | str = "cpu", maxsize: int = 32):
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be an integer >= 1, got {maxsize!r}")
        self.n, self.device, self.maxsize = n, device, maxsize
        self._frames: OrderedDict = OrderedDict()
        self._images: dict = {}
        self.hits = self.misses = 0

    def images(self, run: Run, split: str):
        """``split``'s test images in ``run``'s input format (an ImageSet, kept)."""
        key = (run.name, split)
        if key not in self._images:
            self._images[key] = estimator_sample(run, split, self.n)
        return self._images[key]

    def frame(self, run: Run, split: str, epoch: int, layer: str = PENULTIMATE) -> Frame:
        key = (run.name, split, int(epoch), layer)
        if key in self._frames:
            self.hits += 1
            self._frames.move_to_end(key)
            return self._frames[key]
        self.misses += 1
        if int(epoch) not in run.saved_epochs():
            raise ValueError(f"epoch must be one of the saved epochs of run {run.name} {run.saved_epochs()}, "
                             f"got {epoch!r}")
        data = self.images(run, split)
        _, acts = activations(load_model(run, int(epoch), self.device), data.images, [layer], device=self.device)
        coords, explained = project(acts[layer])
        frame = Frame(int(epoch), coords, data.labels.numpy(), explained, layer)
        self._frames[key] = frame
        if len(self._frames) > self.maxsize:
            self._frames.popitem(last=False)
        return frame

    def __len__(self) -> int:
        return len(self._frames)


def feature_frames(run: Run, target: str, epochs: list[int], *, n: int = 1000,
                   device: torch.device | str = "cpu", layer: str = PENULTIMATE) -> list[Frame]:
    """The frames of ``target`` (``"source"`` or a target key) at ``epochs``, for the static slider."""
    cache = FrameCache(n, device, maxsize=max(1, len(epochs)))
    return [cache.frame(run, target, e, layer) for e in epochs]


def _seed_curve(table: pd.DataFrame, split: str, seed: int | None) -> pd.Series:
    """Accuracy (%) per epoch of ``split`` (source test, or the target's probe): one seed's, or (None) the mean."""
    col = "test_acc" if split == "source" else "probe_acc"
    g = table[table.target == split]
    if seed is not None:
        g = g[g.seed == seed]
    return g.groupby("epoch")[col].mean() * 100


def draw(fig, table: pd.DataFrame, frame: Frame, target: str, class_names, seed: int | None = None) -> None:
    """Source and probe accuracy per epoch (seed mean, ``seed`` dashed), ``frame.epoch`` marked, beside its PCA."""
    fig.clear()
    ax_curve, ax_pca = fig.subplots(1, 2)
    epoch = frame.epoch
    src, tgt = _seed_curve(table, "source", None), _seed_curve(table, target, None)
    ax_curve.plot(src.index, src.values, color="black", label="source test (seed mean)")
    ax_curve.plot(tgt.index, tgt.values, color="tab:blue", label=f"{target} linear probe (seed mean)")
    acc, who = tgt.get(epoch, np.nan), "seed mean"
    if seed is not None:
        mine = _seed_curve(table, target, seed)
        ax_curve.plot(mine.index, mine.values, "--", color="tab:blue", lw=1, label=f"{target} probe, seed {seed}")
        acc, who = mine.get(epoch, np.nan), f"seed {seed}"
    ax_curve.axvline(epoch, color="tab:red", lw=1.2)
    ax_curve.set(xlabel="training epoch", ylabel="top-1 accuracy (%)")
    ax_curve.legend(fontsize=7, loc="lower right")
    ax_curve.grid(alpha=0.3)
    _scatter(ax_pca, frame, class_names)
    ax_pca.set_title(f"epoch {epoch}: {target} probe {acc:.1f}% ({who}); "
                     f"PCs hold {100 * frame.explained:.0f}% var.", fontsize=9)


def _scatter(ax, frame: Frame, class_names) -> None:
    for k, name in enumerate(class_names):
        pts = frame.coords[frame.labels == k]
        ax.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.6, label=name)
    ax.set(xlabel=f"PC 1 of {frame.layer} features (a.u.)", ylabel="PC 2 (a.u.)")
    ax.legend(fontsize=6, markerscale=2, loc="best")


def static_slider(draw_frame, frames: list, figsize: tuple[float, float], dpi: int = 72, interval: int = 600) -> str:
    """HTML of matplotlib's JavaScript slider over ``frames``, each drawn by ``draw_frame(fig, frame)`` (no kernel)."""
    if not frames:
        raise ValueError("frames must hold at least one frame (a Frame, an epoch or (lat, lon, day) points), got none")
    fig = plt.figure(figsize=figsize, layout="constrained")
    anim = animation.FuncAnimation(fig, lambda i: draw_frame(fig, frames[i]), frames=len(frames), interval=interval)
    fig.set_dpi(dpi)
    html = anim.to_jshtml(default_mode="once")
    plt.close(fig)
    return html


def _png(draw_view, figsize: tuple[float, float], dpi: int) -> bytes:
    fig = plt.figure(figsize=figsize, layout="constrained")
    draw_view(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def _dropdown(description: str, options, value=None):
    import ipywidgets as widgets

    options = list(options)
    return widgets.Dropdown(options=options, value=options[0] if value is None else value, description=description)


def _live(controls: dict, render, on_change=None):
    """VBox of ``controls`` (name -> widget) over an Image of ``render(values) -> PNG bytes`` and a status line.

    Every change redraws, after ``on_change(name)`` (which may update other controls). The Image's bytes are
    replaced: an ``Output`` widget with ``clear_output`` hung headless executions (nbclient waited for a reply the
    kernel had already sent)."""
    import ipywidgets as widgets

    image = widgets.Image(format="png")
    status = widgets.Label()
    busy = [False]

    def redraw(name=None):
        if busy[0]:
            return
        busy[0] = True
        try:
            if on_change is not None and name is not None:
                on_change(name)
            t0 = time.perf_counter()
            image.value = render({k: w.value for k, w in controls.items()})
            status.value = f"drawn in {time.perf_counter() - t0:.2f} s"
        except Exception as err:  # shown under the image: a front end puts a callback's traceback out of sight
            status.value = f"error: {type(err).__name__}: {err}"
            raise
        finally:
            busy[0] = False

    for name, w in controls.items():
        w.observe(lambda change, name=name: redraw(name), names="value")
    redraw()
    box = widgets.VBox([widgets.HBox(list(controls.values())), image, status])
    box.controls, box.image, box.status = controls, image, status
    return box


def _epochs(frame: pd.DataFrame, **where) -> list[int]:
    for column, value in where.items():
        frame = frame[frame[column] == value]
    return sorted(int(e) for e in frame.epoch.unique())


def _nearest(options: list[int], value: int) -> int:
    return min(options, key=lambda e: (abs(e - value), e))


def live_explorer(runs: list[Run], table: pd.DataFrame, targets, *, cache: FrameCache | None = None,
                  n: int = 1000, device: torch.device | str = "cpu", dpi: int = 80):
    """Target, seed and epoch controls over :func:`draw` (epochs: those ``table`` probed for that target and seed)."""
    by_seed = {int(r.config["seed"]): r for r in runs}
    if not by_seed:
        raise ValueError("runs must hold at least one run")
    targets = list(targets)
    if not targets:
        raise ValueError("targets must hold at least one target key")
    seed0 = sorted(by_seed)[0]
    if not _epochs(table, target=targets[0], seed=seed0):
        raise ValueError(f"table has no probe of target {targets[0]!r} for seed {seed0}")
    controls = {"target": _dropdown("target", targets), "seed": _dropdown("seed", sorted(by_seed))}
    epochs = {"epoch": lambda v: _epochs(table, target=v["target"], seed=v["seed"])}

    def view(fig, v, frame, classes):
        draw(fig, table, frame, v["target"], classes, v["seed"])

    return _live_frames(by_seed, controls, epochs, "target", view, FIGSIZE, dpi, cache or FrameCache(n, device))


def _live_frames(by_seed: dict, controls: dict, choices: dict, split: str, view, figsize, dpi: int,
                 cache: FrameCache):
    """:func:`_live` over ``controls`` and one more control per ``choices`` (name -> its options given the values
    before it: a "layer" dropdown, the "epoch" slider), whose options follow every change of a control before it;
    ``view(fig, values, frame, class_names)`` draws the frame."""
    import ipywidgets as widgets

    def options(name):
        return choices[name]({k: w.value for k, w in controls.items()})

    for name in choices:
        first = options(name)
        controls[name] = (_dropdown(name, first, first[-1]) if name != "epoch" else
                          widgets.SelectionSlider(options=first, value=first[-1], description="epoch",
                                                  continuous_update=False))

    def on_change(changed):
        names = list(controls)
        for name in names[names.index(changed) + 1:]:
            if name in choices:  # keep the value if still there, else the nearest epoch or the last layer
                w, now = controls[name], options(name)
                w.options, w.value = now, (_nearest(now, w.value) if name == "epoch" else
                                           w.value if w.value in now else now[-1])

    def render(v):
        run = by_seed[v["seed"]]
        frame = cache.frame(run, v[split], v["epoch"], v.get("layer", PENULTIMATE))
        classes = cache.images(run, v[split]).classes
        return _png(lambda fig: view(fig, v, frame, classes), figsize, dpi)

    box = _live(controls, render, on_change)
    box.cache = cache
    return box


#: Size of the information-plane explorer (inches).
INFO_FIGSIZE = (13.0, 3.4)
_LAYERS = ("stage1", "stage2", "stage3", PENULTIMATE)  # in the network's order


def information_draw(fig, info: pd.DataFrame, table: pd.DataFrame, frame: Frame, split: str, seed: int,
                     estimators: list[str], class_names) -> None:
    """Per estimator the layer's information-plane path, every Renyi-measured layer at the epoch, and the PCA."""
    fig.clear()
    axes = fig.subplots(1, len(estimators) + 2)
    epoch, layer = frame.epoch, frame.layer
    mine = info[(info.split == split) & (info.seed == seed)]
    for ax, est in zip(axes, estimators):
        g = mine[(mine.estimator == est) & (mine.layer == layer)].groupby("epoch")[["i_xt", "i_ty"]].mean()
        if g.empty:
            ax.text(0.5, 0.5, f"no {est} estimate of\n{layer} for seed {seed}", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8)
        ax.plot(g.i_xt, g.i_ty, "-o", color="lightgrey", ms=3)
        if epoch in g.index:
            ax.plot([g.i_xt[epoch]], [g.i_ty[epoch]], "o", color="tab:red", ms=9)
        ax.set_title(f"{split}, {layer}, {est}: epoch {epoch}", fontsize=8)
    ax = axes[-2]
    g = mine[mine.estimator == "renyi"]
    order = [l for l in _LAYERS if l in set(g.layer)]
    allm = g.groupby(["layer", "epoch"])[["i_xt", "i_ty"]].mean()
    ax.scatter(allm.i_xt, allm.i_ty, s=6, color="lightgrey")
    if order and epoch in set(g.epoch):
        now = allm.xs(epoch, level="epoch").reindex(order).dropna()
        ax.plot(now.i_xt, now.i_ty, "-o", color="tab:red", ms=5)
        for name, row in now.iterrows():
            ax.annotate(name, (row.i_xt, row.i_ty), fontsize=7, xytext=(3, 3), textcoords="offset points",
                        fontweight="bold" if name == layer else "normal")
    ax.set_title(f"{split}, renyi, layers at epoch {epoch}", fontsize=8)
    for ax in axes[:-1]:
        ax.set(xlabel="I(X;T) (bits)", ylabel="I(T;Y) (bits)")
        ax.grid(alpha=0.3)
    _scatter(axes[-1], frame, class_names)
    acc = _seed_curve(table, split, seed).get(epoch, np.nan)
    r = allm.loc[(layer, epoch)] if (layer, epoch) in allm.index else None
    measures = f"I(X;T) {r.i_xt:.2f}, I(T;Y) {r.i_ty:.2f} bits" if r is not None else "no Renyi estimate"
    what = "source test" if split == "source" else "probe"
    axes[-1].set_title(f"seed {seed}, epoch {epoch}: {what} {acc:.1f}%\n{measures}", fontsize=8)


def live_information_explorer(runs: list[Run], info: pd.DataFrame, table: pd.DataFrame, estimators: list[str], *,
                              splits=None, cache: FrameCache | None = None, n: int = 1000,
                              device: torch.device | str = "cpu", dpi: int = 72):
    """Split, seed, layer and epoch controls over :func:`information_draw` (those the Renyi estimator measured)."""
    by_seed = {int(r.config["seed"]): r for r in runs}
    splits = list(splits) if splits is not None else sorted(set(info.split), key=lambda s: (s != "source", s))
    if not by_seed or not splits:
        raise ValueError(f"runs and splits must be non-empty, got {len(by_seed)} runs and splits {splits!r}")

    def layers_of(split, seed):
        have = set(info[(info.split == split) & (info.seed == seed) & (info.estimator == "renyi")].layer)
        return [l for l in _LAYERS if l in have]

    seed0 = sorted(by_seed)[0]
    if not layers_of(splits[0], seed0):
        raise ValueError(f"info has no Renyi estimate for split {splits[0]!r} and seed {seed0}")
    controls = {"split": _dropdown("split", splits), "seed": _dropdown("seed", sorted(by_seed))}
    choices = {"layer": lambda v: layers_of(v["split"], v["seed"]),
               "epoch": lambda v: _epochs(info, split=v["split"], seed=v["seed"], layer=v["layer"], estimator="renyi")}

    def view(fig, v, frame, classes):
        information_draw(fig, info, table, frame, v["split"], v["seed"], estimators, classes)

    return _live_frames(by_seed, controls, choices, "split", view, INFO_FIGSIZE, dpi, cache or FrameCache(n, device))


# --- chapter 4: where and when an image was taken ---------------------------------------------------------------
#: Size of one metadata-explorer view (inches): the image, the map, the class probabilities.
FUSION_FIGSIZE = (10.5, 3.4)


@dataclass
class MetadataView:
    """What the metadata explorer shows for one test image: ``x`` its standardised features (C,), ``centres`` the
    classes' (lat, lon, peak day), ``methods`` more heads by display name, each with a panel of its own."""

    image: np.ndarray
    label: int
    x: torch.Tensor
    head: object
    p_image: np.ndarray
    class_names: tuple
    centres: tuple
    head_name: str = "Dynamic MLP-C"
    methods: dict = field(default_factory=dict)

    def probabilities(self, lat: float, lon: float, day: float, head=None) -> np.ndarray:
        """``head``'s (default: :attr:`head`'s) class probabilities (K,) for this image at (lat, lon) on ``day``."""
        from ..chapters.ch4_fusion import probabilities_at

        return probabilities_at(self.head if head is None else head, self.x, [lat], [lon], [day])[0].numpy()

    @property
    def figsize(self) -> tuple[float, float]:
        return (FUSION_FIGSIZE[0] + 4.0, FUSION_FIGSIZE[1]) if self.methods else FUSION_FIGSIZE


def draw_metadata(fig, view: MetadataView, lat: float, lon: float, day: float) -> None:
    """The metadata explorer for one (lat, lon, day)."""
    fig.clear()
    ratios = [0.6, 1.5, 1.6] + ([1.6] if view.methods else [])
    ax_img, ax_map, ax_p, *ax_methods = fig.subplots(1, len(ratios), gridspec_kw={"width_ratios": ratios})
    ax_img.imshow(view.image, cmap="gray_r")
    ax_img.set_title(f"true class: {view.class_names[view.label]}", fontsize=8)
    ax_img.axis("off")
    colors = plt.get_cmap("tab10").colors
    c_lat, c_lon, c_day = view.centres
    for k, name in enumerate(view.class_names):
        ax_map.plot(c_lon[k], c_lat[k], "x", color=colors[k % 10], ms=7, mew=2)
        ax_map.annotate(f"{name} (d{int(c_day[k])})", (c_lon[k], c_lat[k]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
    ax_map.plot(lon, lat, "o", ms=11, mfc="none", mec="red", mew=2)
    ax_map.set(xlim=(-180, 180), ylim=(-90, 90), xlabel="longitude (degrees)", ylabel="latitude (degrees)")
    ax_map.set_title(f"red ring: ({lat:.0f}, {lon:.0f}) deg, day {int(day)}; x: class centres (peak day)",
                     fontsize=7)
    ax_map.grid(alpha=0.3)
    p = view.probabilities(lat, lon, day) * 100
    k = np.arange(len(view.class_names))
    ax_p.barh(k - 0.2, view.p_image * 100, height=0.4, color="tab:grey", label="image only")
    ax_p.barh(k + 0.2, p, height=0.4, color="tab:green", label=f"{view.head_name} at this place and day")
    ax_p.set_yticks(k, view.class_names, fontsize=7)
    ax_p.invert_yaxis()
    ax_p.set(xlim=(0, 100), xlabel="predicted class probability (%)")
    ax_p.legend(fontsize=6, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)  # above the bars
    ax_p.grid(alpha=0.3, axis="x")
    if ax_methods:
        _draw_methods(ax_methods[0], view, lat, lon, day)


def _draw_methods(ax, view: MetadataView, lat: float, lon: float, day: float) -> None:
    """Each method's class probabilities (%) here as a heat map, its prediction boxed and named on the right."""
    names = list(view.methods)
    p = np.stack([view.probabilities(lat, lon, day, view.methods[m]) for m in names]) * 100
    ax.imshow(p, cmap="Greens", vmin=0, vmax=100, aspect="auto")
    top = p.argmax(1)
    for i, k in enumerate(top):
        ax.add_patch(plt.Rectangle((k - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=1.5))
    ax.set_yticks(range(len(names)), [f"{m}: {view.class_names[k]} {p[i, k]:.0f}%" for i, (m, k) in
                                      enumerate(zip(names, top))], fontsize=6)
    ax.yaxis.tick_right()
    ax.set_xticks(range(len(view.class_names)), view.class_names, fontsize=6, rotation=90)
    ax.set_title("each method's probability (%, red box: its prediction)", fontsize=7)


def metadata_grid(view: MetadataView, classes, days) -> list[tuple[float, float, float]]:
    """(lat, lon, day) frames: the location centre of each class in ``classes`` crossed with each day in ``days``."""
    c_lat, c_lon, _ = view.centres
    return [(float(c_lat[k]), float(c_lon[k]), float(d)) for k in classes for d in days]


def live_metadata_explorer(view: MetadataView, lat: float = 0.0, lon: float = 0.0, day: float = 1.0, dpi: int = 80):
    """Latitude, longitude and day-of-year sliders over :func:`draw_metadata`."""
    import ipywidgets as widgets

    controls = {"lat": widgets.FloatSlider(value=lat, min=-90, max=90, step=1, description="lat (deg)",
                                           continuous_update=False),
                "lon": widgets.FloatSlider(value=lon, min=-180, max=180, step=1, description="lon (deg)",
                                           continuous_update=False),
                "day": widgets.IntSlider(value=int(day), min=1, max=365, description="day of year",
                                         continuous_update=False)}
    return _live(controls, lambda v: _png(lambda fig: draw_metadata(fig, view, v["lat"], v["lon"], v["day"]),
                                          view.figsize, dpi))
