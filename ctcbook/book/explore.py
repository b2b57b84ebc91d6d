"""Epoch explorers: pick a saved epoch and see the target's features and where that epoch sits on the curves.

Two front ends share one drawing function: :func:`live_explorer` (an ipywidgets slider, needs a kernel) and
:func:`static_explorer` (pre-rendered frames behind matplotlib's JavaScript slider, works in the static HTML book).
"""
from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib import animation

from ..probes import extract_features
from ..runs import Run
from ..chapters.ch1_tradeoff import run_target
from ..train import load_model


#: Size of one explorer view (inches): curves on the left, the PCA on the right.
FIGSIZE = (9.5, 3.6)


@dataclass
class Frame:
    """One epoch's view: 2-D PCA coordinates (n, 2) of target test features and their labels (n,)."""

    epoch: int
    coords: np.ndarray
    labels: np.ndarray
    explained: float  # fraction of feature variance the two components hold


def feature_frames(run: Run, target: str, epochs: list[int], *, n: int = 1000,
                   device: torch.device | str = "cpu") -> list[Frame]:
    """PCA (2 components) of ``n`` target test images' penultimate features at each epoch; signs of the components
    are aligned with the previous frame so the cloud does not flip between neighbouring epochs."""
    _, test = run_target(run, target, None, n)
    frames, prev = [], None
    for epoch in epochs:
        feats = extract_features(load_model(run, epoch, device), test.images, device=device).double()
        feats = feats - feats.mean(0)
        _, s, v = torch.linalg.svd(feats, full_matrices=False)
        coords = (feats @ v[:2].T).numpy()
        if prev is not None:
            coords *= np.sign((coords * prev).sum(0)) + (np.sign((coords * prev).sum(0)) == 0)
        prev = coords
        frames.append(Frame(epoch, coords, test.labels.numpy(), float((s[:2] ** 2).sum() / (s ** 2).sum())))
    return frames


def draw(fig, table: pd.DataFrame, frames: dict[int, Frame], target: str, epoch: int,
         class_names: tuple[str, ...]) -> None:
    """Draw the explorer for ``epoch`` into ``fig`` (cleared first): curves with the epoch marked, and the PCA."""
    fig.clear()
    ax_curve, ax_pca = fig.subplots(1, 2)
    src = table[table.target == "source"].groupby("epoch").test_acc.mean() * 100
    tgt = table[table.target == target].groupby("epoch").probe_acc.mean() * 100
    ax_curve.plot(src.index, src.values, color="black", label="source test")
    ax_curve.plot(tgt.index, tgt.values, color="tab:blue", label=f"{target} linear probe")
    ax_curve.axvline(epoch, color="tab:red", lw=1.2)
    ax_curve.set_xlabel("training epoch")
    ax_curve.set_ylabel("top-1 accuracy (%), mean over seeds")
    ax_curve.legend(fontsize=7, loc="lower right")
    ax_curve.grid(alpha=0.3)
    frame = frames[epoch]
    for k, name in enumerate(class_names):
        pts = frame.coords[frame.labels == k]
        ax_pca.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.6, label=name)
    ax_pca.set_xlabel("PC 1 of penultimate features (a.u.)")
    ax_pca.set_ylabel("PC 2 (a.u.)")
    acc = tgt.get(epoch, np.nan)
    ax_pca.set_title(f"epoch {epoch}: {target} probe {acc:.1f}% (seed mean); "
                     f"PCs hold {100 * frame.explained:.0f}% var.", fontsize=9)
    ax_pca.legend(fontsize=6, markerscale=2, loc="best")


def _jshtml(draw_frame, n: int, figsize: tuple[float, float], dpi: int, interval: int = 600) -> str:
    """HTML of matplotlib's JavaScript slider over ``n`` frames, frame i drawn by ``draw_frame(fig, i)``."""
    fig = plt.figure(figsize=figsize, layout="constrained")
    anim = animation.FuncAnimation(fig, lambda i: draw_frame(fig, i), frames=n, interval=interval)
    fig.set_dpi(dpi)
    html = anim.to_jshtml(default_mode="once")
    plt.close(fig)
    return html


def _png(draw_view, figsize: tuple[float, float], dpi: int) -> bytes:
    """PNG bytes of a figure drawn by ``draw_view(fig)``."""
    import io

    fig = plt.figure(figsize=figsize, layout="constrained")
    draw_view(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def static_explorer(table: pd.DataFrame, frames: list[Frame], target: str, class_names: tuple[str, ...],
                    dpi: int = 72) -> str:
    """HTML of a JavaScript epoch slider over pre-rendered frames (no kernel needed)."""
    by_epoch = {f.epoch: f for f in frames}
    return static_slider(lambda fig, epoch: draw(fig, table, by_epoch, target, epoch, class_names),
                         [f.epoch for f in frames], FIGSIZE, dpi)


def render_png(table: pd.DataFrame, frames: dict[int, Frame], target: str, epoch: int,
               class_names: tuple[str, ...], dpi: int = 80) -> bytes:
    """PNG bytes of :func:`draw` for one epoch."""
    return _png(lambda fig: draw(fig, table, frames, target, epoch, class_names), FIGSIZE, dpi)


def live_explorer(table: pd.DataFrame, frames: list[Frame], target: str, class_names: tuple[str, ...]):
    """An ipywidgets epoch slider over an image of :func:`draw` (for JupyterLab; needs a kernel).

    The image widget's PNG bytes are replaced on each move; no ``Output`` widget or ``clear_output`` is involved,
    because those hung headless executions (nbclient waiting for a reply the kernel had already sent)."""
    by_epoch = {f.epoch: f for f in frames}
    return live_slider(lambda fig, epoch: draw(fig, table, by_epoch, target, epoch, class_names), sorted(by_epoch),
                       FIGSIZE)


# ------------------------------------------------------------------------------ generic sliders over any drawing
def static_slider(draw_epoch, epochs: list[int], figsize: tuple[float, float], dpi: int = 72) -> str:
    """HTML of a JavaScript slider over frames drawn by ``draw_epoch(fig, epoch)`` (fig cleared first by the
    caller's function), one per epoch in ``epochs``; no kernel needed."""
    return _jshtml(lambda fig, i: draw_epoch(fig, epochs[i]), len(epochs), figsize, dpi)


def live_slider(draw_epoch, epochs: list[int], figsize: tuple[float, float], dpi: int = 80):
    """An ipywidgets epoch slider over a PNG of ``draw_epoch(fig, epoch)`` (Image widget; see :func:`live_explorer`
    for why no Output widget)."""
    import ipywidgets as widgets

    def png(epoch: int) -> bytes:
        return _png(lambda fig: draw_epoch(fig, epoch), figsize, dpi)

    slider = widgets.SelectionSlider(options=epochs, value=epochs[-1], description="epoch", continuous_update=False)
    image = widgets.Image(format="png", value=png(epochs[-1]))
    slider.observe(lambda change: setattr(image, "value", png(change["new"])), names="value")
    return widgets.VBox([slider, image])


#: Size of the information-plane explorer (inches).
INFO_FIGSIZE = (10.0, 3.3)


def information_draw(fig, info: pd.DataFrame, epoch: int, split: str, estimators: list[str],
                     layer_split: str = "source") -> None:
    """Information-plane explorer for ``epoch``: one panel per estimator with the penultimate layer's seed-mean
    trajectory on ``split`` (grey) and this epoch marked (red), and one panel with every Renyi layer on
    ``layer_split`` at this epoch (the classic layer-wise information plane). Axes in bits."""
    fig.clear()
    axes = fig.subplots(1, len(estimators) + 1)
    for ax, est in zip(axes, estimators):
        g = info[(info.estimator == est) & (info.split == split) & (info.layer == "penultimate")]
        m = g.groupby("epoch")[["i_xt", "i_ty"]].mean()
        ax.plot(m.i_xt, m.i_ty, "-o", color="lightgrey", ms=3)
        if epoch in m.index:
            ax.plot([m.i_xt[epoch]], [m.i_ty[epoch]], "o", color="tab:red", ms=9)
        ax.set_title(f"{split}, {est}: epoch {epoch}", fontsize=9)
        ax.set_xlabel("I(X;T) (bits)")
        ax.set_ylabel("I(T;Y) (bits)")
        ax.grid(alpha=0.3)
    ax = axes[-1]
    g = info[(info.estimator == "renyi") & (info.split == layer_split)]
    order = [l for l in ("stage1", "stage2", "stage3", "penultimate") if l in set(g.layer)]
    allm = g.groupby(["layer", "epoch"])[["i_xt", "i_ty"]].mean()
    ax.scatter(allm.i_xt, allm.i_ty, s=6, color="lightgrey")
    if order and epoch in set(g.epoch):
        now = allm.xs(epoch, level="epoch").loc[order]
        ax.plot(now.i_xt, now.i_ty, "-o", color="tab:red", ms=5)
        for name, row in now.iterrows():
            ax.annotate(name, (row.i_xt, row.i_ty), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_title(f"{layer_split}, renyi, layers at epoch {epoch}", fontsize=9)
    ax.set_xlabel("I(X;T) (bits)")
    ax.set_ylabel("I(T;Y) (bits)")
    ax.grid(alpha=0.3)


# --- chapter 4: where and when an image was taken ---------------------------------------------------------------
#: Size of one metadata-explorer view (inches): the image, the map, the class probabilities.
FUSION_FIGSIZE = (10.5, 3.4)


@dataclass
class MetadataView:
    """What the metadata explorer shows for one test image.

    ``image``: uint8 (H, W) pixels; ``label``: its true class; ``x``: its standardised pooled features (C,);
    ``head``: a trained metadata-aware head (e.g. Dynamic MLP C); ``p_image``: the image-only head's class
    probabilities (K,); ``class_names`` (K,); ``centres``: (lat (K,), lon (K,), peak day (K,)) of the simulated
    classes, degrees and day of year; ``head_name``: how the head is named in titles.
    """

    image: np.ndarray
    label: int
    x: torch.Tensor
    head: object
    p_image: np.ndarray
    class_names: tuple
    centres: tuple
    head_name: str = "Dynamic MLP-C"

    def probabilities(self, lat: float, lon: float, day: float) -> np.ndarray:
        """The head's class probabilities (K,) with the image placed at (lat, lon) degrees on day ``day``."""
        from ..chapters.ch4_fusion import probabilities_at

        return probabilities_at(self.head, self.x, [lat], [lon], [day])[0].numpy()


def draw_metadata(fig, view: MetadataView, lat: float, lon: float, day: float) -> None:
    """Draw the metadata explorer for one (lat, lon, day) into ``fig`` (cleared first)."""
    fig.clear()
    ax_img, ax_map, ax_p = fig.subplots(1, 3, gridspec_kw={"width_ratios": [0.6, 1.5, 1.6]})
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
    ax_map.set_xlim(-180, 180)
    ax_map.set_ylim(-90, 90)
    ax_map.set_xlabel("longitude (degrees)")
    ax_map.set_ylabel("latitude (degrees)")
    ax_map.set_title(f"red ring: ({lat:.0f}, {lon:.0f}) deg, day {int(day)}; x: class centres (peak day)",
                     fontsize=7)
    ax_map.grid(alpha=0.3)
    p = view.probabilities(lat, lon, day) * 100
    k = np.arange(len(view.class_names))
    ax_p.barh(k - 0.2, view.p_image * 100, height=0.4, color="tab:grey", label="image only")
    ax_p.barh(k + 0.2, p, height=0.4, color="tab:green", label=f"{view.head_name} at this place and day")
    ax_p.set_yticks(k, view.class_names, fontsize=7)
    ax_p.invert_yaxis()
    ax_p.set_xlim(0, 100)
    ax_p.set_xlabel("predicted class probability (%)")
    ax_p.legend(fontsize=6, loc="lower right")
    ax_p.grid(alpha=0.3, axis="x")


def metadata_grid(view: MetadataView, classes, days) -> list[tuple[float, float, float]]:
    """(lat, lon, day) frames: the location centre of each class in ``classes`` crossed with each day in ``days``."""
    c_lat, c_lon, _ = view.centres
    return [(float(c_lat[k]), float(c_lon[k]), float(d)) for k in classes for d in days]


def static_metadata_explorer(view: MetadataView, points, dpi: int = 72) -> str:
    """HTML of a JavaScript slider over pre-rendered (lat, lon, day) frames (no kernel needed)."""
    if not points:
        raise ValueError("points must hold at least one (lat, lon, day) triple")
    return _jshtml(lambda fig, i: draw_metadata(fig, view, *points[i]), len(points), FUSION_FIGSIZE, dpi,
                   interval=900)


def render_metadata_png(view: MetadataView, lat: float, lon: float, day: float, dpi: int = 80) -> bytes:
    """PNG bytes of :func:`draw_metadata` for one (lat, lon, day)."""
    return _png(lambda fig: draw_metadata(fig, view, lat, lon, day), FUSION_FIGSIZE, dpi)


def live_metadata_explorer(view: MetadataView, lat: float = 0.0, lon: float = 0.0, day: float = 1.0):
    """Latitude, longitude and day-of-year sliders over an image of :func:`draw_metadata` (JupyterLab; needs a
    kernel). Like :func:`live_explorer`, it replaces an Image widget's bytes and uses no Output widget."""
    import ipywidgets as widgets

    s_lat = widgets.FloatSlider(value=lat, min=-90, max=90, step=1, description="lat (deg)", continuous_update=False)
    s_lon = widgets.FloatSlider(value=lon, min=-180, max=180, step=1, description="lon (deg)",
                                continuous_update=False)
    s_day = widgets.IntSlider(value=int(day), min=1, max=365, description="day of year", continuous_update=False)
    image = widgets.Image(format="png", value=render_metadata_png(view, lat, lon, day))

    def redraw(_):
        image.value = render_metadata_png(view, s_lat.value, s_lon.value, s_day.value)

    for s in (s_lat, s_lon, s_day):
        s.observe(redraw, names="value")
    return widgets.VBox([widgets.HBox([s_lat, s_lon, s_day]), image])
