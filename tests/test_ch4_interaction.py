"""Chapter 4's interaction sweep (ctcbook.chapters.ch4_fusion): end-to-end runs per (level, seed, method),
frozen heads on held-out features of the image-only run, the Bayes reference, tables and findings."""
import math
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch

from ctcbook.book import plots
from ctcbook.chapters import ch4_fusion as ft
from ctcbook.dispatch import dispatch
from ctcbook.config import FusionTrainConfig
from ctcbook.fusion_train import fusion_splits, heldout_split
from ctcbook import train as engine
from ctcbook.models.fusion import build_head
from ctcbook.runs import RunStore

META = {"seed": 0, "location_spread": 25.0, "date_spread": 45.0, "background": 0.3, "missing_fraction": 0.05,
        "interaction": 0.0, "groups": [[0, 2, 4, 6]], "draw_seed": 0}
HEAD = {"meta_width": 8, "embed_dim": 8, "reduced_dim": 8, "hidden_dim": 4, "num_blocks": 1}
SETTINGS = ft.HeadSettings(meta_width=8, embed_dim=8, reduced_dim=8, hidden_dim=4, num_blocks=1, epochs=2,
                           batch_size=64, smoothing="public")


def tiny(**kw) -> FusionTrainConfig:
    base = dict(train_size=200, test_size=200, width=4, epochs=2, batch_size=50, metadata=dict(META), head=HEAD,
                augment="none", test_every=2)
    return FusionTrainConfig(**{**base, **kw})


def test_configs_vary_seed_draw_and_level_and_need_the_backbone():
    configs = ft.sweep_configs(tiny(), [0.0, 0.5], [0, 3], ["image_only", "concat"])
    assert len(configs) == 8
    c = configs[(0.5, 3, "concat")]
    assert (c.seed, c.method, c.metadata["interaction"], c.metadata["draw_seed"]) == (3, "concat", 0.5, 3)
    assert len({cfg.to_dict().__repr__() for cfg in configs.values()}) == 8
    with pytest.raises(ValueError, match="image_only"):
        ft.sweep_configs(tiny(), [0.0], [0], ["concat"])
    with pytest.raises(ValueError, match="non-empty"):
        ft.sweep_configs(tiny(), [], [0], ["image_only"])


def test_test_every_skips_test_passes_but_always_scores_the_last_epoch(tmp_path):
    run = engine.train(tiny(epochs=3, test_every=2), store=RunStore(tmp_path), device="cpu", progress=False)
    assert ["test_acc" in r for r in run.metrics()] == [False, True, True]
    with pytest.raises(ValueError, match="test_every"):
        tiny(test_every=0)
    # the default keeps the config dict (and so the run names) of runs made before the field existed
    assert "test_every" not in tiny(test_every=1).to_dict() and tiny().to_dict()["test_every"] == 2


def test_heldout_split_is_disjoint_from_training_and_has_its_own_draw():
    config = tiny(metadata={**META, "interaction": 1.0})
    train, _, _ = fusion_splits(config)
    held, _ = heldout_split(config, 100)
    assert len(held) == 100
    seen = {im.numpy().tobytes() for im in train.images}
    # rendered images differ from the plain ones, so compare the plain training subset by content
    from ctcbook.data import load_dataset, subsample

    plain = subsample(load_dataset("fashion_mnist", "train"), 200, seed=0)
    plain_seen = {im.numpy().tobytes() for im in plain.images}
    held_plain = heldout_split(tiny(), 100)[0]
    assert not any(im.numpy().tobytes() in plain_seen for im in held_plain.images)
    assert not any(im.numpy().tobytes() in seen for im in held.images)
    assert np.bincount(held.labels.numpy(), minlength=10).tolist() == [10] * 10
    # the held-out draw is neither the train (sample seed 0) nor the test draw (1)
    sim = config.simulator(10)
    y = held.labels.numpy()
    for s in (0, 1):
        assert not np.allclose(np.nan_to_num(sim.sample(y, s).day_of_year), held.raw.day_of_year)


def test_dispatch_trains_end_to_end_configs_and_reuses_them(tmp_path):
    store = RunStore(tmp_path)
    configs = [tiny(method="image_only"), tiny(method="concat")]
    runs = dispatch(configs, store=store, device="cpu", progress=False)
    assert all(r.done for r in runs) and runs[0].name.startswith("e2e-image_only")
    again = dispatch(configs, store=store, device="cpu", progress=False)
    assert [r.path for r in again] == [r.path for r in runs]


FROZEN = ["image_only", "image_mlp", "metadata_only", "concat", "add", "dynamic_mlp_c"]


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("runs"))
    configs = ft.sweep_configs(tiny(), [0.0, 1.0], [0, 1], ["image_only", "concat", "dynamic_mlp_c"])
    runs = ft.train_sweep(configs, store=store, device="cpu")
    exps = ft.frozen_experiments(runs, SETTINGS, heldout=100)
    frozen = ft.frozen_results(exps, FROZEN, progress=False)
    return runs, exps, pd.concat([frozen, ft.e2e_results(runs)], ignore_index=True)


def test_sweep_rows_cover_every_mode_level_seed_and_method(small_sweep):
    runs, exps, results = small_sweep
    e2e = results[results["mode"] == "end to end"]
    assert len(e2e) == 12 and set(e2e.method) == {"image_only", "concat", "dynamic_mlp_c"}
    frozen = results[results["mode"] == "frozen"]
    assert len(frozen) == 2 * 2 * 7 and ft.BAYES in set(frozen.method)
    # the Bayes reference combines the image-only MLP head (the stronger image classifier) with p(m | y)
    b = frozen[(frozen.method == ft.BAYES) & (frozen.level == 1.0) & (frozen.seed == 0)].test_acc.iloc[0]
    assert b * 100 == pytest.approx(ft.bayes_ceiling(exps[(1.0, 0)], [0], "image_mlp").test_acc.iloc[0])
    assert results.test_acc.between(0, 1).all()
    # the e2e accuracy is the run's last-epoch test accuracy
    key = (1.0, 1, "concat")
    row = e2e[(e2e.level == 1.0) & (e2e.seed == 1) & (e2e.method == "concat")]
    assert float(row.test_acc.iloc[0]) == runs[key].metrics()[-1]["test_acc"]
    # frozen heads read features of held-out images, tested on the e2e runs' test images
    exp = exps[(1.0, 1)]
    assert len(exp.data.train_y) == 100 and len(exp.data.test_y) == 200
    assert exp.data.key["heldout"] == 100
    assert torch.equal(exp.data.test_y, fusion_splits(tiny(seed=1, metadata={**META, "interaction": 1.0,
                                                                           "draw_seed": 1}))[1].labels)


def test_a_second_pass_trains_nothing(small_sweep, monkeypatch):
    runs, exps, results = small_sweep

    def boom(*a, **k):
        raise AssertionError("retrained")
    monkeypatch.setattr(ft, "train_head", boom)
    again = ft.frozen_results(exps, FROZEN, progress=False)
    assert np.allclose(again.test_acc.values, results[results["mode"] == "frozen"].test_acc.values)


def test_table_gains_findings_and_figure(small_sweep):
    _, _, results = small_sweep
    table = ft.sweep_table(results)
    assert list(table.columns) == ["training", "method", "a = 0", "a = 1"]
    assert " ± " in table.iloc[0]["a = 0"]
    g = ft.gains(results, "frozen", "dynamic_mlp_c", "image_only")
    assert list(g.level) == [0.0, 1.0] and (g.low <= g["mean"]).all() and (g["mean"] <= g.high).all()
    text = ft.findings_markdown(results)
    assert "At interaction 0 (frozen heads)" in text and "end to end" in text and "95% CI" in text
    fig = plots.interaction_sweep_figure(results, {"frozen": {"dynamic_mlp_c": g}}, ft.LABELS, ft.BAYES)
    assert fig.axes[0].get_ylabel() == "test top-1 (%)" and "interaction" in fig.axes[-1].get_xlabel()
    plots.close(fig)


def test_gains_are_paired_by_seed():
    rows = [{"mode": "frozen", "level": 0.0, "seed": s, "method": m, "test_acc": v}
            for s, (a, b) in enumerate([(0.50, 0.60), (0.70, 0.81), (0.90, 0.99)])
            for m, v in (("image_only", a), ("dynamic_mlp_c", b))]
    g = ft.gains(pd.DataFrame(rows), "frozen", "dynamic_mlp_c", "image_only")
    # differences 10, 11, 9 points: mean 10, sd 1, t(0.975, 2) = 4.303
    assert g["mean"].iloc[0] == pytest.approx(10.0)
    assert g.high.iloc[0] - 10 == pytest.approx(4.3027 / math.sqrt(3), rel=1e-3)


def test_per_class_sentence_follows_the_table():
    table = pd.DataFrame({"image_only": [80.0, 70.0, 90.0, 60.0], "dynamic_mlp_c": [80.2, 73.1, 95.0, 61.0]},
                         index=["T-shirt/top", "Dress", "Sandal", "Shirt"])
    text = ft.per_class_sentence(table, ["T-shirt/top", "Shirt"])
    assert text.index("Sandal (+5.0)") < text.index("Dress (+3.1)")
    assert "gain less than the rest" in text


def test_pictures_figure_shows_each_class_at_each_metadata():
    config = tiny(metadata={**META, "interaction": 1.0})
    train, _, classes = fusion_splits(config)
    sim = config.simulator(10, classes)
    pics = {k: sim.at_metadata(train.images[int((train.labels == k).nonzero()[0])], k, [40, 40, -40], [172, 355, 172])
            for k in (0, 2)}
    assert not torch.equal(pics[0][0], pics[0][1])
    fig = plots.interaction_pictures_figure(pics, classes, [40, 40, -40], [172, 355, 172], 1.0)
    assert len(fig.axes) == 6
    plots.close(fig)


def test_image_mlp_head_is_as_large_as_dynamic_mlp_c_and_ignores_the_metadata():
    from ctcbook.models.fusion import count_parameters

    for c in (16, 64):
        dyn, mlp = (build_head(m, c, 10, 6, asdict(SETTINGS)) for m in ("dynamic_mlp_c", "image_mlp"))
        assert abs(count_parameters(mlp) - count_parameters(dyn)) <= c + 3 + 10
    x = torch.randn(5, 64)
    assert torch.equal(mlp(x, torch.randn(5, 6)), mlp(x, torch.zeros(5, 6)))


def test_a_cached_pass_prints_no_progress(small_sweep, capsys):
    _, exps, _ = small_sweep
    assert all(not exp.missing(FROZEN, [s]) for (a, s), exp in exps.items())
    ft.frozen_results(exps, FROZEN, progress=True)
    assert "frozen heads" not in capsys.readouterr().err
