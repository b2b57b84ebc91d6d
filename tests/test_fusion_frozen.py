"""Chapter 4's frozen heads: cache keys, public label smoothing, the parameter-matched MLP, the Bayes ceiling, heads
on an end-to-end backbone."""
from dataclasses import asdict

import pytest
import torch

import ctcbook.chapters.ch4_fusion as ft
from ctcbook.data.metadata import MetadataSimulator
from ctcbook.models.fusion import build_head, count_parameters
from ctcbook.runs import RunStore

K = 4
FAST = ft.HeadSettings(meta_width=16, embed_dim=16, reduced_dim=16, hidden_dim=4, epochs=8, batch_size=64, lr=3e-3)


def _data(n_train=600, n_test=400, seed=0) -> ft.FusionData:
    """Image features that carry the class weakly plus strongly informative simulated metadata (interaction 0)."""
    g = torch.Generator().manual_seed(seed)
    sim = MetadataSimulator(K, seed=seed, location_spread=20.0, date_spread=30.0, background=0.2)
    ys = [torch.arange(n) % K for n in (n_train, n_test)]
    metas = [sim.sample(y.numpy(), sample_seed=i) for i, y in enumerate(ys)]
    xs = [torch.randn(len(y), 8, generator=g) + 1.0 * torch.nn.functional.one_hot(y, 8).float() for y in ys]
    return ft.FusionData(xs[0], metas[0].encode(), ys[0], xs[1], metas[1].encode(), ys[1], metas[0], metas[1],
                         tuple(f"c{k}" for k in range(K)), sim, {"t": 1})


def test_the_default_smoothing_stays_out_of_the_cache_key():
    assert "smoothing" not in ft.HeadSettings().cache_key()
    assert ft.HeadSettings(smoothing="public").cache_key()["smoothing"] == "public"


def test_public_smoothing_trains_and_differs_from_torchs():
    d = _data()
    a, la = ft.train_head("concat", d.train_x, d.train_m, d.train_y, K, FAST, seed=0)
    b, lb = ft.train_head("concat", d.train_x, d.train_m, d.train_y, K,
                          ft.HeadSettings(**{**asdict(FAST), "smoothing": "public"}), seed=0)
    assert lb[-1] < lb[0] and la != lb
    with pytest.raises(ValueError, match="smoothing"):
        ft.HeadSettings(smoothing="timm")


def test_mlp_concat_head_matches_dynamic_mlp_c_size_and_trains():
    c = build_head("dynamic_mlp_c", 8, K, 6, asdict(FAST))
    mlp = build_head("mlp_concat", 8, K, 6, asdict(FAST))
    assert abs(count_parameters(c) - count_parameters(mlp)) <= (8 + 16 + 3 + K) / 2
    # At the chapter's default widths with a 64-d backbone and ten classes.
    s = ft.HeadSettings()
    c, mlp = build_head("dynamic_mlp_c", 64, 10, 6, asdict(s)), build_head("mlp_concat", 64, 10, 6, asdict(s))
    assert abs(count_parameters(c) - count_parameters(mlp)) <= (64 + 64 + 3 + 10) / 2
    d = _data()
    head, losses = ft.train_head("mlp_concat", d.train_x, d.train_m, d.train_y, K, FAST)
    assert losses[-1] < losses[0]


def test_bayes_ceiling_is_at_least_the_fusions(tmp_path):
    d = _data()
    exp = ft.FusionExperiment(RunStore(tmp_path).open({"fake": "backbone"}), d, FAST)
    res = exp.results(["image_only", "concat", "geo_prior"], [0], progress=False)
    ceiling = ft.bayes_ceiling(exp, [0]).test_acc.iloc[0]
    img = res.set_index("method").test_acc["image_only"] * 100
    assert ceiling > img + 5                  # the exact metadata likelihood adds a lot here
    assert ceiling >= res.test_acc.max() * 100 - 3


def test_frozen_heads_on_an_end_to_end_backbone_at_interaction(tmp_path):
    from ctcbook.config import FusionTrainConfig
    from ctcbook.fusion_train import fusion_splits
    from ctcbook import train as engine

    cfg = FusionTrainConfig(train_size=200, test_size=100, width=4, epochs=1, warmup_epochs=0, batch_size=50,
                            method="image_only", head={"meta_width": 8, "embed_dim": 8, "reduced_dim": 8,
                                                       "hidden_dim": 4, "num_blocks": 2},
                            metadata={"interaction": 0.8, "groups": [[0, 2, 4, 6]], "draw_seed": 1})
    train, _, _ = fusion_splits(cfg)
    plain, _, _ = fusion_splits(cfg.replace(metadata={**cfg.metadata, "interaction": 0.0}))
    assert not torch.equal(train.images, plain.images)           # the backbone trains on the rendered images
    torch.testing.assert_close(train.meta, plain.meta)           # ... with the same metadata draw
    run = engine.train(cfg, store=RunStore(tmp_path), progress=False)
    d = ft.fusion_data_from_e2e(run)
    assert d.train_x.shape == (200, 16) and d.test_x.shape == (100, 16) and d.simulator.interaction == 0.8
    torch.testing.assert_close(d.train_m, train.meta)
    res = ft.FusionExperiment(run, d, FAST).results(["image_only", "dynamic_mlp_c"], [0], progress=False)
    assert res.test_acc.between(0, 1).all()
