"""Loaders on fixtures in the real file formats, the embedded sets, and the ImageSet operations."""
import gzip

import numpy as np
import pytest
import torch

from ctcbook.data import (DataCorruptError, DataNotFoundError, ImageSet, load_dataset, select_classes, subsample,
                          to_format)
from ctcbook.data.sources import read_idx
from fixture_writers import write_cifar, write_fashion_mnist, write_idx, write_image_folder


@pytest.fixture(autouse=True)
def _no_cache():
    read_idx.cache_clear()


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_round_trips_via_root(tmp_path, gz):
    written = write_fashion_mnist(tmp_path, gz=gz)
    for split, stem in (("train", "train"), ("test", "t10k")):
        ds = load_dataset("fashion_mnist", split, root=tmp_path)
        x, y = written[stem]
        assert ds.images.shape == (len(x), 1, 28, 28) and ds.images.dtype == torch.uint8
        assert np.array_equal(ds.images[:, 0].numpy(), x) and np.array_equal(ds.labels.numpy(), y)
        assert ds.classes[9] == "Ankle boot"


def test_fashion_mnist_found_through_ctcbook_data(tmp_path, monkeypatch):
    written = write_fashion_mnist(tmp_path / "fashion-mnist")
    monkeypatch.setenv("CTCBOOK_DATA", str(tmp_path))
    assert np.array_equal(load_dataset("fashion_mnist", "test").images[:, 0].numpy(), written["t10k"][0])


def test_missing_files_name_dataset_paths_and_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("CTCBOOK_DATA", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("cifar10", "train")
    msg = str(err.value)
    assert "'cifar10'" in msg and str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg and "download=True" in msg
    with pytest.raises(DataNotFoundError, match="cinic-10"):
        load_dataset("cinic10", "train")


def test_truncated_and_wrong_magic_idx_are_corrupt(tmp_path):
    write_fashion_mnist(tmp_path, gz=False)
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(DataCorruptError, match="t10k-images-idx3-ubyte.*bytes where dims"):
        load_dataset("fashion_mnist", "test", root=tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00\x09\x01" + labels.read_bytes()[4:])
    with pytest.raises(DataCorruptError, match="train-labels-idx1-ubyte.*bad magic"):
        load_dataset("fashion_mnist", "train", root=tmp_path)


def test_truncated_gzip_is_corrupt(tmp_path):
    write_fashion_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:15])
    with pytest.raises(DataCorruptError, match="cannot decompress"):
        load_dataset("fashion_mnist", "test", root=tmp_path)


@pytest.mark.parametrize("fine", [False, True])
def test_cifar_pickles_round_trip(tmp_path, fine):
    written = write_cifar(tmp_path, fine)
    name = "cifar100" if fine else "cifar10"
    for split in ("train", "test"):
        ds = load_dataset(name, split, root=tmp_path)
        data = np.concatenate([d for d, _ in written[split]])
        assert ds.images.shape == (len(data), 3, 32, 32)
        assert np.array_equal(ds.images.reshape(len(data), -1).numpy(), data)
        assert ds.labels.tolist() == [l for _, ls in written[split] for l in ls]
        assert ds.num_classes == (100 if fine else 10) and ds.classes[3] == "c3"


def test_cinic_image_folder_round_trips(tmp_path):
    arrays = write_image_folder(tmp_path / "cinic-10" / "valid", classes=("bird", "airplane"))
    ds = load_dataset("cinic10", "valid", root=tmp_path / "cinic-10")
    assert ds.classes == ("airplane", "bird")  # sorted folder names, as torchvision does
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    # airplane's files were written second
    assert np.array_equal(ds.images.permute(0, 2, 3, 1).numpy(), np.concatenate([arrays[3:], arrays[:3]]))


def test_image_folder_with_mixed_sizes_is_corrupt(tmp_path):
    write_image_folder(tmp_path / "train", classes=("a",), size=8)
    write_image_folder(tmp_path / "odd", classes=("b",), size=9)
    (tmp_path / "odd" / "b").rename(tmp_path / "train" / "b")
    with pytest.raises(DataCorruptError, match="differs from the first image"):
        load_dataset("imagefolder", "train", root=tmp_path)


def test_embedded_fashion_mnist():
    train, test = load_dataset("fashion_mnist", "train"), load_dataset("fashion_mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels.bincount().tolist() == [6000] * 10 and test.labels.bincount().tolist() == [1000] * 10


def test_embedded_mnist5k_and_digits():
    tr, te = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    assert len(tr) == len(te) == 2500 and int(tr.images.max()) == 255 and tr.images.shape[1:] == (1, 28, 28)
    rows = {bytes(x.numpy()) for x in tr.images}
    assert not any(bytes(x.numpy()) in rows for x in te.images[:200])  # disjoint
    dtr, dte = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(dtr) + len(dte) == 1797 and dtr.images.shape[1:] == (1, 28, 28) and int(dtr.images.max()) == 255


def _toy(n=100, k=4):
    return ImageSet("toy", torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous(),
                    torch.arange(n) % k, tuple("abcd"[:k]))


def test_select_classes_relabels_in_given_order():
    ds = select_classes(_toy(), [3, 1])
    assert ds.classes == ("d", "b") and len(ds) == 50
    assert ds.labels[ds.images[:, 0, 0, 0].long() % 4 == 3].unique().tolist() == [0]


def test_subsample_is_stratified_and_seeded():
    ds = _toy(100)
    a, b, c = subsample(ds, 40, seed=0), subsample(ds, 40, seed=0), subsample(ds, 40, seed=1)
    assert len(a) == 40 and a.labels.bincount().tolist() == [10] * 4
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert subsample(ds, None, 0) is ds and subsample(ds, 500, 0) is ds
    with pytest.raises(ValueError, match="n must be"):
        subsample(ds, 0, 0)


def test_to_format_channels_and_size():
    ds = _toy(8)
    rgb = to_format(ds, 3, 4)
    assert rgb.images.shape == (8, 3, 4, 4) and torch.equal(rgb.images[:, 0], rgb.images[:, 2])
    grey = to_format(rgb, 1, 2)
    assert grey.images.shape == (8, 1, 2, 2) and torch.equal(grey.images, ds.images)
    with pytest.raises(ValueError, match="channels must be"):
        to_format(ds, 2, 4)


@pytest.mark.parametrize("args,match", [(("mnist", "train"), "dataset name must be one of"),
                                        (("fashion_mnist", "valid"), "split of dataset 'fashion_mnist'")])
def test_bad_names_are_refused(args, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(*args)


def test_imageset_validates_labels():
    with pytest.raises(ValueError, match="labels must lie in"):
        ImageSet("bad", torch.zeros(2, 1, 1, 1, dtype=torch.uint8), torch.tensor([0, 5]), ("a", "b"))
