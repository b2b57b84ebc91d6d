"""The imagenet profile of chapters 2, 3 and 5: valid parameters, chapter 1's run parameters
(so its runs are reused), the paper's MINE preset and probe protocol, and chapter 2's in-memory X of a streamed source
(a tiny ImageFolder standing in for ImageNet, ``$CTCBOOK_DATA/imagenet``). Chapter 3's CTC engine path under this
profile runs in tests/test_stream_ctc.py (one shrunk run serves both).

Mistakes this catches (each put in by hand once): a chapter-3 imagenet run parameter that differs from chapter 1's
(e.g. 300 epochs: chapter 1's baselines would not be reused), MINE preset "cpu" in the imagenet profile, the refusal of
a streamed CTC source left in the engine."""
from __future__ import annotations

import pytest
import torch
from fixture_writers import write_jpeg_tree

from ctcbook.book.parameters import resolve
from ctcbook.data import stream

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


def test_chapter_2_source_images_of_a_streamed_source(tree):
    x = stream.load_streamed("imagenet", "test", cap=6)
    assert x.images.shape == (6, 3, 224, 224) and x.images.dtype == torch.uint8
    assert x.labels.bincount().tolist() == [2, 2, 2] and x.classes == ("n01", "n02", "n03")
    ev = stream.StreamFolder(tree / "val", stream.eval_transform())
    assert torch.equal(stream.load_streamed("imagenet", "test", cap=None).images[5], ev[5][0])
