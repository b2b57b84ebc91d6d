"""The streaming image-folder loader on real JPEG files written by the test, and the imagenet profile's engine path
with a tiny ImageFolder standing in for ImageNet (``$CTCBOOK_DATA/imagenet``)."""
from __future__ import annotations

import pytest
import torch
from fixture_writers import write_jpeg_tree

from ctcbook.book.profiles import PROFILES
from ctcbook.config import TrainConfig
from ctcbook.data import DataCorruptError, DataNotFoundError
from ctcbook.data import stream
from ctcbook.runs import RunStore
from ctcbook.train import load_model, train


@pytest.fixture()
def tree(tmp_path, monkeypatch):
    root = write_jpeg_tree(tmp_path / "data" / "imagenet")
    monkeypatch.setenv("CTCBOOK_DATA", str(tmp_path / "data"))
    return root


def test_folder_items_and_transforms(tree):
    ds = stream.StreamFolder(stream.find_split("imagenet", "train"), stream.train_transform(), seed=3)
    assert ds.classes == ("n01", "n02", "n03") and len(ds) == 36 and ds.targets.bincount().tolist() == [12] * 3
    x, y, i = ds[(1, 5)]
    assert x.dtype == torch.uint8 and x.shape == (3, 224, 224) and (y, i) == (0, 5)
    assert torch.equal(ds[(1, 5)][0], x)  # seeded by (seed, epoch, index): the same crop again
    assert not torch.equal(ds[(2, 5)][0], x)  # another epoch, another crop
    ev = stream.StreamFolder(stream.find_split("imagenet", "test"), stream.eval_transform())
    assert len(ev) == 12 and ev[0][0].shape == (3, 224, 224) and torch.equal(ev[0][0], ev[0][0])


def test_batches_shard_the_epoch_and_ignore_workers(tree):
    ds = stream.StreamFolder(stream.find_split("imagenet", "train"), stream.train_transform(), seed=0)
    one = list(stream.StreamBatches(ds, batch_size=8, seed=0).epoch(1))
    assert len(one) == 4 and one[0][0].dtype == torch.float32 and float(one[0][0].max()) <= 1.0
    seen = torch.cat([idx for _, _, idx in one])
    assert len(set(seen.tolist())) == 32  # 36 images, 4 full batches of 8, no repeats
    ranks = [list(stream.StreamBatches(ds, batch_size=4, rank=r, world_size=2, seed=0, workers=1).epoch(1))
             for r in range(2)]
    idx = [torch.cat([i for _, _, i in batches]) for batches in ranks]
    assert len(ranks[0]) == len(ranks[1]) == 4 and not set(idx[0].tolist()) & set(idx[1].tolist())
    by_index = {int(i): x for x, _, ids in one for i, x in zip(ids, x)}
    for x, _, ids in ranks[1]:  # the same image gets the same augmentation in any process, with or without workers
        for i, xi in zip(ids, x):
            if int(i) in by_index:
                assert torch.equal(by_index[int(i)], xi)


def test_corrupt_file_and_missing_split(tree, tmp_path, monkeypatch):
    bad = tree / "train" / "n02" / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    ds = stream.StreamFolder(tree / "train", stream.train_transform())
    i = [p for p, _ in ds.samples].index(str(bad))
    with pytest.raises(DataCorruptError, match=r"'imagefolder'.*broken\.JPEG.*unreadable image"):
        ds[(1, i)]
    with pytest.raises(RuntimeError, match=r"broken\.JPEG.*unreadable image"):  # through a worker process
        list(stream.StreamBatches(ds, batch_size=37, workers=1).epoch(1))
    (tree / "empty" / "n01").mkdir(parents=True)
    with pytest.raises(DataCorruptError, match="n01.*class folder without"):
        stream.StreamFolder(tree / "empty", stream.eval_transform())
    for f in (tree / "val").rglob("*.JPEG"):
        f.unlink()
    for d in sorted((tree / "val").iterdir()):
        d.rmdir()
    (tree / "val").rmdir()
    with pytest.raises(DataNotFoundError, match=r"(?s)'imagenet' not found.*imagenet/val.*has no 'val' folder"):
        stream.find_split("imagenet", "test")
    monkeypatch.delenv("CTCBOOK_DATA")
    with pytest.raises(DataNotFoundError, match="CTCBOOK_DATA is not set"):
        stream.find_split("imagenet", "train")


def test_imagenet_profile_engine_path(tree, tmp_path):
    """The imagenet profile's run parameters through the engine, shrunk (a width-4 CIFAR ResNet, 2 epochs) on the
    stand-in tree: streamed, 224 px crops, ImageNet normalisation, one metrics row per epoch."""
    p = PROFILES["imagenet"]["01_tradeoff"]
    assert (p["source"], p["arch"], p["source_classes"], p["train_size"]) == ("imagenet", "resnet50", None, None)
    config = TrainConfig(source=p["source"], source_classes=None, train_size=None, arch="cifar_resnet", depth=8,
                         width=4, stem_stride=2, epochs=2, batch_size=12, lr=0.05, weight_decay=p["weight_decay"])
    run = train(config, store=RunStore(tmp_path / "runs"), progress=False, device="cpu", workers=0)
    rows = run.metrics()
    assert [r["epoch"] for r in rows] == [1, 2] and all(0 <= r["test_acc"] <= 1 for r in rows)
    model = load_model(run)
    assert model(torch.rand(2, 3, 224, 224))[1].shape == (2, 3)
    assert (run.path / "model.json").read_text().count('"image_size": 224') == 1


def test_imagenet_without_data_stops_before_training(tmp_path, monkeypatch):
    """What `ctcbook run 01_tradeoff --profile imagenet` meets on a machine without ImageNet (the chapter's train
    cell fails with this one message; checked by hand through the CLI, see the GPU-box page)."""
    monkeypatch.setenv("CTCBOOK_DATA", str(tmp_path / "nothing"))
    p = PROFILES["imagenet"]["01_tradeoff"]
    config = TrainConfig(**{k: p[k] for k in ("source", "source_classes", "train_size", "arch", "epochs",
                                              "batch_size", "lr", "weight_decay")})
    with pytest.raises(DataNotFoundError, match=r"(?s)dataset 'imagenet' not found.*nothing/imagenet/train.*"
                                                r"image-net\.org"):
        train(config, store=RunStore(tmp_path / "runs"), progress=False, device="cpu")
    assert not list((tmp_path / "runs").glob("*/model.json")) and not list((tmp_path / "runs").glob("*/*.pt"))
