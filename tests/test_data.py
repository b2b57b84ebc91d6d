"""Loaders on fixtures in the real file formats, the embedded sets, and the ImageSet operations."""
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from ctcbook.data import (DataCorruptError, DataNotFoundError, ImageSet, available_datasets, load_dataset,
                          select_classes, subsample, to_format)
from ctcbook.data import sources
from fixture_writers import write_cifar, write_fashion_mnist, write_idx, write_image_folder


@pytest.fixture(autouse=True)
def _no_outside_data(monkeypatch):
    """No test sees a CTCBOOK_DATA of the machine it runs on."""
    monkeypatch.delenv("CTCBOOK_DATA", raising=False)


# --- Fashion-MNIST idx -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_round_trips_via_root(tmp_path, gz):
    written = write_fashion_mnist(tmp_path, gz=gz)
    for split, stem in (("train", "train"), ("test", "t10k")):
        ds = load_dataset("fashion_mnist", split, root=tmp_path)
        x, y = written[stem]
        assert ds.images.shape == (len(x), 1, 28, 28) and ds.images.dtype == torch.uint8
        assert ds.labels.dtype == torch.int64 and ds.images.is_contiguous()
        assert np.array_equal(ds.images[:, 0].numpy(), x) and np.array_equal(ds.labels.numpy(), y)
        assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot" and ds.num_classes == 10
        assert ds.name == f"fashion_mnist/{split}"


@pytest.mark.parametrize("layout", ["fashion-mnist", "FashionMNIST/raw"])
def test_fashion_mnist_found_through_ctcbook_data(tmp_path, monkeypatch, layout):
    written = write_fashion_mnist(tmp_path / layout, n_test=15, seed=3)
    monkeypatch.setenv("CTCBOOK_DATA", str(tmp_path))
    ds = load_dataset("fashion_mnist", "test")
    assert len(ds) == 15 and np.array_equal(ds.images[:, 0].numpy(), written["t10k"][0])


def test_fashion_mnist_root_comes_before_ctcbook_data(tmp_path, monkeypatch):
    write_fashion_mnist(tmp_path / "env" / "fashion-mnist", n_test=11)
    write_fashion_mnist(tmp_path / "mine", n_test=13)
    monkeypatch.setenv("CTCBOOK_DATA", str(tmp_path / "env"))
    assert len(load_dataset("fashion_mnist", "test", root=tmp_path / "mine")) == 13
    assert len(load_dataset("fashion_mnist", "test")) == 11


def test_rewritten_idx_file_is_read_again(tmp_path):
    """The parse cache is keyed on path, size and mtime: a changed file is not served from the cache."""
    write_fashion_mnist(tmp_path, gz=False)
    first = load_dataset("fashion_mnist", "test", root=tmp_path)
    new = np.full((20, 28, 28), 7, np.uint8)
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte", new, gz=False)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = load_dataset("fashion_mnist", "test", root=tmp_path)
    assert not torch.equal(first.images, second.images) and int(second.images.max()) == 7
    second.images.zero_()  # callers own their tensors: the cache must not be modified through them
    assert int(load_dataset("fashion_mnist", "test", root=tmp_path).images.max()) == 7


def test_fashion_mnist_missing_names_every_path(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FASHION_SYSTEM_DIRS", (str(tmp_path / "system"),))
    monkeypatch.setenv("CTCBOOK_DATA", str(tmp_path / "data"))
    write_idx(tmp_path / "mine" / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))  # labels missing
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("fashion_mnist", "test", root=tmp_path / "mine")
    msg = str(err.value)
    expected = [tmp_path / "mine", tmp_path / "mine" / "fashion-mnist", tmp_path / "mine" / "FashionMNIST" / "raw",
                tmp_path / "data" / "fashion-mnist", tmp_path / "data" / "FashionMNIST" / "raw", tmp_path / "system"]
    assert err.value.tried == expected and all(f"- {p}\n" in msg for p in expected)
    assert "'fashion_mnist'" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "t10k-labels-idx1-ubyte" in msg and "has t10k-images-idx3-ubyte.gz but not its labels file" in msg
    assert isinstance(err.value, FileNotFoundError)


def test_missing_cifar_and_cinic_name_dataset_paths_and_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("CTCBOOK_DATA", str(tmp_path / "data"))
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("cifar10", "train", root=tmp_path / "mine")
    msg = str(err.value)
    assert "'cifar10'" in msg and "download=True" in msg and "CIFAR10" in msg
    for p in (tmp_path / "mine" / "cifar-10-batches-py", tmp_path / "data" / "cifar-10-batches-py"):
        assert f"- {p}\n" in msg
    with pytest.raises(DataNotFoundError, match="(?s)'cifar100'.*cifar-100-python"):
        load_dataset("cifar100", "test")
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("cinic10", "valid")
    msg = str(err.value)
    assert "'cinic10'" in msg and "10.7488/ds/2448" in msg
    for p in (tmp_path / "data" / "cinic-10" / "valid", tmp_path / "data" / "CINIC-10" / "valid"):
        assert f"- {p}\n" in msg


def test_errors_survive_pickling(tmp_path):
    for err in (DataNotFoundError("x", [tmp_path], "get it"), DataCorruptError("x", tmp_path / "f", "bad")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)


# --- corrupt files ---------------------------------------------------------------------------------------------
def test_truncated_idx_is_corrupt(tmp_path):
    write_fashion_mnist(tmp_path, gz=False)
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(DataCorruptError, match=r"t10k-images-idx3-ubyte is corrupt: size mismatch.*truncated"):
        load_dataset("fashion_mnist", "test", root=tmp_path)


def test_wrong_magic_is_corrupt(tmp_path):
    write_fashion_mnist(tmp_path, gz=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00\x09\x01" + labels.read_bytes()[4:])
    with pytest.raises(DataCorruptError, match=r"train-labels-idx1-ubyte is corrupt: bad magic number 2305"):
        load_dataset("fashion_mnist", "train", root=tmp_path)


def test_swapped_idx_files_are_corrupt(tmp_path):
    """An images file where the labels file should be has the wrong magic number for its role."""
    write_fashion_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes((tmp_path / "t10k-images-idx3-ubyte").read_bytes())
    with pytest.raises(DataCorruptError, match=r"t10k-labels-idx1-ubyte is corrupt: bad magic number: expected 2049"):
        load_dataset("fashion_mnist", "test", root=tmp_path)


def test_label_count_mismatch_is_corrupt(tmp_path):
    write_fashion_mnist(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(5, np.uint8), gz=False)
    with pytest.raises(DataCorruptError, match=r"t10k-labels-idx1-ubyte is corrupt: 5 labels for the 20 images"):
        load_dataset("fashion_mnist", "test", root=tmp_path)


def test_truncated_gzip_is_corrupt(tmp_path):
    write_fashion_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:15])
    with pytest.raises(DataCorruptError, match=r"t10k-labels-idx1-ubyte.gz is corrupt: cannot decompress"):
        load_dataset("fashion_mnist", "test", root=tmp_path)


def test_garbage_cifar_pickle_is_corrupt(tmp_path):
    write_cifar(tmp_path, fine=False)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"this is not a pickle")
    with pytest.raises(DataCorruptError, match=r"test_batch is corrupt: unpickling failed"):
        load_dataset("cifar10", "test", root=tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, f)
    with pytest.raises(DataCorruptError, match=r"test_batch is corrupt: labels outside 0..9"):
        load_dataset("cifar10", "test", root=tmp_path)


# --- CIFAR pickles -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fine", [False, True])
def test_cifar_pickles_round_trip(tmp_path, fine):
    written = write_cifar(tmp_path, fine)
    name = "cifar100" if fine else "cifar10"
    for split in ("train", "test"):
        ds = load_dataset(name, split, root=tmp_path)
        data = np.concatenate([d for d, _ in written[split]])
        assert ds.images.shape == (len(data), 3, 32, 32) and ds.images.dtype == torch.uint8
        assert len(ds) == (30 if split == "train" and not fine else 6)
        # a row is 1024 red, then 1024 green, then 1024 blue values, each image row-major
        assert int(ds.images[1, 2, 3, 4]) == int(data[1, 2 * 1024 + 3 * 32 + 4])
        assert np.array_equal(ds.images.reshape(len(data), -1).numpy(), data)
        assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == [l for _, ls in written[split] for l in ls]
        assert ds.num_classes == (100 if fine else 10) and ds.classes[3] == "c3"


def test_cifar_found_through_ctcbook_data(tmp_path, monkeypatch):
    write_cifar(tmp_path, fine=True, n_per_batch=4)
    monkeypatch.setenv("CTCBOOK_DATA", str(tmp_path))
    assert load_dataset("cifar100", "train").images.shape == (4, 3, 32, 32)


# --- image folders -----------------------------------------------------------------------------------------------
def test_cinic_image_folder_round_trips(tmp_path):
    arrays = write_image_folder(tmp_path / "cinic-10" / "valid", classes=("bird", "airplane"))
    ds = load_dataset("cinic10", "valid", root=tmp_path / "cinic-10")
    assert ds.classes == ("airplane", "bird")  # sorted folder names, as torchvision does
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1] and ds.images.dtype == torch.uint8
    # airplane's files were written second
    assert np.array_equal(ds.images.permute(0, 2, 3, 1).numpy(), np.concatenate([arrays[3:], arrays[:3]]))


def test_cinic_through_ctcbook_data_turns_grey_into_rgb(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "CINIC-10" / "test" / "a", classes=("x",), per_class=2)
    grey = write_image_folder(tmp_path / "CINIC-10" / "test" / "b", classes=("x",), per_class=1, mode="L")
    for sub in ("a", "b"):  # flatten to test/<class>/*.png
        (tmp_path / "CINIC-10" / "test" / sub / "x").rename(tmp_path / "CINIC-10" / "test" / f"{sub}x")
        (tmp_path / "CINIC-10" / "test" / sub).rmdir()
    monkeypatch.setenv("CTCBOOK_DATA", str(tmp_path))
    ds = load_dataset("cinic10", "test")
    assert ds.images.shape == (3, 3, 32, 32) and ds.classes == ("ax", "bx")
    assert all(torch.equal(ds.images[2, c], torch.from_numpy(grey[0])) for c in range(3))


def test_imagefolder_grey_tree(tmp_path):
    arrays = write_image_folder(tmp_path / "train", classes=("b", "a", "c"), per_class=2, size=6, mode="L")
    (tmp_path / "train" / ".hidden").mkdir()
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    ds = load_dataset("imagefolder", "train", root=tmp_path)
    assert ds.images.shape == (6, 1, 6, 6) and ds.classes == ("a", "b", "c") and ds.name == "imagefolder/train"
    assert np.array_equal(ds.images[:2, 0].numpy(), arrays[2:4]) and ds.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_image_folder_with_mixed_sizes_or_modes_is_corrupt(tmp_path):
    write_image_folder(tmp_path / "train", classes=("a",), size=8)
    write_image_folder(tmp_path / "odd", classes=("b",), size=9)
    (tmp_path / "odd" / "b").rename(tmp_path / "train" / "b")
    with pytest.raises(DataCorruptError, match=r"train/b/0.png is corrupt: .*differs from the first image"):
        load_dataset("imagefolder", "train", root=tmp_path)
    write_image_folder(tmp_path / "valid", classes=("a",), size=8)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "valid" / "a" / "1.png")  # grey among RGB
    with pytest.raises(DataCorruptError, match=r"valid/a/1.png is corrupt: .*mode 'L' differs"):
        load_dataset("imagefolder", "valid", root=tmp_path)


def test_imagefolder_needs_root_and_an_existing_split(tmp_path):
    with pytest.raises(ValueError, match="root is required"):
        load_dataset("imagefolder", "train")
    write_image_folder(tmp_path / "train", classes=("a",), size=4)
    with pytest.raises(ValueError, match=r"split of dataset 'imagefolder' must be one of .*\('train',\), got 'val'"):
        load_dataset("imagefolder", "val", root=tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_dataset("imagefolder", "../train", root=tmp_path)
    with pytest.raises(DataNotFoundError, match="imagefolder"):
        load_dataset("imagefolder", "train", root=tmp_path / "absent")


# --- the embedded sets ---------------------------------------------------------------------------------------------
def test_embedded_fashion_mnist():
    train, test = load_dataset("fashion_mnist", "train"), load_dataset("fashion_mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels.bincount().tolist() == [6000] * 10 and test.labels.bincount().tolist() == [1000] * 10
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0


def test_embedded_mnist5k():
    tr, te = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    assert len(tr) == len(te) == 2500 and tr.images.shape[1:] == (1, 28, 28) and tr.images.dtype == torch.uint8
    assert int(tr.images.min()) == 0 and int(tr.images.max()) == 255
    assert tr.labels.bincount().tolist() == [250] * 10 and te.labels.bincount().tolist() == [250] * 10
    y = sources._mnist5k()[1]
    train_idx, test_idx = sources.half_split(y, "train"), sources.half_split(y, "test")
    assert not set(train_idx) & set(test_idx) and len(set(train_idx) | set(test_idx)) == 5000
    rows = {bytes(x.numpy()) for x in tr.images}
    assert sum(bytes(x.numpy()) in rows for x in te.images) == 0  # no test image appears in train
    assert torch.equal(load_dataset("mnist5k", "test").images, te.images)  # fixed split


def test_embedded_digits():
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(tr) + len(te) == 1797 and (len(tr), len(te)) == (896, 901)
    assert tr.images.shape[1:] == (1, 28, 28) and tr.images.dtype == torch.uint8
    assert int(tr.images.min()) == 0 and int(tr.images.max()) == 255
    assert abs(tr.labels.bincount().float().mean() - 89.6) < 0.01 and tr.classes == tuple("0123456789")


def test_registry():
    assert set(available_datasets()) == {"fashion_mnist", "mnist5k", "digits", "cifar10", "cifar100", "cinic10",
                                         "imagefolder"}


@pytest.mark.parametrize("args,match", [(("mnist", "train"), r"name must be one of \('fashion_mnist'.*got 'mnist'"),
                                        (("fashion_mnist", "valid"),
                                         r"split of dataset 'fashion_mnist' must be one of \('train', 'test'\), "
                                         r"got 'valid'"),
                                        (("cinic10", "val"), r"split .*\('train', 'valid', 'test'\), got 'val'")])
def test_bad_names_and_splits_are_refused(args, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(*args)


# --- ImageSet and its operations ------------------------------------------------------------------------------------
def _toy(n=100, k=4):
    """n images of 1x2x2 whose pixels hold the image index; label = index % k."""
    return ImageSet("toy", torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous(),
                    torch.arange(n) % k, tuple("abcdefgh"[:k]))


def test_imageset_validates():
    img = torch.zeros(2, 1, 1, 1, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"labels must lie in 0..1 \(2 classes\), got 0..5"):
        ImageSet("bad", img, torch.tensor([0, 5]), ("a", "b"))
    with pytest.raises(ValueError, match="images must be uint8"):
        ImageSet("bad", img.float(), torch.tensor([0, 1]), ("a", "b"))
    with pytest.raises(ValueError, match="images must be uint8 of shape"):
        ImageSet("bad", img[:, 0], torch.tensor([0, 1]), ("a", "b"))
    with pytest.raises(ValueError, match=r"labels must be int64 of shape \(2,\)"):
        ImageSet("bad", img, torch.tensor([0, 1, 1]), ("a", "b"))
    with pytest.raises(ValueError, match="labels must be int64"):
        ImageSet("bad", img, torch.tensor([0, 1], dtype=torch.int32), ("a", "b"))
    with pytest.raises(ValueError, match="classes must be a non-empty tuple"):
        ImageSet("bad", img, torch.tensor([0, 1]), ["a", "b"])
    ds = ImageSet("ok", torch.zeros(2, 4, 4, 3, dtype=torch.uint8).permute(0, 3, 1, 2), torch.tensor([0, 1]),
                  ("a", "b"))
    assert ds.images.is_contiguous() and len(ds) == 2 and ds.num_classes == 2


def test_select_classes_relabels_in_given_order():
    ds = select_classes(_toy(), [3, 1])
    assert ds.classes == ("d", "b") and len(ds) == 50 and ds.name == "toy[3,1]"
    original = ds.images[:, 0, 0, 0].long()  # image index, so original label = index % 4
    assert torch.equal(ds.labels, torch.where(original % 4 == 3, 0, 1))
    assert torch.equal(original, original.sort().values)  # order kept
    for bad in ([], [1, 1], [4], [-1], ["a"], [1.5]):
        with pytest.raises(ValueError, match="classes must be"):
            select_classes(_toy(), bad)


def test_subsample_is_stratified_and_seeded():
    ds = ImageSet("skewed", torch.arange(200, dtype=torch.uint8).view(200, 1, 1, 1),
                  torch.tensor([0] * 100 + [1] * 60 + [2] * 40), ("a", "b", "c"))
    a, b, c = subsample(ds, 50, seed=0), subsample(ds, 50, seed=0), subsample(ds, 50, seed=1)
    assert len(a) == 50 and a.labels.bincount().tolist() == [25, 15, 10]
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert len(set(a.images.flatten().tolist())) == 50  # no repeats
    odd = subsample(ds, 7, seed=0)  # 3.5, 2.1, 1.4 -> 3 + 2 + 1 plus one by largest remainder (class 0)
    assert odd.labels.bincount(minlength=3).tolist() == [4, 2, 1]
    assert subsample(ds, None, 0) is ds and subsample(ds, 200, 0) is ds and subsample(ds, 500, 0) is ds
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n must be None or an int >= 1"):
            subsample(ds, bad, 0)


def test_to_format_channels_and_size():
    ds = _toy(8)
    rgb = to_format(ds, 3, 4)
    assert rgb.images.shape == (8, 3, 4, 4) and rgb.images.dtype == torch.uint8
    assert torch.equal(rgb.images[:, 0], rgb.images[:, 1]) and torch.equal(rgb.images[:, 0], rgb.images[:, 2])
    assert torch.equal(rgb.images[:, 0], ds.images[:, 0, :1, :1].expand(8, 4, 4))  # constant images stay constant
    assert torch.equal(to_format(rgb, 1, 2).images, ds.images)
    assert to_format(ds, 1, 2) is ds


def test_to_format_luma_and_antialias():
    colours = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], dtype=torch.uint8)
    ds = ImageSet("rgb", colours.view(4, 3, 1, 1).expand(4, 3, 2, 2).contiguous(), torch.zeros(4, dtype=torch.long),
                  ("x",))
    grey = to_format(ds, 1, 2).images[:, 0, 0, 0].tolist()
    assert grey == [76, 150, 29, round(0.299 * 10 + 0.587 * 20 + 0.114 * 30)]  # ITU-R 601 luma
    stripes = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    stripes[..., ::4] = 255  # every fourth column bright: mean 63.75
    small = to_format(ImageSet("s", stripes, torch.zeros(1, dtype=torch.long), ("x",)), 1, 2).images
    assert small.shape == (1, 1, 2, 2) and 40 <= int(small.min()) <= int(small.max()) <= 90  # plain bilinear: 0


def test_to_format_refuses_bad_arguments():
    ds = _toy(4)
    for channels in (2, 0, 4):
        with pytest.raises(ValueError, match=f"channels must be 1 or 3, got {channels}"):
            to_format(ds, channels, 4)
    for size in (0, -1, 2.0):
        with pytest.raises(ValueError, match="size must be an int >= 1"):
            to_format(ds, 1, size)
