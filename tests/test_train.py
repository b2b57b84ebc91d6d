"""The run store and the training engine: reuse, exact resume, atomic writes, failure marking."""
import json
import types

import pytest
import torch

import ctcbook.train as train_mod
from ctcbook.config import TrainConfig
from ctcbook.data.loader import DeviceBatches, random_crop
from ctcbook.runs import RunFailedError, RunStore, atomic_torch_save, config_hash, read_jsonl
from ctcbook.train import load_model, train

TINY = TrainConfig(train_size=200, epochs=3, width=4, depth=8, batch_size=50, seed=3)


def test_config_hash_is_stable_and_sensitive():
    assert config_hash(TINY.to_dict()) == config_hash(TrainConfig.from_dict(TINY.to_dict()).to_dict())
    assert config_hash(TINY.to_dict()) != config_hash(TINY.replace(seed=4).to_dict())
    # A literal guards against silent changes of what names a run (update it together with runs.CODE_VERSION).
    assert config_hash({"a": 1}) == "0091d2984730"


def test_bad_config_values_name_the_field():
    with pytest.raises(ValueError, match="TrainConfig.epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"epoch": 3})


def test_identical_runs_give_identical_weights(tmp_path):
    """Guards against nondeterministic or wrong kernels on the CPU path (channels-last backward was both here)."""
    a = train(TINY.replace(epochs=1), store=RunStore(tmp_path / "a"), progress=False).load_checkpoint(1)
    b = train(TINY.replace(epochs=1), store=RunStore(tmp_path / "b"), progress=False).load_checkpoint(1)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finished_run_is_reused(tmp_path):
    store = RunStore(tmp_path)
    run = train(TINY, store=store, progress=False)
    assert run.done and run.saved_epochs() == [1, 2, 3]
    assert [r["epoch"] for r in run.metrics()] == [1, 2, 3]
    stamp = run.checkpoint_path(3).stat().st_mtime_ns

    def fail(*a, **k):
        raise AssertionError("a finished run must not train again")

    again = train(TINY, store=store, progress=False, on_epoch_end=fail)
    assert again.path == run.path and run.checkpoint_path(3).stat().st_mtime_ns == stamp


def test_interrupted_run_resumes_exactly(tmp_path):
    full = train(TINY, store=RunStore(tmp_path / "a"), progress=False)

    def stop_after_first(epoch, model, run):
        if epoch == 1:
            raise KeyboardInterrupt

    store = RunStore(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        train(TINY, store=store, progress=False, on_epoch_end=stop_after_first)
    partial = store.open(TINY.to_dict(), prefix=TINY.run_prefix)
    assert not partial.done and partial.saved_epochs() == [1]
    # A crash between the metrics append and the state save leaves a row the state does not cover.
    partial.append_metrics({"epoch": 2, "test_acc": -1.0})
    resumed = train(TINY, store=store, progress=False)
    assert resumed.done
    assert [r["epoch"] for r in resumed.metrics()] == [1, 2, 3]
    assert all(r["test_acc"] >= 0 for r in resumed.metrics())
    a, b = full.load_checkpoint(3), resumed.load_checkpoint(3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["test_acc"] for r in full.metrics()] == [r["test_acc"] for r in resumed.metrics()]


def test_nan_loss_marks_the_run_failed(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = torch.nn.functional.cross_entropy

    def poisoned(logits, y, **kw):  # the 6th training step (epoch 2, step 1 of 4) returns NaN
        loss = real(logits, y, **kw)
        if "reduction" in kw:  # the test-split evaluation
            return loss
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == 6 else loss

    monkeypatch.setattr(train_mod, "F", types.SimpleNamespace(cross_entropy=poisoned))
    store = RunStore(tmp_path)
    with pytest.raises(RunFailedError, match="epoch 2, step 1"):
        train(TINY, store=store, progress=False)
    run = store.open(TINY.to_dict(), prefix=TINY.run_prefix)
    assert run.failure == {"epoch": 2, "step": 1, "reason": "non-finite training loss nan"}
    assert not run.done
    with pytest.raises(RunFailedError, match="failed earlier"):
        train(TINY, store=store, progress=False)


def test_atomic_save_leaves_nothing_half_written(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    target = tmp_path / "x.pt"
    with pytest.raises(RuntimeError):
        atomic_torch_save({"a": Unpicklable()}, target)
    assert list(tmp_path.iterdir()) == []


def test_torn_metrics_line_is_ignored(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"epoch": 1}) + "\n" + '{"epoch": 2, "te')
    assert read_jsonl(path) == [{"epoch": 1}]


def test_load_model_restores_the_checkpoint(tmp_path):
    run = train(TINY, store=RunStore(tmp_path), progress=False)
    model = load_model(run, 2)
    assert not model.training
    state = run.load_checkpoint(2)
    assert torch.equal(model.state_dict()["head.weight"], state["head.weight"])


def test_device_batches_are_deterministic_per_epoch_and_cover_the_set():
    images = torch.randint(0, 256, (103, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(103) % 5
    b = DeviceBatches(images, labels, batch_size=10, device="cpu", seed=1)
    first = [idx for _, _, idx in b.epoch(1)]
    assert len(first) == 10 and len(torch.cat(first).unique()) == 100
    assert all(torch.equal(i, j) for i, j in zip(first, [idx for _, _, idx in b.epoch(1)]))
    assert not torch.equal(first[0], next(iter(b.epoch(2)))[2])
    x, y, idx = next(iter(b.epoch(1)))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and torch.equal(y, labels[idx])


def test_random_crop_shifts_content_within_padding():
    x = torch.zeros(64, 1, 6, 6)
    x[:, :, 2:4, 2:4] = 1
    out = random_crop(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.all(out.sum((1, 2, 3)) <= 4)
    assert len({tuple(o.nonzero()[0].tolist()) for o in out}) > 5  # several distinct offsets
    assert torch.equal(random_crop(x, 0, torch.Generator()), x)


def test_mixed_precision_path_runs_on_cpu(tmp_path):
    """The CUDA default (bf16 autocast) exercised on the CPU: finite losses, learning happens."""
    run = train(TINY.replace(epochs=2, train_size=400), store=RunStore(tmp_path), progress=False, amp=True)
    rows = run.metrics()
    assert all(r["train_loss"] == r["train_loss"] for r in rows) and rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_cifar_profile_path_on_fixtures(tmp_path, monkeypatch):
    """The GPU profile's data path (3-channel 32 px source, CIFAR-10 target in the source's format), small, on CPU."""
    from fixture_writers import write_cifar

    from ctcbook.chapters.ch1_tradeoff import transfer_curve

    write_cifar(tmp_path / "data", fine=True, n_per_batch=120)
    write_cifar(tmp_path / "data", fine=False, n_per_batch=30)
    monkeypatch.setenv("CTCBOOK_DATA", str(tmp_path / "data"))
    config = TrainConfig(source="cifar100", source_classes=None, train_size=None, depth=8, width=4, stem_stride=1,
                         epochs=2, batch_size=40, seed=0)
    run = train(config, store=RunStore(tmp_path / "runs"), progress=False)
    assert load_model(run).backbone.stem[0].in_channels == 3
    table = transfer_curve(run, ["cifar10"], every=1, progress=False)
    assert list(table.epoch) == [1, 2] and table.n_train.iloc[0] == 150 and table.n_test.iloc[0] == 30
    assert table.probe_acc.between(0, 1).all() and table.knn_acc.between(0, 1).all()
    paper = transfer_curve(run, ["cifar10"], every=2, protocol="paper_bn", progress=False)  # transfer.py as written
    assert list(paper.epoch) == [1, 2] and (paper.paper_best >= paper.paper_final).all()
