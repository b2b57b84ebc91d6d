"""Per-epoch information-plane estimates of saved runs (ctcbook.chapters.ch2_information)."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch

from ctcbook.chapters import ch2_information as inf
from ctcbook.config import TrainConfig
from ctcbook import estimators
from ctcbook.estimators import MineSettings
from ctcbook.runs import RunStore, read_jsonl
from ctcbook.train import load_model, train

TINY = TrainConfig(train_size=200, epochs=2, width=4, depth=8, batch_size=50, seed=5)
TINY_MINE = MineSettings(hidden=16, layers=2, lr=1e-3, iterations=30, batch_size=64, smoothing=10)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train(TINY, store=RunStore(tmp_path_factory.mktemp("runs")), progress=False)


def test_activations_give_the_normalised_input_and_each_layer(run):
    model = load_model(run, 2)
    images = inf.estimator_sample(run, "source", 40).images
    x, ts = estimators.activations(model, images, estimators.layer_names(model), batch_size=16)
    assert estimators.layer_names(model) == ["stage1", "stage2", "stage3", "penultimate"]
    assert x.shape == (40, 28 * 28)
    expected_x = ((images.float() / 255 - model.input_mean) / model.input_std).flatten(1)
    torch.testing.assert_close(x, expected_x)
    with torch.no_grad():
        feats, _ = model(images.float() / 255)
    torch.testing.assert_close(ts["penultimate"], feats)
    # stride-2 stem: 28 -> 14 px; stages of widths 4, 8, 16 at 14, 7, 4 px
    assert [ts[k].shape[1] for k in ("stage1", "stage2", "stage3")] == [4 * 14 * 14, 8 * 7 * 7, 16 * 4 * 4]
    with pytest.raises(ValueError, match="layers must be a subset"):
        estimators.activations(model, images, ["stage9"])


def test_renyi_plane_obeys_bounds_and_ignores_the_scale_of_t():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g)
    labels = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    t = x[:, :3] @ torch.randn(3, 3, generator=g)
    ref = inf.renyi_reference(x, labels)
    res = inf.renyi_plane(ref, {"t": t, "t_scaled": 50.0 * t, "noise": torch.randn(300, 3, generator=g)})
    assert res["t"]["i_xt"] == pytest.approx(res["t_scaled"]["i_xt"], abs=1e-6)
    assert res["t"]["i_ty"] == pytest.approx(res["t_scaled"]["i_ty"], abs=1e-6)
    for r in res.values():
        assert 0 <= r["i_ty"] <= min(r["h_t"], r["h_y"]) + 1e-9
        assert r["i_xt"] <= r["h_x"] + 1e-9
    # features computed from x carry more about x and the labels than independent noise does
    assert res["t"]["i_xt"] > res["noise"]["i_xt"] and res["t"]["i_ty"] > res["noise"]["i_ty"]


def test_information_curve_rows_cache_and_resume(run, monkeypatch):
    monkeypatch.setitem(inf.MINE_PRESETS, "cpu", (TINY_MINE, TINY_MINE))
    table = inf.information_curve(run, ["source", "digits"], estimators=["renyi", "mine"], every=1, n=60,
                                  mine_n=80, progress=False)
    renyi_src = table[(table.estimator == "renyi") & (table.split == "source")]
    assert sorted(set(renyi_src.layer)) == ["penultimate", "stage1", "stage2", "stage3"]
    assert set(table[table.split == "digits"].layer) == {"penultimate"}
    mine_rows = table[table.estimator == "mine"]
    assert len(mine_rows) == 4 and set(mine_rows.epoch) == {1, 2} and (mine_rows.n == 80).all()
    assert len(table) == 2 * (4 + 1) + 4
    assert np.isfinite(table[["i_xt", "i_ty", "seconds"]].to_numpy(float)).all()
    assert (table.seed == TINY.seed).all()

    # A second call computes nothing: every row comes from the run folder's cache.
    def boom(*a, **k):
        raise AssertionError("recomputed a cached estimate")
    monkeypatch.setattr(inf, "renyi_plane", boom)
    monkeypatch.setattr(inf, "mine_plane", boom)
    again = inf.information_curve(run, ["source", "digits"], estimators=["renyi", "mine"], every=1, n=60,
                                  mine_n=80, progress=False)
    pd.testing.assert_frame_equal(again, table)

    # An interrupted pass (last row missing) resumes with only that row.
    monkeypatch.undo()
    monkeypatch.setitem(inf.MINE_PRESETS, "cpu", (TINY_MINE, TINY_MINE))
    [path] = [p for p in (run.path / "evals").glob("information-*.jsonl")
              if any(r["layer"] == "stage2" for r in read_jsonl(p))]
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    calls = []
    real = inf.renyi_plane
    monkeypatch.setattr(inf, "renyi_plane", lambda ref, ts, *a: calls.append(sorted(ts)) or real(ref, ts, *a))
    resumed = inf.information_curve(run, ["source"], estimators=["renyi"], every=1, n=60, progress=False)
    assert calls == [[read_jsonl_last_layer(lines)]]
    assert len(resumed) == 8


def test_other_kernel_widths_are_cached_apart_from_the_books(run):
    spec = {"split": "digits", "estimator": "renyi", "n": 60, "alpha": inf.ALPHA, "version": inf.INFO_VERSION}
    kw = dict(estimators=["renyi"], epochs=[2], layers=["penultimate"], n=60, progress=False)
    book = inf.information_curve(run, ["digits"], **kw)
    rows = [r for r in read_jsonl(run.eval_path("information", spec)) if r["epoch"] == 2]   # the key it always had
    assert [r["i_xt"] for r in rows] == list(book.i_xt)
    wide = inf.information_curve(run, ["digits"], scale=2.0, **kw)
    assert [r["i_xt"] for r in read_jsonl(run.eval_path("information", {**spec, "scale": 2.0}))] == list(wide.i_xt)
    assert wide.i_xt.iloc[0] != pytest.approx(book.i_xt.iloc[0], abs=1e-3)
    pd.testing.assert_frame_equal(inf.information_curve(run, ["digits"], **kw), book)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(80, 5, generator=g)
    t, y, h = x[:, :2] ** 2, (x[:, 0] > 0).long(), estimators.renyi_entropy
    kx, kt = (estimators.gaussian_gram(v, 2 * estimators.kernel_width(v)) for v in (x, t))
    res = inf.renyi_plane(inf.renyi_reference(x, y, scale=2.0), {"t": t}, 2.0)["t"]   # both widths x 2
    assert res["i_xt"] == pytest.approx(h(kx) + h(kt) - h(kx * kt), abs=1e-9)


def read_jsonl_last_layer(lines):
    import json
    return json.loads(lines[-1])["layer"]


def test_information_curve_refuses_bad_requests(run):
    with pytest.raises(ValueError, match="split must be one of"):
        inf.information_curve(run, ["imagenet"], progress=False)
    with pytest.raises(ValueError, match="estimator must be one of"):
        inf.information_curve(run, estimators=["kde"], progress=False)
    with pytest.raises(ValueError, match=r"epochs \[7\] have no checkpoint"):
        inf.information_curve(run, epochs=[7], progress=False)
    with pytest.raises(ValueError, match="n must be None or an int >= 2"):
        inf.information_curve(run, n=1, progress=False)
    with pytest.raises(ValueError, match="mine_preset must be one of"):
        inf.information_curve(run, estimators=["mine"], mine_preset="huge", progress=False)
    with pytest.raises(ValueError, match="layers must be a subset"):
        inf.information_curve(run, layers=["fc9"], progress=False)


def _info_and_table(falls: bool):
    info, table = [], []
    for s in (0, 1, 2):
        ixt = [1.0, 1.5, 1.2 if falls else 1.6]
        acc = [0.70, 0.80, 0.72 if falls else 0.81]
        for ep, v, a in zip((1, 2, 3), ixt, acc):
            info.append({"seed": s, "split": "t", "estimator": "renyi", "epoch": ep, "layer": "penultimate",
                         "i_xt": v + 0.01 * s, "i_ty": 0.5 + 0.1 * ep})
            table.append({"seed": s, "target": "t", "epoch": ep, "probe_acc": a + 0.001 * s, "val_acc": a,
                          "n_val": 10_000})
    return pd.DataFrame(info), pd.DataFrame(table)


def test_epoch_values_pick_the_peak_on_validation_not_test():
    info, table = _info_and_table(falls=True)
    table["val_acc"] = table.epoch.map({1: 0.70, 2: 0.71, 3: 0.90})   # validation peaks at epoch 3, test at 2
    v = inf.epoch_values(info, table, "t").set_index("point")
    assert v.loc["transfer peak", "epoch"] == 3


def test_epoch_values_pick_first_transfer_peak_and_final():
    info, table = _info_and_table(falls=True)
    v = inf.epoch_values(info, table, "t").set_index("point")
    assert list(v.epoch) == [1, 2, 3]
    assert v.loc["transfer peak", "i_xt"] == pytest.approx(1.51) and v.loc["final", "i_ty"] == pytest.approx(0.8)
    assert v.loc["transfer peak", "probe_acc"] == pytest.approx(80.1)
