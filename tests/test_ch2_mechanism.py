"""Chapter 2 in the papers' regime: the mechanism verdict, feature geometry, null baselines, MINE restarts
(ctcbook.chapters.ch2_information)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ctcbook.book.parameters import ParameterError, resolve
from ctcbook.chapters import ch2_information as inf
from ctcbook.config import TrainConfig
from ctcbook.estimators import PENULTIMATE, MineSettings, activations, renyi_null
from ctcbook.geometry import effective_rank, nc1
from ctcbook.runs import RunStore, read_jsonl
from ctcbook.train import load_model, source_data, train

TINY = TrainConfig(train_size=200, epochs=3, width=4, depth=8, batch_size=50, seed=5)
TINY_MINE = MineSettings(hidden=16, layers=2, lr=1e-3, iterations=30, batch_size=64, smoothing=10)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train(TINY, store=RunStore(tmp_path_factory.mktemp("runs")), progress=False)


# --- the mechanism verdict on constructed curves ------------------------------------------------------------
EPOCHS = (1, 5, 10, 15, 20)


def _frames(ixt_late: str, seeds=(0, 1, 2, 3, 4)):
    """Transfer peaks at epoch 10 on validation and test, then falls; I(X;T) late: 'falls' or 'rises'."""
    info, table = [], []
    val = [0.60, 0.70, 0.80, 0.76, 0.72]
    test = [0.61, 0.71, 0.79, 0.75, 0.70]
    ixt = {"falls": [1.0, 1.4, 1.6, 1.4, 1.2], "rises": [1.0, 1.2, 1.3, 1.5, 1.7]}[ixt_late]
    for s in seeds:
        rng = np.random.default_rng(s)
        for e, v, t, i in zip(EPOCHS, val, test, ixt):
            for r in (0, 1):   # two MINE-like restarts per checkpoint
                info.append({"seed": s, "split": "t", "estimator": "est", "epoch": e, "layer": "penultimate",
                             "restart": r, "i_xt": i + 0.02 * rng.standard_normal() + 0.01 * r, "i_ty": 0.5})
            table.append({"seed": s, "target": "t", "epoch": e, "val_acc": v + 0.003 * rng.standard_normal(),
                          "probe_acc": t + 0.003 * rng.standard_normal(), "n_val": 10 ** 9})
    # a probe epoch without an I(X;T) estimate: must be left out, not misaligned
    table += [{"seed": s, "target": "t", "epoch": 3, "val_acc": 0.99, "probe_acc": 0.99, "n_val": 10 ** 9}
              for s in seeds]
    return pd.DataFrame(info), pd.DataFrame(table)


def test_mechanism_coincides_only_with_the_right_sign_and_timing():
    info, table = _frames("falls")
    [r] = inf.mechanism(info, table, ["t"], "est")
    m = r["mechanism"]
    assert m.coincides and "co-occurs with compression" in m.text
    assert set(m.peak_epochs.values()) == {10}          # epoch 3 (val 0.99, no I(X;T) there) is not used
    assert m.transfer.mean == pytest.approx(9.0, abs=0.6) and m.compression.mean == pytest.approx(0.4, abs=0.03)
    assert r["epochs"] == list(EPOCHS) and r["late_seeds"] == 5
    assert r["correlation"].r > 0.9 and r["correlation"].low > 0
    assert "bootstrap CI" in inf.correlation_text(r["correlation"], r["late_seeds"], r["seeds"])
    assert inf.mechanism_table([r]).iloc[0]["coincides"] == "yes"

    info, table = _frames("rises")
    [r] = inf.mechanism(info, table, ["t"], "est")
    assert not r["mechanism"].coincides and "opposite of the paper's mechanism" in r["mechanism"].text
    assert "co-occurs with compression" not in r["mechanism"].text
    assert r["correlation"].r < -0.9
    assert inf.mechanism_table([r]).iloc[0]["coincides"] == "no"


def test_kernel_width_table_reports_a_verdict_that_flips_with_the_width():
    info, table = _frames("falls")
    [r] = inf.mechanism(info, table, ["t"], "est")
    assert r["last_epochs"] == {s: 20 for s in range(5)}
    rises, _ = _frames("rises")
    widths = pd.concat([rises.assign(scale=0.5), info.assign(scale=2.0)])
    w = inf.width_table(r, info, widths)
    assert list(w.iloc[:, 0]) == ["0.5", "1", "2"] and inf.KERNEL_SCALES == (0.5, 1.0, 2.0)
    assert list(w.coincides) == ["no", "yes", "yes"] and w.iloc[1, 1].startswith("+0.4")
    text = inf.width_text(w)
    assert "depends on the kernel width" in text and "at 1x, 2x the rule's width, not at 0.5x" in text
    same = inf.width_text(inf.width_table(r, info, info.assign(scale=0.5).pipe(lambda f: pd.concat(
        [f, f.assign(scale=2.0)]))))
    assert "holds at every kernel width" in same and "coincides: yes" in same


def test_mine_convergence_marks_a_still_moving_trace_and_leaves_its_checkpoint_out():
    flat, rising = [1.0 + 0.001 * (k % 2) for k in range(100)], list(np.linspace(0.2, 2.0, 100))
    assert inf.mine_drift(flat) < inf.MINE_TOL < inf.mine_drift(rising)
    info, _ = _frames("falls", seeds=(0,))
    info = pd.concat([info.assign(estimator="mine", curve_xt=[rising if e == 10 and r == 1 else flat
                                                               for e, r in zip(info.epoch, info.restart)],
                                  curve_ty=[flat] * len(info)), info.assign(estimator="renyi")], ignore_index=True)
    conv = inf.mine_convergence(info)
    assert len(conv) == len(EPOCHS) and (conv.restarts == 2).all()
    assert conv.set_index("epoch").converged.to_dict() == {e: e != 10 for e in EPOCHS}
    kept = inf.converged_only(info, conv)
    assert set(kept[kept.estimator == "mine"].epoch) == set(EPOCHS) - {10}
    assert len(kept[kept.estimator == "renyi"]) == len(info) / 2                  # other estimators untouched
    text = inf.convergence_text(conv, [])
    assert text.startswith("4 of 5 MINE checkpoints meet") and "the rest (1) are left out" in text
    assert "MINE no verdict: on this page it is exploratory" in text
    assert "rest on converged checkpoints only: `t`" in inf.convergence_text(conv, [{"estimator": "mine",
                                                                                     "target": "t"}])


def test_restart_mean_averages_restarts():
    info, _ = _frames("falls", seeds=(0,))
    m = inf.restart_mean(info)
    assert len(m) == len(EPOCHS)
    one = info[info.epoch == 10].i_xt
    assert m[m.epoch == 10].i_xt.iloc[0] == pytest.approx(one.mean())


def test_geometry_change_measures_from_the_validation_peak():
    geom, table = [], []
    for s in (0, 1, 2):
        for e, v, nc_t, nc_s, rk in zip(EPOCHS, [0.5, 0.9, 0.7, 0.6, 0.6], [3.0, 2.0, 1.5, 1.0, 0.5 + 0.01 * s],
                                        [2.0, 1.0, 0.5, 0.2, 0.1], [20, 18, 15, 12, 10]):
            geom.append({"seed": s, "split": "t", "epoch": e, "nc1": nc_t, "eff_rank": rk})
            geom.append({"seed": s, "split": inf.GEOMETRY_SOURCE, "epoch": e, "nc1": nc_s, "eff_rank": 5.0})
            table.append({"seed": s, "target": "t", "epoch": e, "val_acc": v, "probe_acc": v, "n_val": 10 ** 9})
    [c] = inf.geometry_change(pd.DataFrame(geom), pd.DataFrame(table), ["t"])
    assert c["peak_epochs"] == {0: 5, 1: 5, 2: 5}                      # validation peak at epoch 5
    assert c["intervals"]["nc1_target"].mean == pytest.approx(2.0 - 0.51)
    assert c["intervals"]["nc1_source"].mean == pytest.approx(0.9)
    assert c["intervals"]["rank_target"].mean == pytest.approx(8.0)
    assert c["verdicts"]["nc1_target"].sign == 1 and "collapse further" in c["verdicts"]["nc1_target"].text
    pts = inf.geometry_points(pd.DataFrame(geom), pd.DataFrame(table), "t")
    assert list(pts.point) == ["first epoch", "transfer peak (validation)", "last epoch"]
    assert pts["NC1, target test features"].tolist()[1] == pytest.approx(2.0) and set(pts.target) == {"t"}
    assert list(pts.columns[:2]) == ["target", "point"]


def _nc1_change(nc_t):
    """geometry_change on three seeds whose validation (and transfer) peaks at epoch 5, target NC1 ``nc_t``."""
    geom, table = [], []
    for s in (0, 1, 2):
        for e, v, n in zip(EPOCHS, [0.5, 0.9, 0.7, 0.6, 0.6], nc_t):
            geom += [{"seed": s, "split": "t", "epoch": e, "nc1": n + 0.01 * s * e, "eff_rank": 5.0},
                     {"seed": s, "split": inf.GEOMETRY_SOURCE, "epoch": e, "nc1": 1.0, "eff_rank": 5.0}]
            table.append({"seed": s, "target": "t", "epoch": e, "val_acc": v, "probe_acc": v, "n_val": 10 ** 9})
    return inf.geometry_change(pd.DataFrame(geom), pd.DataFrame(table), ["t"])[0]


def test_nc1_weighed_says_against_when_the_target_features_spread():
    holds = inf.mechanism(*_frames("falls"), ["t"], "est")
    assert holds[0]["mechanism"].coincides
    spreads, collapses = _nc1_change([3.0, 1.0, 1.5, 2.0, 2.5]), _nc1_change([3.0, 2.0, 1.5, 1.0, 0.5])
    text = inf.nc1_weighed(spreads, holds)
    assert "transfer peak minus last epoch: -1.650, 95% CI [" in text
    assert "against the mechanism" in text and "fall of I(X;T) in Table 1 (est) is not a collapse" in text
    assert "adds to Table 1" in inf.nc1_weighed(spreads, inf.mechanism(*_frames("rises"), ["t"], "est"))
    text = inf.nc1_weighed(collapses, holds)
    assert "in the direction the mechanism predicts" in text and "against" not in text
    assert "inconclusive" in inf.nc1_weighed(_nc1_change([1.0, 2.0, 2.1, 1.9, 2.0 + 1e-4]), holds)
    row = inf.mechanism_table(holds, [spreads]).iloc[0]
    assert row["NC1 of the target, peak minus last"].startswith("-1.650 [")
    assert "Collapse weighed**: NC1 of `t` test" in inf.findings_markdown(holds, [spreads], *_frames("falls")[:1],
                                                                        pd.DataFrame())


# --- on a real (tiny) run ------------------------------------------------------------------------------------
def test_geometry_curve_matches_the_features_and_is_cached(run, monkeypatch):
    g = inf.geometry_curve(run, [inf.GEOMETRY_SOURCE, "digits"], [1, 3], test_size=120, progress=False)
    assert len(g) == 4 and set(g.split) == {inf.GEOMETRY_SOURCE, "digits"} and (g.seed == TINY.seed).all()
    src = source_data(TINY)[0]
    assert (g[g.split == inf.GEOMETRY_SOURCE].n == len(src)).all() and (g[g.split == "digits"].n == 120).all()
    model = load_model(run, 3)
    feats = activations(model, src.images, [PENULTIMATE])[1][PENULTIMATE]
    row = g[(g.split == inf.GEOMETRY_SOURCE) & (g.epoch == 3)].iloc[0]
    assert row.nc1 == pytest.approx(nc1(feats, src.labels), rel=1e-6)
    assert row.eff_rank == pytest.approx(effective_rank(feats), rel=1e-6)

    monkeypatch.setattr(inf, "nc1", lambda *a: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = inf.geometry_curve(run, [inf.GEOMETRY_SOURCE, "digits"], [1, 3], test_size=120, progress=False)
    pd.testing.assert_frame_equal(again, g)
    with pytest.raises(ValueError, match="split must be 'source_train'"):
        inf.geometry_curve(run, ["imagenet"], [1], progress=False)
    with pytest.raises(ValueError, match=r"epochs \[9\] have no checkpoint"):
        inf.geometry_curve(run, ["digits"], [9], progress=False)


def test_renyi_null_baseline_is_the_estimator_on_shuffled_pairs(run, monkeypatch):
    nl = inf.null_baseline(run, "source", "renyi", n=80, shuffles=2)
    assert len(nl) == 1 and nl.epoch.iloc[0] == 3
    images = inf.estimator_sample(run, "source", 80)
    x, ts = activations(load_model(run, 3), images.images, [PENULTIMATE])
    direct = renyi_null(x, ts[PENULTIMATE], images.labels, shuffles=2)
    assert nl.i_xt.iloc[0] == pytest.approx(direct.i_xt) and nl.i_ty.iloc[0] == pytest.approx(direct.i_ty)
    monkeypatch.setattr(inf, "renyi_null", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    pd.testing.assert_frame_equal(inf.null_baseline(run, "source", "renyi", n=80, shuffles=2), nl)


def test_mine_restarts_rows_traces_and_null(run, monkeypatch):
    monkeypatch.setitem(inf.MINE_PRESETS, "cpu", (TINY_MINE, TINY_MINE))
    t = inf.information_curve(run, ["digits"], estimators=["mine"], epochs=[3], mine_n=None, mine_restarts=2,
                              progress=False)
    assert sorted(t.restart) == [0, 1] and t.n.nunique() == 1 and t.n.iloc[0] > 300   # None: the whole test split
    assert t.i_xt.iloc[0] != t.i_xt.iloc[1]                    # restarts differ in init and batches
    assert all(len(c) == TINY_MINE.iterations for c in t.curve_xt)
    # one more restart computes only that one
    calls = []
    real = inf.mine_plane
    monkeypatch.setattr(inf, "mine_plane", lambda *a, **k: calls.append(k["restart"]) or real(*a, **k))
    t3 = inf.information_curve(run, ["digits"], estimators=["mine"], epochs=[3], mine_n=None, mine_restarts=3,
                               progress=False)
    assert calls == [2] and sorted(t3.restart) == [0, 1, 2]
    nl = inf.null_baseline(run, "digits", "mine", mine_n=150, restarts=2)
    assert sorted(nl.restart) == [0, 1]
    with pytest.raises(ValueError, match="mine_restarts must be an int >= 1"):
        inf.information_curve(run, estimators=["mine"], mine_restarts=0, progress=False)


def test_mine_null_reads_less_than_dependent_pairs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=g)
    t = x + 0.1 * torch.randn(200, 2, generator=g)
    labels = (x[:, 0] > 0).long()
    s = MineSettings(hidden=16, layers=2, lr=1e-2, iterations=150, batch_size=100, smoothing=30)
    real = inf.mine_plane(x, t, labels, 2, s, s)
    null = inf.mine_plane(x, t, labels, 2, s, s, shuffle=True)
    assert real["i_xt"] > 1.5 and abs(null["i_xt"]) < 0.3 and null["i_ty"] < 0.3 < real["i_ty"]


# --- settings text and parameters ---------------------------------------------------------------------------
def test_settings_say_when_the_preset_is_not_the_papers():
    assert inf.preset_differences("paper") == []
    diffs = inf.preset_differences("cpu")
    assert "I(X;T) iterations: 500 here, 10,000 in the paper" in diffs
    assert "I(T;Y) hidden: 64 here, 1,024 in the paper" in diffs and not any("ema" in d for d in diffs)
    assert inf.PAPER_MINE_XT.describe() == ("3 x 1024 ReLU statistics network, Adam lr 8e-05, 10,000 steps on batches "
                                            "of 5,000, moving-average rate 0.01, reported value = last point of a "
                                            "500-step moving average")


def test_mine_splits_parameter_is_checked():
    assert resolve("02_information", {})["mine_splits"] == ["fmnist_5-9"]
    assert resolve("02_information", {"profile": "cifar100"})["mine_splits"] is None
    with pytest.raises(ParameterError, match="mine_splits"):
        resolve("02_information", {"mine_splits": ["cifar10"]})


def test_figures_draw_nulls_bands_and_keep_legends_off_the_data():
    import matplotlib
    matplotlib.use("Agg")
    from ctcbook.book import plots

    info, table = _frames("falls", seeds=(0, 1, 2))
    info = info.assign(split="fmnist_5-9", estimator="renyi")
    table = table[table.epoch != 3].assign(target="fmnist_5-9")
    nulls = pd.DataFrame([{"estimator": "renyi", "split": "fmnist_5-9", "i_xt": 0.9, "i_ty": 0.2}])
    geom = pd.DataFrame([{"seed": s, "split": sp, "epoch": e, "nc1": 1.0 / e, "eff_rank": 10.0 - e / 4}
                         for s in (0, 1, 2) for sp in ("fmnist_5-9", inf.GEOMETRY_SOURCE) for e in EPOCHS])
    for fig in (plots.information_epochs_figure(info, table, ["fmnist_5-9"], ["renyi"], nulls),
                plots.information_plane_figure(info, ["fmnist_5-9"], ["renyi"], nulls),
                plots.information_geometry_figure(info, geom, table, ["fmnist_5-9"], nulls=nulls)):
        axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        assert all(ax.get_legend() is None for ax in axes) and len(fig.legends) == 1
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert "null (shuffled pairs)" in labels
        assert any(len(ax.collections) for ax in axes)           # t bands (or scatter) drawn
        plots.close(fig)
    mine_info = pd.DataFrame([{"seed": 0, "split": "t", "estimator": "mine", "epoch": 5, "restart": r,
                               "curve_xt": [0.1 * k for k in range(10)], "curve_ty": [0.2] * 10, "steps_xt": 500,
                               "steps_ty": 500, "i_xt": 0.8, "i_ty": 0.2} for r in range(3)])
    fig = plots.mine_convergence_figure(mine_info, "t", 0, 5)
    assert len(fig.axes[0].lines) == 6 and fig.axes[0].lines[0].get_xdata()[-1] == pytest.approx(475)
    plots.close(fig)


def test_findings_follow_the_numbers():
    info, table = _frames("falls")
    results = inf.mechanism(info, table, ["t"], "est")
    nulls = pd.DataFrame([{"seed": 0, "split": "t", "estimator": "est", "epoch": 20, "i_xt": 0.5, "i_ty": 0.1}])
    text = inf.findings_markdown(results, [], info, nulls)
    assert "the mechanism holds" in text and "above the null" in text
    assert "null" not in inf.findings_markdown(results, [], info[info.epoch != 20], nulls)   # its epoch left out
    info_r, table_r = _frames("rises")
    text = inf.findings_markdown(inf.mechanism(info_r, table_r, ["t"], "est"), [], info_r, nulls.assign(i_xt=5.0))
    assert "not confirmed: transfer falls after its peak while I(X;T) rises" in text and "below the null" in text


def _trend_curves(linked: bool, seeds=range(6)):
    """seed -> (epochs, val, test, ixt): transfer and I(X;T) both follow the epoch; ``linked`` adds shared wiggles."""
    epochs = np.arange(10, 90, 10)
    out = {}
    for s in seeds:
        rng = np.random.default_rng(s)
        wiggle = rng.normal(0, 0.02, len(epochs)) if linked else 0.0
        test = 0.9 - 0.002 * epochs + wiggle + (0 if linked else rng.normal(0, 0.005, len(epochs)))
        ixt = 3.0 - 0.01 * epochs + 5 * wiggle + (0 if linked else rng.normal(0, 0.05, len(epochs)))
        out[s] = (epochs, test, test, ixt)
    return out


def test_the_epoch_control_flags_an_association_that_only_a_shared_trend_makes():
    table = pd.DataFrame([{"seed": s, "target": "source", "epoch": int(e), "lr": 0.1 * (1 - e / 90)}
                          for s in range(6) for e in np.arange(10, 90, 10)])
    trend = inf.controls(_trend_curves(False), table)
    assert trend["transfer ~ I(X;T)"].low > 0.5                      # strongly associated over the curve...
    assert trend["transfer ~ I(X;T) | epoch"].low < 0 < trend["transfer ~ I(X;T) | epoch"].high  # ...by the trend
    assert trend["transfer ~ epoch"].high < -0.5 and trend["I(X;T) ~ lr"].low > 0.5
    assert "the control flags it" in inf.controls_text(trend)
    linked = inf.controls(_trend_curves(True), table)
    assert linked["transfer ~ I(X;T) | epoch"].low > 0.5
    assert "survives the control for the epoch" in inf.controls_text(linked)


def test_mechanism_panel_recomputes_both_intervals_under_every_variant():
    info_rows, table_rows = [], []
    for seed in range(3):
        for e, (val, test, ixt) in zip((1, 5, 10), ((0.5, 0.5, 1.0), (0.9, 0.9, 3.0), (0.9, 0.8, 2.0 + 0.1 * seed))):
            info_rows.append({"estimator": "renyi", "split": "t", "layer": PENULTIMATE, "seed": seed, "epoch": e,
                              "restart": 0, "i_xt": ixt, "i_ty": 0.5})
            table_rows.append({"seed": seed, "epoch": e, "target": "t", "val_acc": val, "probe_acc": test,
                               "n_val": 10 ** 9})
    table = pd.DataFrame(table_rows)
    for v in ("draw1", "draw2", "draw3", "sklearn", "grid"):
        table[f"val_acc_{v}"], table[f"probe_acc_{v}"] = table.val_acc, table.probe_acc
    table["probe_acc_paper"] = table.probe_acc
    panel = inf.mechanism_panel(pd.DataFrame(info_rows), table, ["t"])
    # validation ties epochs 5 and 10: the declared rule and "latest" see no late phase, "earliest" a 10-point drop
    drop = panel["late drop on t (renyi)"]
    assert drop.estimates["declared"].mean == 0.0 and drop.estimates["ties to the earliest epoch"].mean == pytest.approx(10.0)
    assert not drop.robust and not panel["fall of I(X;T) on t (renyi, bits)"].robust
    assert inf.panel_words(panel, "t", "renyi").startswith("; over the analysis variants, late drop fragile (")
