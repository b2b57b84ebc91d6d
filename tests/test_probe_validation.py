"""Validation accuracy of the linear probe (held-out part of the target's train split) and its column in chapter 1's
per-epoch probe cache."""
import json

import pandas as pd
import pytest
import torch

from ctcbook.chapters import ch1_tradeoff as tradeoff
from ctcbook.chapters.ch1_tradeoff import transfer_curve
from ctcbook.config import TrainConfig
from ctcbook.probes import PROBE_VARIANTS, fit_logistic, linear_probe, paper_probe, probe_variants, stratified_holdout
from ctcbook.runs import RunStore
from ctcbook.targets import run_target
from ctcbook.train import train


def _blobs(n, seed, shift=2.0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 6, generator=gen)
    x[torch.arange(n), y] += shift
    return x, y


def test_chosen_val_accuracy_is_the_held_out_accuracy_of_the_chosen_fit():
    x, y = _blobs(300, 0)
    xt, yt = _blobs(300, 1)
    res = linear_probe(x, y, xt, yt, reg_grid=(1e-2,), seed=5)
    # recompute by hand: standardise with train statistics, fit on the fit part, score the held-out part
    fit, held = stratified_holdout(y, 0.2, 5)
    std, mean = torch.std_mean(x.double(), dim=0)
    z = ((x.double() - mean) / std).float()
    w, b = fit_logistic(z[fit], y[fit], 3, 1e-2)
    expected = ((z[held] @ w + b).argmax(1) == y[held]).float().mean().item()
    assert res.chosen_val_accuracy == pytest.approx(expected, abs=1e-9)
    many = linear_probe(x, y, xt, yt)
    assert many.chosen_val_accuracy == many.val_accuracy[many.reg] == max(many.val_accuracy.values())


def test_probe_cache_records_val_acc_and_upgrades_old_rows(tmp_path):
    config = TrainConfig(train_size=200, epochs=2, width=4, depth=8, batch_size=50, seed=3)
    run = train(config, store=RunStore(tmp_path), progress=False)
    kwargs = dict(every=1, target_train_size=150, target_test_size=100, device="cpu", progress=False)
    table = transfer_curve(run, ["digits"], **kwargs)
    assert list(table.epoch) == [1, 2] and table.val_acc.between(0, 1).all()
    # a cache written before val_acc existed: its rows are probed again, the same numbers plus the new column
    (cache,) = list(run.path.glob("evals/*.jsonl"))
    old = [json.loads(line) for line in cache.read_text().splitlines()]
    cache.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "val_acc"}) + "\n" for r in old))
    again = transfer_curve(run, ["digits"], **kwargs)
    assert list(again.val_acc) == list(table.val_acc) and list(again.probe_acc) == list(table.probe_acc)
    assert len(cache.read_text().splitlines()) == 4  # the two old rows kept, two complete rows appended
    # the validation size: recorded with each row, and for rows cached without it recomputed from the target's split
    labels = run_target(run, "digits", 150, 100)[0].labels
    n_val = len(stratified_holdout(labels, 0.2, 0)[1])
    assert 0 < n_val < 150 and set(again.n_val) == {n_val}
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    cache.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "n_val"}) + "\n" for r in rows))
    before = cache.read_text()
    assert set(transfer_curve(run, ["digits"], **kwargs).n_val) == {n_val} and cache.read_text() == before


def test_scikit_learn_solver_reaches_the_same_probe():
    x, y = _blobs(300, 0, shift=1.0)
    xt, yt = _blobs(300, 1, shift=1.0)
    ours, theirs = linear_probe(x, y, xt, yt), linear_probe(x, y, xt, yt, solver="sklearn")
    assert theirs.reg == ours.reg and abs(theirs.accuracy - ours.accuracy) <= 0.01
    binary = y < 2
    two = linear_probe(x[binary], y[binary], xt[yt < 2], yt[yt < 2], solver="sklearn")
    assert two.accuracy > 0.7  # two classes: one weight vector, the first class's logit 0
    with pytest.raises(ValueError, match="solver must be one of .* got 'adam'"):
        linear_probe(x, y, xt, yt, solver="adam")


def test_probe_variants_depart_from_the_probe_as_declared():
    x, y = _blobs(300, 0, shift=0.7)
    xt, yt = _blobs(300, 1, shift=0.7)
    out = probe_variants(x, y, xt, yt, paper_steps=20)
    assert set(out) == {f"{c}_{v}" for v in PROBE_VARIANTS for c in ("val_acc", "probe_acc")} | {"probe_acc_paper"}
    for v, kwargs in PROBE_VARIANTS.items():
        res = linear_probe(x, y, xt, yt, **kwargs)
        assert (out[f"val_acc_{v}"], out[f"probe_acc_{v}"]) == (res.chosen_val_accuracy, res.accuracy)
    draws = {out[f"val_acc_draw{i}"] for i in (1, 2, 3)} | {linear_probe(x, y, xt, yt).chosen_val_accuracy}
    assert len(draws) > 1  # other held-out images, other validation accuracies
    assert out["probe_acc_paper"] == paper_probe(x, y, xt, yt, steps=20).final_accuracy


def test_probe_variants_are_cached_beside_the_probe(tmp_path, monkeypatch):
    config = TrainConfig(train_size=200, epochs=2, width=4, depth=8, batch_size=50, seed=3)
    run = train(config, store=RunStore(tmp_path), progress=False)
    kwargs = dict(every=1, target_train_size=150, target_test_size=100, device="cpu", progress=False)
    plain = transfer_curve(run, ["digits"], **kwargs)
    table = transfer_curve(run, ["digits"], variants=True, **kwargs)
    assert "probe_acc_draw1" not in plain and table.probe_acc_draw1.between(0, 1).all()
    assert list(table.probe_acc) == list(plain.probe_acc)  # the probe's own rows are kept, not probed again
    (cache,) = list(run.path.glob("evals/transfer_variants-*.jsonl"))
    before = cache.read_text()
    monkeypatch.setattr(tradeoff, "probe_variants", lambda *a, **k: pytest.fail("cached variants computed again"))
    again = transfer_curve(run, ["digits"], variants=True, **kwargs)
    assert cache.read_text() == before and again.equals(table)


def test_probing_in_spawned_processes_fills_the_same_cache(tmp_path, monkeypatch):
    config = TrainConfig(train_size=200, epochs=2, width=4, depth=8, batch_size=50)
    store = RunStore(tmp_path)
    runs = [train(config.replace(seed=s), store=store, progress=False) for s in (0, 1)]
    kwargs = dict(every=1, target_train_size=150, target_test_size=100, device="cpu", progress=False, variants=True)
    with monkeypatch.context() as m:  # the spawned workers do every probe: this process only reads their cache
        for name in ("linear_probe", "probe_variants"):
            m.setattr(tradeoff, name, lambda *a, **k: pytest.fail("probed in the notebook's process"))
        parallel = tradeoff.curves(runs, ["digits"], workers=2, **kwargs)
    assert all(len(list(r.path.glob("evals/transfer*.jsonl"))) == 2 for r in runs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count: the same arithmetic, the same numbers
    try:
        for r in runs:
            for f in r.path.glob("evals/*"):
                f.unlink()
        serial = tradeoff.curves(runs, ["digits"], **kwargs)
    finally:
        torch.set_num_threads(threads)
    pd.testing.assert_frame_equal(parallel.drop(columns=["seconds", "variant_seconds"]),
                                  serial.drop(columns=["seconds", "variant_seconds"]))
