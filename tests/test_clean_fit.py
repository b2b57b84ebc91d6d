"""clean_train_acc / clean_train_loss: the fit of the un-augmented training images, logged with every epoch."""
import pytest
import torch

from ctcbook.config import TrainConfig
from ctcbook.data import ImageSet, subsample
from ctcbook.runs import RunStore
import ctcbook.train as engine
from ctcbook.train import CLEAN_TRAIN_IMAGES, clean_train_set, load_model, source_data, train

TINY = TrainConfig(train_size=200, epochs=2, width=4, depth=8, batch_size=50, seed=3)


def test_logged_clean_fit_equals_test_accuracy_on_the_training_images(tmp_path):
    config = TINY  # crop + flip: the logged fit must not be the augmented one
    run = train(config, store=RunStore(tmp_path), progress=False)
    train_set, _ = source_data(config)
    rows = run.metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        model = load_model(run, row["epoch"])
        acc, loss = engine.evaluate(model, engine.tensor_batches(train_set.images, train_set.labels))
        assert row["clean_train_acc"] == pytest.approx(acc, abs=1e-12)
        assert row["clean_train_loss"] == pytest.approx(loss, rel=1e-5)
        # a different quantity from the test accuracy (guards against logging the wrong set)
        assert (row["clean_train_acc"], row["clean_train_loss"]) != (row["test_acc"], row["test_loss"])


def test_clean_set_is_all_images_up_to_the_limit_else_a_fixed_stratified_subset():
    small = ImageSet("s", torch.zeros(50, 1, 2, 2, dtype=torch.uint8), torch.arange(50) % 5, tuple("abcde"))
    assert clean_train_set(small) is small
    n = CLEAN_TRAIN_IMAGES + 2_000
    labels = torch.cat([torch.zeros(n // 4), torch.ones(n - n // 4)]).long()
    images = torch.arange(n).remainder(256).to(torch.uint8).view(n, 1, 1, 1)
    big = ImageSet("b", images, labels, ("a", "b"))
    a, b = clean_train_set(big), clean_train_set(big)
    assert len(a) == CLEAN_TRAIN_IMAGES and torch.equal(a.labels, b.labels) and torch.equal(a.images, b.images)
    assert int((a.labels == 0).sum()) == CLEAN_TRAIN_IMAGES // 4  # each class keeps its share
    assert torch.equal(a.images, subsample(big, CLEAN_TRAIN_IMAGES, seed=0).images)  # the documented seed 0


def test_test_every_measures_the_first_every_nth_and_last_epochs_only(tmp_path):
    run = train(TINY.replace(epochs=5, test_every=2), store=RunStore(tmp_path), progress=False)
    measured = [r["epoch"] for r in run.metrics() if "test_acc" in r and "clean_train_acc" in r]
    assert measured == [1, 2, 4, 5] and len(run.metrics()) == 5
    assert "test_every" not in TINY.to_dict() and TINY.replace(test_every=2).to_dict()["test_every"] == 2
    with pytest.raises(ValueError, match="test_every"):
        TINY.replace(test_every=0)
