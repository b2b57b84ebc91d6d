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

from .evaluate import extract_features
from .runs import Run
from .tradeoff import run_target
from .train import load_model


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


def static_explorer(table: pd.DataFrame, frames: list[Frame], target: str, class_names: tuple[str, ...],
                    dpi: int = 72) -> str:
    """HTML of a JavaScript epoch slider over pre-rendered frames (no kernel needed)."""
    fig = plt.figure(figsize=FIGSIZE, layout="constrained")
    by_epoch = {f.epoch: f for f in frames}
    epochs = [f.epoch for f in frames]
    anim = animation.FuncAnimation(fig, lambda i: draw(fig, table, by_epoch, target, epochs[i], class_names),
                                   frames=len(epochs), interval=600)
    fig.set_dpi(dpi)
    html = anim.to_jshtml(default_mode="once")
    plt.close(fig)
    return html


def render_png(table: pd.DataFrame, frames: dict[int, Frame], target: str, epoch: int,
               class_names: tuple[str, ...], dpi: int = 80) -> bytes:
    """PNG bytes of :func:`draw` for one epoch."""
    import io

    fig = plt.figure(figsize=FIGSIZE, layout="constrained")
    draw(fig, table, frames, target, epoch, class_names)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def live_explorer(table: pd.DataFrame, frames: list[Frame], target: str, class_names: tuple[str, ...]):
    """An ipywidgets epoch slider over an image of :func:`draw` (for JupyterLab; needs a kernel).

    The image widget's PNG bytes are replaced on each move; no ``Output`` widget or ``clear_output`` is involved,
    because those hung headless executions (nbclient waiting for a reply the kernel had already sent)."""
    import ipywidgets as widgets

    by_epoch = {f.epoch: f for f in frames}
    epochs = sorted(by_epoch)
    slider = widgets.SelectionSlider(options=epochs, value=epochs[-1], description="epoch",
                                     continuous_update=False)
    image = widgets.Image(format="png", value=render_png(table, by_epoch, target, epochs[-1], class_names))

    def redraw(change):
        image.value = render_png(table, by_epoch, target, change["new"], class_names)

    slider.observe(redraw, names="value")
    return widgets.VBox([slider, image])
