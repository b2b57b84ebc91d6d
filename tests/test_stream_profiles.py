"""The imagenet profile of chapters 2, 3 and 5 (issue 13, point 4): valid parameters, chapter 1's run parameters
(so its runs are reused), the paper's MINE preset and probe protocol, and the CTC engine path of chapter 3 under this
profile on a tiny ImageFolder standing in for ImageNet (``$CTCBOOK_DATA/imagenet``), shrunk as chapter 1's imagenet
path test does (a width-4 CIFAR ResNet, 2 epochs, 12 images a batch), plus chapter 2's in-memory X of a streamed
source.

Mistakes this catches (each put in by hand once): a chapter-3 imagenet run parameter that differs from chapter 1's
(e.g. 300 epochs: chapter 1's baselines would not be reused), MINE preset "cpu" in the imagenet profile, the refusal of
a streamed CTC source left in the engine."""
from __future__ import annotations

import pytest
import torch
from fixture_writers import write_jpeg_tree

from ctcbook.book.parameters import resolve
from ctcbook.chapters.ch3_ctc import ctc_config
from ctcbook.config import TrainConfig
from ctcbook.data import stream
from ctcbook.runs import RunStore
from ctcbook.train import train

RUN_PARAMETERS = ("source", "source_classes", "train_size", "arch", "depth", "width", "stem_stride", "epochs",
                  "batch_size", "lr", "weight_decay", "augment", "crop_padding", "seeds")


@pytest.fixture()
def tree(tmp_path, monkeypatch):
    root = write_jpeg_tree(tmp_path / "data" / "imagenet")
    monkeypatch.setenv("CTCBOOK_DATA", str(tmp_path / "data"))
    return root


def test_imagenet_profile_of_chapters_2_3_5():
    one = resolve("01_tradeoff", {"profile": "imagenet"})
    two, three, five = (resolve(ch, {"profile": "imagenet"}) for ch in ("02_information", "03_ctc", "05_transfer"))
    for p in (two, three, five):
        assert {k: p[k] for k in RUN_PARAMETERS} == {k: one[k] for k in RUN_PARAMETERS}
        assert p["targets"] == one["targets"] == ["cifar10", "cifar100", "cinic10"]
    assert (one["source"], one["arch"], one["epochs"]) == ("imagenet", "resnet50", 90)
    assert two["mine_preset"] == "paper" and two["mine_n"] == 10000
    assert three["paper_protocol"] == five["paper_protocol"] == one["paper_protocol"] == "paper_bn"
    assert 1 <= three["stage_two_epoch"] < three["epochs"] and three["nce_k"] == 16384
    assert {k: five[k] for k in five if k in three} == {k: three[k] for k in five if k in three}


def test_chapter_3_imagenet_ctc_path_on_a_stand_in(tree, tmp_path):
    p = resolve("03_ctc", {"profile": "imagenet"})
    base = TrainConfig(source=p["source"], source_classes=p["source_classes"], train_size=p["train_size"],
                       arch="cifar_resnet", depth=8, width=4, stem_stride=2, epochs=2, batch_size=12, lr=0.05,
                       weight_decay=p["weight_decay"], augment=p["augment"], seed=p["seeds"][0])
    config = ctc_config(base, stage_two_epoch=1, weight_decay_coef=p["weight_decay_coef"],
                        lr_restart=p["lr_restart"], alpha=p["alpha"], beta=p["beta"], instance_dim=16, nce_dim=16,
                        nce_k=16, instance_t=p["instance_t"], instance_m=p["instance_m"], nce_t=p["nce_t"],
                        nce_m=p["nce_m"], refill=p["refill"], train_instance_head=p["train_instance_head"])
    run = train(config, store=RunStore(tmp_path / "runs"), progress=False, device="cpu", workers=0)
    rows = run.metrics()
    assert run.done and [r["stage"] for r in rows] == [1, 2] and all(0 <= r["test_acc"] <= 1 for r in rows)
    memory = run.load_state()["objective"]["module"]["memory"]
    assert memory.shape == (36, 16) and torch.allclose(memory.norm(dim=1), torch.ones(36), atol=1e-5)


def test_chapter_2_source_images_of_a_streamed_source(tree):
    x = stream.load_streamed("imagenet", "test", cap=6)
    assert x.images.shape == (6, 3, 224, 224) and x.images.dtype == torch.uint8
    assert x.labels.bincount().tolist() == [2, 2, 2] and x.classes == ("n01", "n02", "n03")
    ev = stream.StreamFolder(tree / "val", stream.eval_transform())
    assert torch.equal(stream.load_streamed("imagenet", "test", cap=None).images[5], ev[5][0])
