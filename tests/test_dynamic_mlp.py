"""Dynamic MLP, fusion baselines, metadata encoding, the iNat21 reader and the simulated metadata."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from ctcbook.data.metadata import MetadataSimulator, load_inat21, read_inat_json
from ctcbook.data.sources import DataNotFoundError
from ctcbook.models.dynamic_mlp import (DynamicMLPFusion, DynamicMLPHead, MetadataNet, encode_metadata,
                                        metadata_dim)
from ctcbook.models.fusion import (FUSION_METHODS, FusionHead, GeoPriorHead, ImageOnlyHead, MetadataOnlyHead,
                                   build_fusion_head)

FIXTURE = Path(__file__).parent / "fixtures" / "inat21_mini"
C, K = 32, 10   # small feature width and class count for the CPU tests


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _batch(n=8, cin=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, generator=g), torch.rand(n, cin, generator=g) * 2 - 1


def _small(method: str) -> dict:
    """Reduced widths so the CPU tests stay fast (the paper's sizes are checked by the parameter-count test)."""
    kw = {} if method == "image_only" else {"meta_width": 24}
    if method.startswith("dynamic_mlp"):
        kw.update(embed_dim=16, reduced_dim=16, hidden_dim=8)
    if method == "concat":
        kw.update(embed_dim=16)
    return kw


# --- shapes ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", FUSION_METHODS)
@pytest.mark.parametrize("cin", [6, 4, 2])
def test_every_head_returns_logits_and_features(method, cin):
    torch.manual_seed(0)
    head = build_fusion_head(method, C, K, cin, **_small(method)).eval()
    x, m = _batch(5, cin)
    logits = head(x, m)
    feats = head.forward_features(x, m)
    assert logits.shape == (5, K) and logits.dtype == torch.float32
    expected_width = {"concat": C + 16, "metadata_only": 24}.get(method, C)
    assert feats.shape == (5, expected_width)
    if hasattr(head, "classifier"):
        assert torch.allclose(logits, head.classifier(feats), atol=1e-6)


@pytest.mark.parametrize("n_blocks", [1, 2, 3])
def test_dynamic_mlp_depth(n_blocks):
    fusion = DynamicMLPFusion(C, embed_dim=8, reduced_dim=16, hidden_dim=4, num_blocks=n_blocks, variant="A")
    assert len(fusion.blocks) == n_blocks
    assert fusion(torch.randn(3, C), torch.randn(3, 8)).shape == (3, C)


def test_bad_arguments_are_refused_with_the_parameter_name():
    with pytest.raises(ValueError, match="variant"):
        DynamicMLPHead(C, K, variant="D")
    with pytest.raises(ValueError, match="method"):
        build_fusion_head("sum", C, K)
    with pytest.raises(ValueError, match="metadata must have shape"):
        DynamicMLPHead(C, K, cin=6, **_small("dynamic_mlp_c"))(torch.randn(2, C), torch.randn(2, 4))
    with pytest.raises(ValueError, match="lon"):
        encode_metadata([0.0], [190.0], [1])
    with pytest.raises(ValueError, match="day_of_year"):
        encode_metadata([0.0], [0.0], [366], days_in_year=365)


# --- parameter counts at the paper's ResNet-50 sizes ----------------------------------------------------------------
def _lin(i, o, bias=True):
    return i * o + (o if bias else 0)


def _block_params(variant, i, o, e):
    """Parameters of one dynamic block, from the layer shapes of the public code's Dynamic_MLP_A/B/C."""
    if variant == "A":
        return _lin(e, i * o) + 2 * o                            # weight generator + LayerNorm(o)
    branch_in = i + e if variant == "C" else None
    img = _lin(branch_in or i, i) + _lin(i, i)                   # conv11 (+ReLU), conv12
    wgt = _lin(branch_in or e, i) + _lin(i, i * o)               # conv21 (+ReLU), conv22
    return img + wgt + 2 * o + _lin(o, o, bias=False) + 2 * o    # LN(o), bias-free Linear(o, o), LN(o)


def test_parameter_counts_match_the_layer_shapes_for_resnet50_sizes():
    c, d, h, e, cin, k = 2048, 256, 64, 256, 6, 10000
    meta = _lin(cin, 256) + 4 * 2 * _lin(256, 256) + _lin(256, e, bias=False)
    counts = {}
    for v in "ABC":
        blocks = _block_params(v, d, h, e) + _block_params(v, h, d, e)
        fusion = _lin(c, d) + blocks + _lin(d, c) + 2 * c
        head = DynamicMLPHead(c, k, cin, embed_dim=e, reduced_dim=d, hidden_dim=h, num_blocks=2, variant=v)
        assert _n_params(head.fusion) == fusion
        assert _n_params(head.metadata_net) == meta == 593_664
        assert _n_params(head) == meta + fusion + _lin(c, k)
        counts[v] = fusion
    # C's image branch reads [x; e] instead of x (+ e*i weights) and its weight branch [x; e] instead of e (+ i*i),
    # per block with input width i = d, then h; A has no image branch and generates W straight from e.
    assert counts["C"] - counts["B"] == sum(e * i + i * i for i in (d, h)) == 151_552
    # A's generator maps e (256) straight to i*o weights in both blocks; B and C first reduce to i (64 in the
    # second block), so A is the largest here: 8.4M vs 6.6M (B) and 6.8M (C) fusion parameters.
    assert counts["B"] < counts["C"] < counts["A"]
    assert counts["A"] == 2 * (_lin(e, d * h)) + 2 * d + 2 * h + _lin(c, d) + _lin(d, c) + 2 * c


# --- each branch against a hand-written reference on fixed weights ---------------------------------------------------
def _randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """``module`` with every parameter redrawn (LayerNorm gains and all biases too, so none is 1 or 0). Float32:
    ``.double()`` is avoided on purpose, so these tests do not depend on ``nn.Module._apply`` working."""
    g = torch.Generator().manual_seed(seed)
    module = module.eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.ndim == 1 else 0.3))
    return module


def _affine(lin: torch.nn.Linear, v: torch.Tensor) -> torch.Tensor:
    return v @ lin.weight.T + (0 if lin.bias is None else lin.bias)


def _layer_norm(ln: torch.nn.LayerNorm, v: torch.Tensor) -> torch.Tensor:
    centred = v - v.mean(1, keepdim=True)
    return centred / torch.sqrt(centred.square().mean(1, keepdim=True) + ln.eps) * ln.weight + ln.bias


def _reference_block(block, variant: str, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """One dynamic projection written out from the paper and the authors' code: y_n = x_n W(e_n) per sample.

    A: W = Linear(e) reshaped (in, out); y -> ReLU(LN(y)). B: u = L2(ReLU(L1(x))), W = L4(ReLU(L3(e))); C: the
    same with both branches reading [x; e]; B and C then ReLU(LN(.)), bias-free Linear, ReLU(LN(.)).
    """
    i, o = block.in_dim, block.out_dim
    if variant == "A":
        w = _affine(block.get_weight, e).reshape(len(x), i, o)
        return torch.relu(_layer_norm(block.norm, torch.einsum("ni,nio->no", x, w)))
    img_in = torch.cat([x, e], 1) if variant == "C" else x
    wgt_in = torch.cat([x, e], 1) if variant == "C" else e
    (l1, _), l2 = block.img_branch
    (l3, _), l4 = block.weight_branch
    u = _affine(l2, torch.relu(_affine(l1, img_in)))
    w = _affine(l4, torch.relu(_affine(l3, wgt_in))).reshape(len(x), i, o)
    y = torch.einsum("ni,nio->no", u, w)
    ln1, _, lin, ln2, _ = block.post
    return torch.relu(_layer_norm(ln2, _affine(lin, torch.relu(_layer_norm(ln1, y)))))


@pytest.mark.parametrize("variant", ["A", "B", "C"])
def test_dynamic_mlp_matches_a_hand_written_reference(variant):
    c, e_dim, d, h = 12, 5, 7, 3
    fusion = _randomised(DynamicMLPFusion(c, embed_dim=e_dim, reduced_dim=d, hidden_dim=h, num_blocks=2,
                                          variant=variant), seed=3)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, c, generator=g)
    e = torch.randn(6, e_dim, generator=g)
    with torch.no_grad():
        hidden = _affine(fusion.reduce, x)
        for block in fusion.blocks:
            got = block(hidden, e)
            want = _reference_block(block, variant, hidden, e)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
            hidden = want
        want = x + _layer_norm(fusion.norm, _affine(fusion.expand, hidden))
        torch.testing.assert_close(fusion(x, e), want, rtol=1e-4, atol=1e-5)


def test_dynamic_mlp_head_converts_dtype_like_any_module():
    # .to()/.double()/.cuda() go through nn.Module._apply; a submodule that shadows that name breaks them all.
    torch.manual_seed(0)
    head = DynamicMLPHead(C, K, 6, embed_dim=8, reduced_dim=8, hidden_dim=4, meta_width=16).eval()
    x, m = _batch(4)
    with torch.no_grad():
        want = head(x, m).double()
        got = head.to(torch.float64)(x.double(), m.double())
    assert got.dtype == torch.float64 and all(p.dtype == torch.float64 for p in head.parameters())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_dynamic_mlp_c_branches_each_read_image_and_metadata():
    # Variant C's defining property: the image branch sees e and the weight branch sees x. With the other branch's
    # output held fixed, changing x (or e) in one branch's input alone must change the block's output.
    block = _randomised(DynamicMLPFusion(12, embed_dim=5, reduced_dim=6, hidden_dim=3, num_blocks=1,
                                         variant="C"), seed=5).blocks[0]
    g = torch.Generator().manual_seed(6)
    x, e = torch.randn(4, 6, generator=g), torch.randn(4, 5, generator=g)
    x2, e2 = torch.randn(4, 6, generator=g), torch.randn(4, 5, generator=g)
    with torch.no_grad():
        u = lambda xi, ei: block.img_branch(torch.cat([xi, ei], 1))
        w = lambda xi, ei: block.weight_branch(torch.cat([xi, ei], 1))
        for a, b in ((u(x, e), u(x, e2)), (u(x, e), u(x2, e)), (w(x, e), w(x, e2)), (w(x, e), w(x2, e))):
            assert (a - b).abs().amax() > 1e-3  # (a row whose ReLUs are all off may not move)
        torch.testing.assert_close(block(x, e), _reference_block(block, "C", x, e), rtol=1e-4, atol=1e-5)


# --- the fusion uses the metadata -----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [m for m in FUSION_METHODS if m != "image_only"])
def test_shuffling_metadata_changes_outputs(method):
    torch.manual_seed(1)
    head = build_fusion_head(method, C, K, 6, **_small(method)).eval()
    x, m = _batch(8)
    perm = torch.roll(torch.arange(8), 1)
    with torch.no_grad():
        a, b = head(x, m), head(x, m[perm])
    assert (a - b).abs().amax(dim=1).min() > 1e-4          # every row changes


def test_image_only_ignores_metadata():
    head = ImageOnlyHead(C, K).eval()
    x, m = _batch(8)
    assert torch.equal(head(x, m), head(x, m.flip(0)))


def _zero_branch(net: MetadataNet) -> None:
    with torch.no_grad():
        net.out.weight.zero_()                               # branch output e == 0 for every input


def test_addition_with_a_zero_branch_is_exactly_image_only():
    torch.manual_seed(2)
    add, img = FusionHead(C, K, 6, op="add").eval(), ImageOnlyHead(C, K).eval()
    img.classifier.load_state_dict(add.classifier.state_dict())
    _zero_branch(add.metadata_net)
    x, m = _batch(8)
    assert torch.equal(add.forward_features(x, m), x)
    assert torch.allclose(add(x, m), img(x), atol=1e-6)


def test_concatenation_with_a_zero_branch_is_an_image_only_classifier():
    torch.manual_seed(3)
    cat = FusionHead(C, K, 6, op="concat", embed_dim=16).eval()
    _zero_branch(cat.metadata_net)
    x, m = _batch(8)
    w, b = cat.classifier.weight, cat.classifier.bias
    assert torch.allclose(cat(x, m), x @ w[:, :C].T + b, atol=1e-6)


def test_multiplication_with_a_zero_branch_loses_the_image():
    torch.manual_seed(4)
    mul = FusionHead(C, K, 6, op="multiply").eval()
    _zero_branch(mul.metadata_net)
    x, m = _batch(8)
    assert torch.equal(mul.forward_features(x, m), torch.zeros_like(x))


def test_geo_prior_with_a_uniform_metadata_classifier_is_image_only():
    torch.manual_seed(5)
    geo = build_fusion_head("geo_prior", C, K, 6).eval()
    _zero_branch(geo.metadata.net)                           # metadata logits 0 -> uniform probabilities
    x, m = _batch(8)
    p = torch.softmax(geo(x, m), dim=1)
    assert torch.allclose(p, torch.softmax(geo.image(x), dim=1), atol=1e-6)
    # and with a trained-looking prior it is the normalised product of the two classifiers' probabilities
    torch.manual_seed(6)
    img, meta = ImageOnlyHead(C, K).eval(), MetadataOnlyHead(K, 6).eval()
    geo = GeoPriorHead(img, meta)
    prod = torch.softmax(img(x), 1) * torch.softmax(meta(None, m), 1)
    assert torch.allclose(torch.softmax(geo(x, m), 1), prod / prod.sum(1, keepdim=True), atol=1e-6)


def test_missing_metadata_rows_share_one_embedding():
    torch.manual_seed(7)
    head = DynamicMLPHead(C, K, 6, **_small("dynamic_mlp_c")).eval()
    x, _ = _batch(4)
    zeros = encode_metadata([np.nan] * 4, [0.0] * 4, [1] * 4)
    e = head.metadata_net(zeros)
    assert torch.equal(zeros, torch.zeros(4, 6)) and torch.allclose(e, e[:1].expand(4, -1))
    assert e.abs().sum() > 0                                 # not neutral: biases give a learned constant


# --- encoding -------------------------------------------------------------------------------------------------------
def test_encoding_values_and_layout():
    v = encode_metadata([45.0], [-90.0], [365], days_in_year=365)
    lat, lon, t = 0.5, -0.5, 1.0
    expect = [math.sin(math.pi * lat), math.sin(math.pi * lon), math.sin(math.pi * t),
              math.cos(math.pi * lat), math.cos(math.pi * lon), math.cos(math.pi * t)]
    assert torch.allclose(v[0], torch.tensor(expect), atol=1e-6)
    assert encode_metadata([45.0], [-90.0], None, use_date=False).shape == (1, 4)
    assert torch.allclose(encode_metadata(None, None, [365], use_location=False)[0],
                          torch.tensor([expect[2], expect[5]]), atol=1e-6)
    assert [metadata_dim(True, True), metadata_dim(True, False), metadata_dim(False, True)] == [6, 4, 2]


def test_encoding_is_periodic():
    a = encode_metadata([10.0, 10.0], [-180.0, 180.0], [100, 100])
    assert torch.allclose(a[0], a[1], atol=1e-6)
    days = encode_metadata(None, None, [1, 365, 183], use_location=False)
    near, far = (days[0] - days[1]).norm(), (days[0] - days[2]).norm()
    assert near < 0.05 < 1.9 < far
    leap = encode_metadata(None, None, [1, 366], days_in_year=[366, 366], use_location=False)
    assert (leap[0] - leap[1]).norm() < 0.05
    # 31 December is +1 in both kinds of year
    dec31 = encode_metadata(None, None, [365, 366], days_in_year=[365, 366], use_location=False)
    assert torch.allclose(dec31[0], dec31[1], atol=1e-6)


def test_missing_values_give_zero_vectors():
    v = encode_metadata([np.nan, 10.0, 10.0, 10.0], [0.0, np.nan, 0.0, 0.0], [1, 1, np.nan, 1],
                        valid=[True, True, True, False])
    assert torch.equal(v, torch.zeros(4, 6))
    # the code zeroes the vector when any field is missing, even one that is not used
    geo_only = encode_metadata([10.0, 10.0], [0.0, 0.0], [np.nan, 5], use_date=False)
    assert torch.equal(geo_only[0], torch.zeros(4)) and geo_only[1].abs().sum() > 0


def test_encoding_follows_tensor_device_and_accepts_tensors():
    t = torch.tensor([10.0, -20.0])
    v = encode_metadata(t, t, torch.tensor([5.0, 6.0]))
    assert v.device == t.device and v.shape == (2, 6)


# --- iNat21 reader --------------------------------------------------------------------------------------------------
def test_inat_fixture_loads_labels_locations_dates_and_missing_values():
    r = load_inat21(FIXTURE, "train_mini")
    assert len(r.labels) == 6 and len(r.class_names) == 3
    assert r.class_names == ["Poecile atricapillus", "Rosa canina", "Amanita muscaria"]
    assert r.image_ids.tolist() == [0, 1, 2, 3, 4, 5]
    assert r.labels.tolist() == [0, 1, 2, 0, 1, 2]        # matched by image_id; annotations are shuffled
    assert r.paths[2] == str(FIXTURE / "train_mini" / "00002_Fungi_Basidiomycota_Agaricomycetes_Agaricales_"
                             "Amanitaceae_Amanita_muscaria" / "0a1b2c3d-0002-4000-8000-000000000000.jpg")
    np.testing.assert_allclose(r.latitude[[0, 1, 3, 4, 5]], [43.83486, -33.9, 51.5, 0.0, -90.0])
    np.testing.assert_allclose(r.longitude[[0, 1, 3, 4, 5]], [-71.22231, 180.0, -0.12, 0.0, -180.0])
    assert np.isnan(r.latitude[2]) and np.isnan(r.longitude[2])
    # 2010-07-14 = day 195; 2020-12-31 = day 366 of a leap year; 2019-03-01 = day 60; 2021-01-01; 2019-12-31
    np.testing.assert_array_equal(r.day_of_year[[0, 1, 2, 4, 5]], [195, 366, 60, 1, 365])
    assert np.isnan(r.day_of_year[3])
    assert r.days_in_year.tolist() == [365, 366, 365, 365, 365, 365]
    assert r.valid.tolist() == [True, True, False, False, True, True]
    enc = r.metadata.encode()
    assert torch.equal(enc[2], torch.zeros(6)) and torch.equal(enc[3], torch.zeros(6))
    t0 = 2 * 195 / 365 - 1
    expect0 = [math.sin(math.pi * 43.83486 / 90), math.sin(math.pi * -71.22231 / 180), math.sin(math.pi * t0),
               math.cos(math.pi * 43.83486 / 90), math.cos(math.pi * -71.22231 / 180), math.cos(math.pi * t0)]
    assert torch.allclose(enc[0], torch.tensor(expect0, dtype=torch.float32), atol=1e-6)
    assert torch.allclose(enc[1, [2, 5]], torch.tensor([0.0, -1.0]), atol=1e-6)   # 31 Dec of a leap year: t = 1
    # image 3 has a location but no date: zeros even for a location-only vector (the code's rule)
    assert torch.equal(r.metadata.encode(use_date=False)[3], torch.zeros(4))


def test_inat_missing_file_names_dataset_and_places(tmp_path):
    with pytest.raises(DataNotFoundError, match="inat21") as err:
        load_inat21(tmp_path, "val")
    assert str(tmp_path / "val.json") in str(err.value) and "inat_comp" in str(err.value)


def test_inat_reader_rejects_bad_dates(tmp_path):
    bad = tmp_path / "val.json"
    bad.write_text('{"images": [{"id": 7, "file_name": "a.jpg", "date": "14/07/2010", "latitude": 1, '
                   '"longitude": 2}], "annotations": [{"id": 0, "image_id": 7, "category_id": 0}], '
                   '"categories": [{"id": 0, "name": "x"}]}')
    with pytest.raises(ValueError, match="image 7"):
        read_inat_json(bad)


# --- simulated metadata ---------------------------------------------------------------------------------------------
def test_simulated_metadata_is_deterministic_and_valid():
    y = np.arange(2000) % 10
    a, b = MetadataSimulator(10, seed=3).sample(y, 0), MetadataSimulator(10, seed=3).sample(y, 0)
    for f in ("latitude", "longitude", "day_of_year", "days_in_year", "valid"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    c = MetadataSimulator(10, seed=4).sample(y, 0)
    d = MetadataSimulator(10, seed=3).sample(y, 1)
    assert not np.allclose(a.latitude, c.latitude) and not np.allclose(a.latitude, d.latitude)
    wide = MetadataSimulator(10, location_spread=80.0, date_spread=200.0, missing_fraction=0.1).sample(y)
    for m in (a, wide):
        ok = m.valid
        assert np.all(np.abs(m.latitude[ok]) <= 90) and np.all((m.longitude[ok] >= -180) & (m.longitude[ok] < 180))
        assert np.all((m.day_of_year >= 1) & (m.day_of_year <= 365)) and np.all(m.day_of_year == np.rint(m.day_of_year))
    assert 0.05 < 1 - wide.valid.mean() < 0.15 and np.isnan(wide.latitude[~wide.valid]).all()
    assert a.valid.all()


def test_simulated_recipe_states_the_parameters():
    sim = MetadataSimulator(10, seed=3, location_spread=12.5, date_spread=33.0, background=0.2)
    text = sim.describe()
    assert "SIMULATED" in text and "12.5" in text and "33" in text and "0.2" in text and "seed 3" in text
    assert f"{sim.centre_lat[7]:.1f}" in text and len(text.splitlines()) == 6 + 10


def test_metadata_alone_is_informative_but_far_from_perfect():
    sim = MetadataSimulator(10, seed=0)
    y_tr, y_te = np.arange(3000) % 10, np.arange(2000) % 10
    x_tr, x_te = sim.sample(y_tr, 0).encode().numpy(), sim.sample(y_te, 1).encode().numpy()
    acc = LogisticRegression(max_iter=1000).fit(x_tr, y_tr).score(x_te, y_te)
    print(f"logistic regression on simulated metadata, 10 classes: {acc:.3f}")
    assert 0.3 < acc < 0.9
    # more spread -> less information (the spread arguments do what they say)
    wide = MetadataSimulator(10, seed=0, location_spread=60.0, date_spread=120.0, background=0.5)
    w_tr, w_te = wide.sample(y_tr, 0).encode().numpy(), wide.sample(y_te, 1).encode().numpy()
    assert LogisticRegression(max_iter=1000).fit(w_tr, y_tr).score(w_te, y_te) < acc - 0.1
