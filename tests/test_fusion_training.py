"""Chapter 4's head training: heads learn what the inputs carry, results are cached, bad input is refused."""
import numpy as np
import pandas as pd
import pytest
import torch

import ctcbook.chapters.ch4_fusion as ft
from ctcbook.data.metadata import MetadataSimulator
from ctcbook.models.fusion import FUSION_METHODS
from ctcbook.runs import RunStore

K = 4
FAST = ft.HeadSettings(meta_width=16, embed_dim=16, reduced_dim=16, hidden_dim=4, epochs=15, batch_size=64,
                       lr=3e-3)


def _data(n_train=600, n_test=400, signal="metadata", seed=0) -> ft.FusionData:
    """Synthetic features and simulated metadata: ``signal`` says which input carries the label."""
    g = torch.Generator().manual_seed(seed)
    sim = MetadataSimulator(K, seed=seed, location_spread=5.0, date_spread=10.0, background=0.0)
    ys = [torch.arange(n) % K for n in (n_train, n_test)]
    metas = [sim.sample(y.numpy(), sample_seed=i) for i, y in enumerate(ys)]
    xs = [torch.randn(len(y), 8, generator=g) for y in ys]
    if signal == "image":
        xs = [x + 5.0 * torch.nn.functional.one_hot(y, 8).float() for x, y in zip(xs, ys)]
    return ft.FusionData(xs[0], metas[0].encode(), ys[0], xs[1], metas[1].encode(), ys[1], metas[0], metas[1],
                         tuple(f"c{k}" for k in range(K)), sim, {"signal": signal})


def _acc(head, d):
    return float((ft.predict(head, d.test_x, d.test_m).argmax(1) == d.test_y).float().mean())


@pytest.mark.parametrize("method", ["metadata_only", "concat", "dynamic_mlp_c"])
def test_heads_learn_a_metadata_only_signal(method):
    d = _data(signal="metadata")
    head, losses = ft.train_head(method, d.train_x, d.train_m, d.train_y, K, FAST, seed=0)
    assert losses[-1] < losses[0]
    assert _acc(head, d) > 0.9                                    # metadata alone separates these classes


def test_image_only_cannot_use_the_metadata_signal_but_uses_the_image():
    d = _data(signal="metadata")
    head, _ = ft.train_head("image_only", d.train_x, d.train_m, d.train_y, K, FAST)
    assert _acc(head, d) < 0.45                                   # chance is 0.25
    d = _data(signal="image")
    longer = ft.HeadSettings(**{**FAST.__dict__, "epochs": 50})         # a linear head from scratch needs more steps
    head, _ = ft.train_head("image_only", d.train_x, d.train_m, d.train_y, K, longer)
    assert _acc(head, d) > 0.9


def test_training_is_deterministic_per_seed():
    d = _data()
    threads = torch.get_num_threads()
    a, _ = ft.train_head("dynamic_mlp_a", d.train_x, d.train_m, d.train_y, K, FAST, seed=3)
    assert torch.get_num_threads() == threads                     # the single-threaded section is undone
    b, _ = ft.train_head("dynamic_mlp_a", d.train_x, d.train_m, d.train_y, K, FAST, seed=3)
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), n


def _experiment(tmp_path, settings=FAST):
    run = RunStore(tmp_path).open({"fake": "backbone"})
    return ft.FusionExperiment(run, _data(), settings)


def test_results_are_cached_and_not_retrained(tmp_path, monkeypatch):
    methods = list(FUSION_METHODS)
    first = _experiment(tmp_path).results(methods, [0, 1], progress=False)
    assert len(first) == len(methods) * 2 and first.test_acc.between(0, 1).all()
    assert set(first.method) == set(methods)

    def refuse(*a, **k):
        raise AssertionError("a cached head was retrained")

    monkeypatch.setattr(ft, "train_head", refuse)
    again = _experiment(tmp_path).results(methods, [0, 1], progress=False)
    pd.testing.assert_frame_equal(first, again)
    # a different setting is a different cache: it must train
    with pytest.raises(AssertionError, match="retrained"):
        _experiment(tmp_path, ft.HeadSettings(**{**FAST.__dict__, "epochs": 2})).results(["add"], [0],
                                                                                         progress=False)


def test_an_interrupted_pass_resumes_with_the_missing_heads(tmp_path, monkeypatch):
    exp = _experiment(tmp_path)
    exp.results(["image_only"], [0], progress=False)
    trained = []
    real = ft.train_head
    monkeypatch.setattr(ft, "train_head", lambda method, *a, **k: trained.append(method) or real(method, *a, **k))
    exp.results(["image_only", "add"], [0], progress=False)
    assert trained == ["add"]


def test_geo_prior_is_the_product_of_the_two_cached_classifiers(tmp_path):
    exp = _experiment(tmp_path)
    res = exp.results(["geo_prior"], [0], progress=False)
    assert list(res.method) == ["geo_prior"]
    d = exp.data
    p_img = ft.predict(exp.head("image_only", 0), d.test_x, d.test_m)
    p_meta = ft.predict(exp.head("metadata_only", 0), d.test_x, d.test_m)
    prod = p_img * p_meta
    geo = ft.predict(exp.head("geo_prior", 0), d.test_x, d.test_m)
    assert torch.allclose(geo, prod / prod.sum(1, keepdim=True), atol=1e-5)
    assert res.test_acc.iloc[0] == pytest.approx(float((prod.argmax(1) == d.test_y).float().mean()))


def test_probabilities_follow_the_location_for_a_metadata_head(tmp_path):
    exp = _experiment(tmp_path)
    exp.results(["dynamic_mlp_c", "image_only"], [0], progress=False)
    sim = exp.data.simulator
    lat, lon, day = sim.centre_lat, sim.centre_lon, sim.peak_day.astype(float)
    x = exp.data.test_x[0]
    p = ft.probabilities_at(exp.head("dynamic_mlp_c", 0), x, lat, lon, day)
    assert p.shape == (K, K) and torch.allclose(p.sum(1), torch.ones(K), atol=1e-5)
    assert (p.argmax(1) == torch.arange(K)).all()                  # at class k's centre, class k wins
    q = ft.probabilities_at(exp.head("image_only", 0), x, lat, lon, day)
    assert torch.allclose(q, q[:1].expand(K, -1))                  # image-only ignores where the image was taken


def test_bad_parameters_are_refused_with_their_name(tmp_path):
    with pytest.raises(ValueError, match="HeadSettings.epochs"):
        ft.HeadSettings(epochs=0)
    with pytest.raises(ValueError, match="HeadSettings.lr"):
        ft.HeadSettings(lr=-1.0)
    d = _data()
    with pytest.raises(ValueError, match="method must be one of"):
        ft.train_head("sum", d.train_x, d.train_m, d.train_y, K)
    with pytest.raises(ValueError, match="method must be one of"):
        ft.train_head("geo_prior", d.train_x, d.train_m, d.train_y, K)   # combined, never trained
    with pytest.raises(ValueError, match="one N"):
        ft.train_head("add", d.train_x, d.train_m[:5], d.train_y, K)
    exp = _experiment(tmp_path)
    with pytest.raises(ValueError, match="seeds"):
        exp.results(["add"], [-1])
    with pytest.raises(FileNotFoundError, match="no trained add head"):
        exp.head("add", 0)
    with pytest.raises(ValueError, match="classes"):
        ft.tsne_points(exp, "image_only", [0, 9])
    with pytest.raises(ValueError, match="lat, lon and day"):
        ft.probabilities_at(torch.nn.Identity(), d.test_x[0], [0.0], [0.0, 1.0], [1])


def test_tsne_points_shape_and_cache(tmp_path, monkeypatch):
    exp = _experiment(tmp_path)
    exp.results(["image_only"], [0], progress=False)
    coords, labels = ft.tsne_points(exp, "image_only", [0, 1], n=60)
    assert coords.shape == (60, 2) and np.isfinite(coords).all() and set(labels.tolist()) == {0, 1}
    import sklearn.manifold

    monkeypatch.setattr(sklearn.manifold, "TSNE", None)           # a second call must read the cache
    again, labels2 = ft.tsne_points(exp, "image_only", [0, 1], n=60)
    np.testing.assert_array_equal(again, coords)
    np.testing.assert_array_equal(labels2, labels)


def _results(c_accs, concat_accs):
    rows = []
    for seed, (c, cat) in enumerate(zip(c_accs, concat_accs)):
        rows += [{"method": "image_only", "seed": seed, "test_acc": 0.80, "n_params": 1},
                 {"method": "metadata_only", "seed": seed, "test_acc": 0.50, "n_params": 1},
                 {"method": "concat", "seed": seed, "test_acc": cat, "n_params": 1},
                 {"method": "dynamic_mlp_c", "seed": seed, "test_acc": c, "n_params": 1}]
    return pd.DataFrame(rows)


def test_summary_table_has_human_columns_and_paired_gains():
    table = ft.summary_table(_results([0.90, 0.85, 0.95], [0.89, 0.84, 0.94]))
    assert list(table.columns) == ["method", "seeds", "top-1 (%)", "95% CI (%)", "gain over image only (points)",
                                   "95% CI of the gain (points)", "head parameters"]
    assert table.method.tolist() == ["image only", "metadata only", "concatenation", "Dynamic MLP-C"]
    c = table.set_index("method").loc["Dynamic MLP-C"]
    assert c["top-1 (%)"] == pytest.approx(90.0)
    # t_{0.975, 2} = 4.303 x sd 5 / sqrt 3 = 12.421 points either side of 90, printed rounded outwards (as every
    # interval of the book, so that a printed bound never claims more than the verdict decided on)
    assert c["95% CI (%)"] == "[77.57, 102.43]"
    assert c["gain over image only (points)"] == pytest.approx(10.0)
    assert c["95% CI of the gain (points)"] == "[-2.43, 22.43]"
    # image only varies by seed and C follows it +5 points on every seed: the paired gain has no spread at all
    rows = [{"method": m, "seed": seed, "test_acc": acc + (0.05 if m == "dynamic_mlp_c" else 0.0), "n_params": 1}
            for seed, acc in enumerate([0.80, 0.75, 0.85]) for m in ("image_only", "dynamic_mlp_c")]
    gain = ft.summary_table(pd.DataFrame(rows)).set_index("method").loc["Dynamic MLP-C"]
    assert gain["95% CI of the gain (points)"] == "[5.00, 5.00]"


def test_metadata_explorer_renders_one_frame_per_point(tmp_path):
    from ctcbook.book import explore

    exp = _experiment(tmp_path)
    exp.results(["image_only", "dynamic_mlp_c"], [0], progress=False)
    d, sim = exp.data, exp.data.simulator
    p_img = ft.predict(exp.head("image_only", 0), d.test_x[:1], d.test_m[:1])[0].numpy()
    view = explore.MetadataView(np.zeros((28, 28), np.uint8), 0, d.test_x[0], exp.head("dynamic_mlp_c", 0), p_img,
                                d.class_names, (sim.centre_lat, sim.centre_lon, sim.peak_day))
    points = explore.metadata_grid(view, [0, 1], [1, 200])
    assert points[1] == (pytest.approx(sim.centre_lat[0]), pytest.approx(sim.centre_lon[0]), 200.0)
    draw = lambda fig, point: explore.draw_metadata(fig, view, *point)
    html = explore.static_slider(draw, points, view.figsize, dpi=30)
    assert html.count("data:image/png;base64") == len(points) == 4
    with pytest.raises(ValueError, match="points"):
        explore.static_slider(draw, [], view.figsize)
