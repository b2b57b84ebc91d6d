"""Probes on features with known answers: chance on random labels, near 100% on separable classes."""
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from ctcbook.evaluate import extract_features, fit_logistic, knn_accuracy, linear_probe, paper_probe


def _random_labels(n=2000, d=32, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g),
            torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g))


def _separable(n=1000, d=16, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, d, generator=g) * 10
    y, yt = torch.randint(0, k, (n,), generator=g), torch.randint(0, k, (n,), generator=g)
    return means[y] + torch.randn(n, d, generator=g), y, means[yt] + torch.randn(n, d, generator=g), yt


@pytest.mark.parametrize("probe", [lambda *a: linear_probe(*a).accuracy, lambda *a: knn_accuracy(*a),
                                   lambda *a: paper_probe(*a, epochs=10).best_accuracy],
                         ids=["linear", "knn", "paper"])
def test_probes_are_at_chance_on_random_labels_and_perfect_when_separable(probe):
    assert abs(probe(*_random_labels()) - 0.2) < 0.05
    assert probe(*_separable()) >= 0.99


def test_linear_probe_is_deterministic_and_picks_from_the_grid():
    data = _random_labels(seed=1)
    a, b = linear_probe(*data, seed=3), linear_probe(*data, seed=3)
    assert a == b and a.reg in (1e-4, 1e-3, 1e-2, 1e-1, 1.0) and set(a.val_accuracy) == {1e-4, 1e-3, 1e-2, 1e-1, 1.0}
    # On random labels held-out accuracy is best with strong regularisation (fits nothing spurious).
    assert a.reg >= 1e-2


def test_fit_logistic_matches_scikit_learn():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 10, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.8 * torch.randn(600, generator=g) > 0).long() + (x[:, 2] > 1).long()
    reg = 0.01
    w, b = fit_logistic(x, y, 3, reg)
    ref = LogisticRegression(C=1 / (reg * len(x)), max_iter=2000, tol=1e-8).fit(x.numpy(), y.numpy())
    # Same objective (sklearn: C * sum CE + ||W||^2 / 2), so the same solution up to the softmax's shift invariance.
    ours = torch.softmax(x @ w + b, 1).numpy()
    assert abs(ours - ref.predict_proba(x.numpy())).max() < 2e-3


class _Stub(nn.Module):
    """(features, logits) with dropout, so train mode is detectable."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.9)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        f = self.drop(x.flatten(1)[:, :4] + 1)
        return f, self.head(f)


def test_extract_features_uses_eval_mode_and_restores_it():
    model = _Stub().train()
    images = torch.randint(0, 256, (37, 1, 2, 2), dtype=torch.uint8)
    feats, logits = extract_features(model, images, batch_size=10, with_logits=True)
    assert model.training and feats.dtype == torch.float32 and feats.shape == (37, 4) and logits.shape == (37, 2)
    assert torch.allclose(feats, images.flatten(1).float() / 255 + 1)


@pytest.mark.parametrize("call,name", [
    (lambda: linear_probe(torch.randn(10, 3), torch.zeros(10), torch.randn(5, 3), torch.zeros(5).long()), "train_y"),
    (lambda: linear_probe(*_random_labels(100), val_fraction=1.5), "val_fraction"),
    (lambda: knn_accuracy(*_random_labels(100), k=0), "k must"),
    (lambda: linear_probe(torch.randn(10, 3), torch.zeros(10).long(), torch.randn(5, 4), torch.zeros(5).long()),
     "same width"),
])
def test_bad_arguments_name_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()
