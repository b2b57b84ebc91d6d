"""Chapter 1's fit criterion: seed-mean clean_train_acc over the final quarter >= 99%."""
import pytest

from ctcbook.chapters import ch1_tradeoff as tradeoff
from ctcbook.config import TrainConfig
from ctcbook.runs import RunStore
from ctcbook.train import train

# The smoke scale: 90 UCI digits of 3 classes, no augmentation, a width-4 ResNet-8 (a few seconds a run).
TINY = TrainConfig(source="digits", source_classes=(0, 1, 2), train_size=90, width=4, depth=8, batch_size=25,
                   augment="none", epochs=14)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("fit"))
    fitted = [train(TINY.replace(seed=s), store=store, progress=False) for s in (0, 1)]
    unfitted = [train(TINY.replace(seed=s, epochs=1), store=store, progress=False) for s in (0, 1)]
    return fitted, unfitted


def test_a_setting_that_fits_quickly_reaches_the_criterion_and_one_epoch_does_not(runs):
    fitted, unfitted = runs
    ok, bad = tradeoff.fit_reached(fitted), tradeoff.fit_reached(unfitted)
    assert ok.reached and ok.mean >= 0.99 and ok.epochs == (12, 14)  # the final quarter of 14 epochs: 12-14
    assert not bad.reached and bad.mean < 0.9 and bad.epochs == (1, 1)
    for run in fitted:  # the number is the mean of clean_train_acc over the quarter, per seed
        rows = run.metrics()[-3:]
        assert ok.per_seed[run.config["seed"]] == pytest.approx(sum(r["clean_train_acc"] for r in rows) / 3)
        assert ok.per_seed_min[run.config["seed"]] == min(r["clean_train_acc"] for r in rows)
    assert ok.interval.n == 2 and ok.interval.mean == pytest.approx(100 * ok.mean)
    # a stricter threshold than the fit reached fails the same runs
    assert not tradeoff.fit_reached(fitted, threshold=min(1.0, ok.mean + 1e-9)).reached or ok.mean == 1.0


def test_final_quarter_uses_clean_not_augmented_accuracy():
    rows = [{"epoch": e, "clean_train_acc": 0.5 + e / 100, "train_acc": 0.1} for e in range(1, 9)]
    q = tradeoff.final_quarter(rows)
    assert q["first_epoch"] == 7 and q["mean"] == pytest.approx(0.575) and q["min"] == pytest.approx(0.57) and q["last"] == pytest.approx(0.58)
    with pytest.raises(ValueError, match="clean_train_acc"):
        tradeoff.final_quarter([{"epoch": 1, "train_acc": 0.9}])
    sparse = [r if r["epoch"] % 2 == 0 or r["epoch"] == 1 else {"epoch": r["epoch"], "train_acc": 0.1} for r in rows]
    q = tradeoff.final_quarter(sparse)  # measured at 1, 2, 4, 6, 8: the last quarter of those is epoch 8
    assert q["first_epoch"] == 8 and q["mean"] == pytest.approx(0.58)
    with pytest.raises(ValueError, match="threshold"):
        tradeoff.fit_reached([], threshold=1.5)
