"""Probes on features with known answers: chance on random labels, near 100% on separable classes; the linear probe
against scikit-learn; feature extraction in eval mode; argument checks."""
import functools
import math

import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from ctcbook.probes import (PaperProbeResult, ProbeResult, accuracy, extract_features, fit_logistic, knn_accuracy,
                              linear_probe, paper_probe, stratified_holdout)

GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _random_labels(n=2000, d=32, k=5, seed=0):
    """Gaussian features independent of uniform labels: every probe must be at chance, 1/k."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g),
            torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g))


def _separable(n=1000, d=16, k=5, seed=0):
    """Class means ~10 apart against unit noise: linearly separable with overwhelming probability."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, d, generator=g) * 10
    y, yt = torch.randint(0, k, (n,), generator=g), torch.randint(0, k, (n,), generator=g)
    return means[y] + torch.randn(n, d, generator=g), y, means[yt] + torch.randn(n, d, generator=g), yt


PROBES = {"linear": lambda *a: linear_probe(*a).accuracy,
          "knn": lambda *a: knn_accuracy(*a),
          "paper": lambda *a: paper_probe(*a).best_accuracy}


@pytest.mark.parametrize("name", PROBES)
def test_probes_are_at_chance_on_random_labels_and_perfect_when_separable(name):
    assert abs(PROBES[name](*_random_labels()) - 0.2) < 0.05
    assert PROBES[name](*_separable()) >= 0.99


# ------------------------------------------------------------------------------------------------ linear probe
def test_linear_probe_is_deterministic_for_a_seed_and_picks_from_the_grid():
    data = _random_labels(seed=1)
    a, b, c = linear_probe(*data, seed=3), linear_probe(*data, seed=3), linear_probe(*data, seed=4)
    assert isinstance(a, ProbeResult) and a == b
    assert a.reg in GRID and set(a.val_accuracy) == set(GRID) and all(0 <= v <= 1 for v in a.val_accuracy.values())
    assert a.val_accuracy[a.reg] == max(a.val_accuracy.values())
    assert c.val_accuracy != a.val_accuracy  # the seed picks the held-out split
    # On random labels held-out accuracy is best with strong regularisation (fits nothing spurious).
    assert a.reg >= 1e-2


def test_linear_probe_breaks_ties_towards_stronger_regularisation():
    res = linear_probe(*_separable(), reg_grid=(1e-3, 0.3, 1e-2))
    assert set(res.val_accuracy.values()) == {1.0}  # every grid value is perfect on held-out: a tie
    assert res.reg == 0.3


def test_stratified_holdout_holds_out_the_fraction_of_each_class():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20 + [3])
    fit, held = stratified_holdout(labels, 0.2, seed=0)
    assert torch.equal(torch.cat([fit, held]).sort().values, torch.arange(len(labels)))
    assert torch.bincount(labels[held], minlength=4).tolist() == [10, 6, 4, 0]  # a singleton class stays in fit
    assert torch.equal(stratified_holdout(labels, 0.2, seed=0)[1], held)
    assert not torch.equal(stratified_holdout(labels, 0.2, seed=1)[1], held)


def test_fit_logistic_matches_scikit_learn():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 10, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.8 * torch.randn(600, generator=g) > 0).long() + (x[:, 2] > 1).long()
    reg = 0.01
    w, b = fit_logistic(x, y, 3, reg)
    assert w.shape == (10, 3) and b.shape == (3,)
    ref = LogisticRegression(C=1 / (reg * len(x)), max_iter=2000, tol=1e-8).fit(x.numpy(), y.numpy())
    # Same objective (sklearn: C * sum CE + ||W||^2 / 2), so the same solution up to the softmax's shift invariance.
    ours = torch.softmax(x @ w + b, 1).numpy()
    assert abs(ours - ref.predict_proba(x.numpy())).max() < 2e-3


def test_linear_probe_refit_agrees_with_scikit_learn():
    # Imbalanced classes, few images for the width: test accuracy moves by several points across these strengths,
    # so an objective scaled differently from C = 1 / (reg * N) (e.g. summed instead of mean cross-entropy) fails.
    g = torch.Generator().manual_seed(0)
    n, d = 200, 40
    means = torch.randn(3, d, generator=g) * 3 / d ** 0.5

    def make(m):
        y = torch.multinomial(torch.tensor([0.6, 0.3, 0.1]), m, replacement=True, generator=g)
        return means[y] + torch.randn(m, d, generator=g), y

    (x, y), (xt, yt) = make(n), make(2000)
    std, mean = torch.std_mean(x.double(), 0)
    accs = []
    for reg in (1e-2, 1e-1, 1.0):
        ours = linear_probe(x, y, xt, yt, reg_grid=(reg,))
        ref = LogisticRegression(C=1 / (reg * n), max_iter=5000, tol=1e-10).fit(((x - mean) / std).numpy(), y.numpy())
        ref_acc = (ref.predict(((xt - mean) / std).numpy()) == yt.numpy()).mean()
        assert ours.reg == reg and abs(ours.accuracy - ref_acc) <= 0.01, (reg, ours.accuracy, ref_acc)
        accs.append(ours.accuracy)
    assert max(accs) - min(accs) > 0.05  # the check above is sensitive to the strength


def test_linear_probe_ignores_a_constant_feature():
    x, y, xt, yt = _separable(n=300)
    pad = lambda a: torch.cat([a, torch.full((len(a), 1), 3.0)], 1)
    res = linear_probe(pad(x), y, pad(xt), yt)
    assert math.isfinite(res.accuracy) and res.accuracy >= 0.99


def _imbalanced(n, d=40, weights=(0.6, 0.3, 0.1), seed=0):
    """Three overlapping classes of the given frequencies (class means 3 / sqrt(d) apart on a random direction)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(3, d, generator=torch.Generator().manual_seed(0)) * 3 / d ** 0.5
    y = torch.multinomial(torch.tensor(weights), n, replacement=True, generator=g)
    return means[y] + torch.randn(n, d, generator=g), y


def test_linear_probe_does_not_look_at_the_test_split():
    # One train split, test splits of very different class mixes: the strength is chosen, and the features are
    # standardised, from the train split alone, so the choice and the held-out accuracies do not move, and each test
    # image's prediction is its own (correct counts add up when a test split is cut in two).
    x, y = _imbalanced(200)
    splits = [_imbalanced(600, weights=w, seed=s) for s, w in ((1, (0.8, 0.1, 0.1)), (2, (0.1, 0.1, 0.8)))]
    probe = functools.partial(linear_probe, reg_grid=(1e-2, 1e-1, 1.0), max_iter=60)
    results = [probe(x, y, xt, yt) for xt, yt in splits]
    both = probe(x, y, torch.cat([splits[0][0], splits[1][0]]), torch.cat([splits[0][1], splits[1][1]]))
    assert results[0].reg == results[1].reg == both.reg
    assert results[0].val_accuracy == results[1].val_accuracy == both.val_accuracy
    correct = [round(r.accuracy * 600) for r in results]
    assert round(both.accuracy * 1200) == sum(correct)
    assert len(set(results[0].val_accuracy.values())) > 1  # the held-out accuracy does depend on the strength


def test_linear_probe_scores_a_test_split_of_one_class():
    # A test split holding one class has its own mean and spread; the train split's statistics must still be used.
    x, y, xt, yt = _separable(n=300)
    for cls in (0, 2, 4):
        keep = yt == cls
        assert linear_probe(x, y, xt[keep], yt[keep], reg_grid=(1e-2,), max_iter=50).accuracy >= 0.99, cls


# -------------------------------------------------------------------------------------------------------- kNN
def test_knn_weights_votes_by_similarity_and_temperature():
    # One train point right on the query (class 1) against two farther ones (class 0): a low temperature lets the
    # closest point win; a high one makes the vote a near-majority, which class 0 wins.
    train = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.8, -0.6]])
    labels = torch.tensor([1, 0, 0])
    query, truth = torch.tensor([[1.0, 0.0]]), torch.tensor([1])
    assert knn_accuracy(train, labels, query, truth, k=3, temperature=0.05) == 1.0
    assert knn_accuracy(train, labels, query, truth, k=3, temperature=10.0) == 0.0
    assert knn_accuracy(train, labels, query, truth, k=1, temperature=10.0) == 1.0
    # Scale does not matter (cosine), and chunking over test points does not change the answer.
    data = _random_labels(n=500, seed=2)
    a = knn_accuracy(*data, batch_size=7)
    assert a == knn_accuracy(data[0] * 5, data[1], data[2], data[3], batch_size=1024) == knn_accuracy(*data)


def test_knn_follows_cosine_similarity_whatever_the_norms():
    # Class 1: short train vectors pointing along the query; class 0: vectors 10^4 times longer at 45 degrees to it.
    # Cosine similarity picks class 1; raw dot products would pick the long class-0 vectors.
    train = torch.tensor([[0.01, 0.0005], [0.01, -0.0005], [0.01, 0.0], [50.0, 50.0], [50.0, 45.0], [45.0, 50.0]])
    labels = torch.tensor([1, 1, 1, 0, 0, 0])
    queries = torch.tensor([[1.0, 0.0], [3.0, 0.1], [200.0, -1.0]])
    truth = torch.ones(3, dtype=torch.long)
    for k in (1, 3, 6):
        assert knn_accuracy(train, labels, queries, truth, k=k) == 1.0, k
    # The other way round: long class-1 vectors along the query, short class-0 ones at 45 degrees, class 0 queries
    # along the class-0 direction.
    assert knn_accuracy(train, 1 - labels, torch.tensor([[1.0, 1.0], [0.01, 0.009]]), torch.zeros(2, dtype=torch.long),
                        k=3) == 0.0


def test_knn_temperature_acts_on_cosine_similarity_not_on_the_norms():
    # The vote of test_knn_weights_votes_by_similarity_and_temperature must not change when the query or the train
    # vectors are scaled: the weights are exp(cosine / temperature).
    train = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.8, -0.6]])
    labels = torch.tensor([1, 0, 0])
    query, truth = torch.tensor([[1.0, 0.0]]), torch.tensor([1])
    for scale_train, scale_query in ((1.0, 100.0), (100.0, 1.0), (0.01, 0.01)):
        assert knn_accuracy(train * scale_train, labels, query * scale_query, truth, k=3, temperature=10.0) == 0.0
        assert knn_accuracy(train * scale_train, labels, query * scale_query, truth, k=3, temperature=0.05) == 1.0


# ------------------------------------------------------------------------------------------------- paper probe
def test_paper_probe_is_deterministic_for_a_seed_and_reports_the_best_epoch():
    data = _random_labels(n=600, seed=3)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = paper_probe(*data, epochs=8, batch_size=64, seed=1)
    assert torch.equal(torch.rand(3), expected_next)  # the global random state is left alone
    b, c = paper_probe(*data, epochs=8, batch_size=64, seed=1), paper_probe(*data, epochs=8, batch_size=64, seed=2)
    assert isinstance(a, PaperProbeResult) and a == b and c.curve != a.curve
    assert len(a.curve) == 8 and a.best_accuracy == max(a.curve) and a.final_accuracy == a.curve[-1]


def test_paper_probe_schedule_is_cosine_annealing_stepped_per_epoch():
    from ctcbook.probes import _cosine_lr

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30)
    for epoch in range(30):
        assert _cosine_lr(0.4, epoch, 30) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-9)
        opt.step()
        sched.step()


# ---------------------------------------------------------------------------------------------------- features
class _Stub(nn.Module):
    """(features, logits) through BatchNorm and Dropout, so train mode changes the output and the running stats."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(4)
        self.bn.running_mean.fill_(0.5)
        self.bn.running_var.fill_(4.0)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4, 3)
        self.fail = False

    def forward(self, x):
        if self.fail:
            raise RuntimeError("boom")
        f = self.drop(self.bn(x.flatten(1)[:, :4]))
        return f, self.head(f)


def test_extract_features_uses_eval_mode_and_handles_a_partial_last_batch():
    model = _Stub().train()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (37, 1, 2, 2), dtype=torch.uint8, generator=g)
    copy = images.clone()
    feats, logits = extract_features(model, images, batch_size=10, with_logits=True)
    expected = (images.flatten(1).float() / 255 - 0.5) / math.sqrt(4.0 + model.bn.eps)  # eval-mode BatchNorm
    assert feats.dtype == torch.float32 and feats.device.type == "cpu" and feats.shape == (37, 4)
    assert torch.allclose(feats, expected, atol=1e-6)
    assert logits.dtype == torch.float32 and logits.shape == (37, 3)
    assert torch.allclose(logits, model.head(expected).detach(), atol=1e-6)
    assert torch.equal(model.bn.running_mean, torch.full((4,), 0.5))  # no train-mode update of the statistics
    assert torch.equal(images, copy)
    assert torch.equal(extract_features(model, images, batch_size=1024), feats)


def test_extract_features_restores_each_modules_mode():
    model = _Stub().train()
    model.bn.eval()  # a frozen BatchNorm inside a training model must stay frozen
    images = torch.zeros(5, 1, 2, 2, dtype=torch.uint8)
    extract_features(model, images)
    assert model.training and model.drop.training and not model.bn.training
    model.eval()
    extract_features(model, images)
    assert not any(m.training for m in model.modules())
    model.train()
    model.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        extract_features(model, images)
    assert all(m.training for m in model.modules())


def test_accuracy_from_logits_and_predictions():
    labels = torch.tensor([0, 1, 2, 1])
    assert accuracy(torch.tensor([0, 1, 1, 1]), labels) == 0.75
    assert accuracy(torch.eye(3)[[0, 1, 2, 2]] * 5, labels) == 0.75


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_probes_and_extraction_run_on_cuda_like_on_cpu():
    for data in (_random_labels(n=800), _separable(n=800)):
        cuda = [t.cuda() for t in data]
        assert linear_probe(*cuda).accuracy == pytest.approx(linear_probe(*data).accuracy, abs=0.03)
        assert knn_accuracy(*cuda) == pytest.approx(knn_accuracy(*data), abs=0.01)
        assert paper_probe(*cuda, epochs=5).best_accuracy == pytest.approx(paper_probe(*data, epochs=5).best_accuracy,
                                                                            abs=0.03)
    model, images = _Stub(), torch.randint(0, 256, (9, 1, 2, 2), dtype=torch.uint8)
    feats = extract_features(model.cuda(), images, batch_size=4)
    assert feats.device.type == "cpu" and feats.dtype == torch.float32
    assert torch.allclose(feats, extract_features(model.cpu(), images), atol=1e-5)


# ----------------------------------------------------------------------------------------------- bad arguments
_D = _random_labels(100)
_IMAGES = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)


@pytest.mark.parametrize("call,name", [
    (lambda: linear_probe(_D[0], _D[1].float(), _D[2], _D[3]), "train_y"),
    (lambda: linear_probe(_D[0], _D[1][:50], _D[2], _D[3]), "train_y"),
    (lambda: linear_probe(_D[0], _D[1] - 1, _D[2], _D[3]), "train_y"),
    (lambda: linear_probe(_D[0], _D[1], _D[2].flatten(), _D[3]), "test_x"),
    (lambda: linear_probe(_D[0], _D[1], _D[2][:, :3], _D[3]), "same width"),
    (lambda: linear_probe(*_D, val_fraction=1.5), "val_fraction"),
    (lambda: linear_probe(*_D, val_fraction=0.0), "val_fraction"),
    (lambda: linear_probe(*_D, reg_grid=()), "reg_grid"),
    (lambda: linear_probe(*_D, reg_grid=(0.1, -1.0)), "reg_grid"),
    (lambda: linear_probe(*_D, max_iter=0), "max_iter"),
    (lambda: knn_accuracy(*_D, k=0), "k must"),
    (lambda: knn_accuracy(*_D, k=101), "k must"),
    (lambda: knn_accuracy(*_D, temperature=0.0), "temperature"),
    (lambda: knn_accuracy(*_D, batch_size=0), "batch_size"),
    (lambda: paper_probe(*_D, epochs=0), "epochs"),
    (lambda: paper_probe(*_D, lr=-0.1), "lr"),
    (lambda: paper_probe(*_D, momentum=1.5), "momentum"),
    (lambda: paper_probe(*_D, weight_decay=-1.0), "weight_decay"),
    (lambda: paper_probe(*_D, batch_size=0), "batch_size"),
    (lambda: extract_features(_Stub(), _IMAGES.float()), "images"),
    (lambda: extract_features(_Stub(), _IMAGES, batch_size=0), "batch_size"),
    (lambda: accuracy(torch.zeros(4, 3), torch.zeros(5).long()), "labels"),
])
def test_bad_arguments_name_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_paper_probe_bn_reestimates_batchnorm_on_the_target_and_leaves_the_model_alone():
    from ctcbook.probes import paper_probe_bn
    from ctcbook.models import build_model

    torch.manual_seed(0)
    model = build_model("cifar_resnet", 3, in_channels=1, mean=[0.5], std=[0.25], depth=8, width=4).eval()
    # Wrong running statistics in the stem's BatchNorm make eval-mode features nearly constant: a probe on frozen
    # eval-mode features cannot separate the classes; transfer.py's train-mode probe re-estimates them and can.
    bn = model.backbone.stem[1]
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(1e3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (120,), generator=g)
    images = (labels.view(-1, 1, 1, 1) * 200 + torch.randint(0, 50, (120, 1, 8, 8), generator=g)).to(torch.uint8)
    frozen = paper_probe(extract_features(model, images[:80]), labels[:80], extract_features(model, images[80:]),
                         labels[80:], epochs=12, batch_size=16, lr=0.1)
    res = paper_probe_bn(model, images[:80], labels[:80], images[80:], labels[80:], epochs=12, batch_size=16, lr=0.1)
    assert frozen.best_accuracy < 0.8
    assert len(res.curve) == 12 and res.best_accuracy == max(res.curve) and res.best_accuracy >= 0.9
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the source model is untouched


def test_linear_probe_reports_the_model_refit_on_the_whole_train_split():
    # The held-out images choose the regularisation, then the reported probe is refit on *all* train images. Here
    # only the held-out images show that the second feature carries the class, so a probe that kept the fit made
    # without them scores test images that differ only in that feature at chance, and the refit one near 100%.
    from ctcbook.probes import stratified_holdout

    gen = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2
    fit_idx, held_idx = stratified_holdout(y, 0.2, seed=0)
    sign = y.float() * 2 - 1
    x = torch.zeros(200, 2)
    x[fit_idx, 0] = 3 * sign[fit_idx]      # the fit part: the class shows in feature 0 only
    x[held_idx, 1] = 3 * sign[held_idx]    # the held-out part: in feature 1 only
    x += 0.3 * torch.randn(200, 2, generator=gen)
    test_y = torch.arange(100) % 2
    test_x = torch.stack([torch.zeros(100), 3 * (test_y.float() * 2 - 1)], 1) + 0.3 * torch.randn(100, 2, generator=gen)
    result = linear_probe(x, y, test_x, test_y, reg_grid=(1e-4,), seed=0)
    assert result.accuracy > 0.95, result
