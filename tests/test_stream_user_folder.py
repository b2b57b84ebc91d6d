"""A user's ImageFolder as a transfer target: ``folder:<name>`` under ``$CTCBOOK_DATA``, read
into memory at the source's format, on real JPEG files written by the test.

Mistakes this catches (each put in by hand once): the cap drawn after decoding with another rule than subsample's
(the capped set differs from subsample of the whole split), the test split not falling back to val/ (not found),
class folders of the two splits not compared (no error)."""
from __future__ import annotations

import pytest
import torch
from fixture_writers import write_jpeg_tree

from ctcbook.data import DataCorruptError, DataNotFoundError, subsample, to_format
from ctcbook.data import stream


@pytest.fixture()
def tree(tmp_path, monkeypatch):
    root = write_jpeg_tree(tmp_path / "data" / "flowers", classes=("daisy", "rose", "tulip"))
    monkeypatch.setenv("CTCBOOK_DATA", str(tmp_path / "data"))
    return root


def test_user_folder_at_the_source_format(tree):
    train = stream.load_user_folder("folder:flowers", "train", channels=1, size=28)
    assert train.images.shape == (36, 1, 28, 28) and train.classes == ("daisy", "rose", "tulip")
    assert train.labels.bincount().tolist() == [12, 12, 12]
    # each image: the evaluation transform scaled to 28 px (resize 32, centre crop 28), then 601 luma
    files = stream.StreamFolder(tree / "train", None)
    i = [path for path, _ in files.samples].index(str(tree / "train" / "rose" / "3.JPEG"))
    one = stream.eval_transform(28, 32)(files.load(files.samples[i][0]))
    grey = to_format(type(train)("x", one[None], torch.tensor([0]), ("a",)), 1, 28).images[0]
    assert torch.equal(train.images[i], grey) and int(train.labels[i]) == 1
    rgb = stream.load_user_folder("flowers", "test", channels=3, size=64)  # test/ missing: val/ is used
    assert rgb.images.shape == (12, 3, 64, 64) and rgb.name.endswith("/val")
    capped = stream.load_user_folder("folder:flowers", "train", channels=1, size=28, cap=9)
    full_then_cap = subsample(train, 9, seed=0)
    assert torch.equal(capped.images, full_then_cap.images) and torch.equal(capped.labels, full_then_cap.labels)
    spec = stream.user_target("folder:flowers")
    assert (spec["dataset"], spec["train_split"], spec["test_split"]) == ("folder:flowers", "train", "test")
    assert str(tree) in spec["description"] and "val/" in spec["description"]


def test_user_folder_errors(tree):
    with pytest.raises(ValueError, match=r"'folder:<a folder name under \$CTCBOOK_DATA>', got 'folder:../x'"):
        stream.load_user_folder("folder:../x", "train", channels=3, size=32)
    with pytest.raises(ValueError, match=r"split of user ImageFolder 'folder:flowers' must be one of \('train', "
                                         r"'test'\), got 'valid'"):
        stream.load_user_folder("folder:flowers", "valid", channels=3, size=32)
    with pytest.raises(DataNotFoundError, match=r"(?s)'folder:tulips' not found.*tulips/test.*tulips/val"):
        stream.load_user_folder("folder:tulips", "test", channels=3, size=32)
    (tree / "val" / "rose").rename(tree / "val" / "roses")
    with pytest.raises(DataCorruptError, match=r"class folders \['daisy', 'roses', 'tulip'\] differ from those of "
                                               r"the train split"):
        stream.load_user_folder("folder:flowers", "test", channels=3, size=32)
    (tree / "train" / "daisy" / "5.JPEG").write_bytes(b"not an image")
    with pytest.raises(DataCorruptError, match=r"'folder:flowers'.*daisy/5\.JPEG.*unreadable image"):
        stream.load_user_folder("folder:flowers", "train", channels=3, size=32)


def test_chapter_one_reads_a_user_folder_target(tree):
    from ctcbook.targets import load_target

    train, test = load_target("folder:flowers", 1, 28, train_size=9)
    ref = stream.load_user_folder("folder:flowers", "train", channels=1, size=28, cap=9)
    assert torch.equal(train.images, ref.images) and torch.equal(train.labels, ref.labels)
    assert test.images.shape == (12, 1, 28, 28)
