"""Live explorers (ctcbook.book.explore): moving each ipywidgets control recomputes from the checkpoints and redraws.

Tiny real runs (two seeds, two epochs) and real probes and Renyi estimates; the controls are moved in Python the way a
JupyterLab front end sets a widget's value, and the Image widget's PNG must change (and come back when moved back)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ctcbook.book import explore
from ctcbook.chapters import ch2_information as inf
from ctcbook.config import TrainConfig
from ctcbook.probes import extract_features, knn_accuracy
from ctcbook.runs import RunStore
from ctcbook.targets import run_target
from ctcbook.train import load_model, train

TINY = TrainConfig(train_size=150, epochs=2, width=4, depth=8, batch_size=50)
TARGETS = ["digits", "fmnist_5-9"]
N = 60
DPI = 30  # small pictures: the tests compare bytes, not looks


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("runs"))
    return [train(TINY.replace(seed=s), store=store, progress=False) for s in (0, 1)]


@pytest.fixture(scope="module")
def table(runs):
    """The chapter's curves table, with a weighted-kNN probe standing in for the (slow) L-BFGS probe: the
    explorers only read its accuracy columns."""
    rows = []
    for run in runs:
        seed = run.config["seed"]
        rows += [{"seed": seed, "target": "source", "epoch": m["epoch"], "test_acc": m["test_acc"]}
                 for m in run.metrics()]
        for key in TARGETS:
            tr, te = run_target(run, key, 100, 100)
            for epoch in run.saved_epochs():
                model = load_model(run, epoch)
                acc = knn_accuracy(extract_features(model, tr.images), tr.labels, extract_features(model, te.images),
                                   te.labels)
                rows.append({"seed": seed, "target": key, "epoch": epoch, "probe_acc": acc})
    return pd.DataFrame(rows)


def _png(box):
    value = bytes(box.image.value)
    assert value[:4] == b"\x89PNG"
    return value


def test_project_is_pca_with_a_fixed_sign():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(50, 3, generator=g) * torch.tensor([5.0, 2.0, 0.1])
    coords, explained = explore.project(feats)
    flipped, _ = explore.project(-feats)
    np.testing.assert_allclose(coords, flipped, atol=1e-9)      # no flip between two views of one cloud
    assert 0.99 < explained <= 1.0
    assert abs(np.corrcoef(coords[:, 0], feats[:, 0].numpy())[0, 1]) > 0.99


def test_frame_cache_computes_from_checkpoints_and_keeps_the_last_few(runs):
    cache = explore.FrameCache(n=N, maxsize=2)
    a = cache.frame(runs[0], "digits", 1)
    assert a.coords.shape == (N, 2) and a.labels.shape == (N,) and a.layer == "penultimate"
    assert cache.frame(runs[0], "digits", 1) is a and (cache.hits, cache.misses) == (1, 1)
    b = cache.frame(runs[0], "digits", 2)
    assert not np.allclose(a.coords, b.coords)                   # another checkpoint, other features
    cache.frame(runs[0], "digits", 2, "stage1")
    assert len(cache) == 2
    assert cache.frame(runs[0], "digits", 1) is not a            # dropped (least recently used), recomputed
    np.testing.assert_allclose(cache.frame(runs[0], "digits", 1).coords, a.coords)
    with pytest.raises(ValueError, match=r"epoch must be one of the saved epochs .* got 7"):
        cache.frame(runs[0], "digits", 7)
    with pytest.raises(ValueError, match="maxsize"):
        explore.FrameCache(maxsize=0)


def test_live_explorer_controls_move_and_the_picture_follows(runs, table):
    box = explore.live_explorer(runs, table, TARGETS, n=N, dpi=DPI)
    c = box.controls
    assert (c["target"].value, c["seed"].value, c["epoch"].value) == ("digits", 0, 2)
    assert list(c["epoch"].options) == [1, 2]
    first = _png(box)
    # the static page and the live widget draw with the same function: same settings, same picture
    frame = explore.feature_frames(runs[0], "digits", [2], n=N)[0]
    classes = run_target(runs[0], "digits")[1].classes
    static = explore._png(lambda fig: explore.draw(fig, table, frame, "digits", classes, 0), explore.FIGSIZE, DPI)
    assert static == first
    seen = {first}
    for name, value in (("epoch", 1), ("seed", 1), ("target", "fmnist_5-9"), ("epoch", 2)):
        c[name].value = value
        assert _png(box) not in seen, f"moving {name} to {value!r} did not change the picture"
        seen.add(_png(box))
    assert box.cache.misses == 5
    c["target"].value = "digits"                                    # seed 1, epoch 2 on digits: not seen yet
    c["seed"].value = 0                                             # back where it started: from the cache
    assert c["epoch"].value == 2 and _png(box) == first
    assert box.cache.misses == 6 and box.cache.hits >= 1
    assert "drawn in" in box.status.value


def test_live_information_explorer_moves_split_seed_layer_and_epoch(runs, table):
    info = inf.information_curves(runs, ["source", "digits"], estimators=["renyi"], every=1, n=N, progress=False)
    box = explore.live_information_explorer(runs, info, table, ["renyi"], n=N, dpi=DPI)
    c = box.controls
    assert c["split"].value == "source" and list(c["layer"].options) == ["stage1", "stage2", "stage3",
                                                                          "penultimate"]
    seen = {_png(box)}
    for name, value in (("layer", "stage2"), ("epoch", 1), ("seed", 1), ("split", "digits")):
        c[name].value = value
        assert _png(box) not in seen, f"moving {name} to {value!r} did not change the picture"
        seen.add(_png(box))
    # on a target the estimator analysed the penultimate layer only: the layer control follows
    assert list(c["layer"].options) == ["penultimate"] and c["layer"].value == "penultimate"
    assert box.cache.frame(runs[1], "digits", 1).layer == "penultimate"


def test_metadata_explorer_sliders_redraw_and_each_method_gets_a_row(tmp_path):
    from test_fusion_training import _experiment
    import ctcbook.chapters.ch4_fusion as ft

    exp = _experiment(tmp_path)
    exp.results(["image_only", "metadata_only", "dynamic_mlp_c"], [0], progress=False)
    d, sim = exp.data, exp.data.simulator
    p_img = ft.predict(exp.head("image_only", 0), d.test_x[:1], d.test_m[:1])[0].numpy()
    methods = {m: exp.head(m, 0) for m in ("image_only", "metadata_only", "geo_prior", "dynamic_mlp_c")}
    view = explore.MetadataView(np.zeros((28, 28), np.uint8), 0, d.test_x[0], exp.head("dynamic_mlp_c", 0), p_img,
                                d.class_names, (sim.centre_lat, sim.centre_lon, sim.peak_day), methods=methods)
    assert view.figsize[0] > explore.FUSION_FIGSIZE[0]
    box = explore.live_metadata_explorer(view, float(sim.centre_lat[0]), float(sim.centre_lon[0]), 1, dpi=DPI)
    c = box.controls
    seen = {_png(box)}
    for name, value in (("lat", float(sim.centre_lat[1])), ("lon", float(sim.centre_lon[1])), ("day", 200)):
        c[name].value = value
        assert _png(box) not in seen, f"moving {name} to {value!r} did not change the picture"
        seen.add(_png(box))
    # the metadata-only head predicts the class whose centre the image is placed at
    for k in range(len(d.class_names)):
        p = view.probabilities(sim.centre_lat[k], sim.centre_lon[k], sim.peak_day[k], methods["metadata_only"])
        assert p.argmax() == k
    plain = explore.MetadataView(view.image, 0, view.x, view.head, p_img, d.class_names, view.centres)
    assert _png(explore.live_metadata_explorer(plain, dpi=DPI)) != _png(explore.live_metadata_explorer(view, dpi=DPI))
