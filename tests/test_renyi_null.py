"""Null baseline of the matrix-based Renyi estimator: shuffled pairs at the book's n (1000) and d."""
import math

import pytest
import torch

from ctcbook.estimators import renyi_null
from renyi_reference import renyi_mutual_information

N, DX, DT, K = 1000, 784, 32, 5  # the book's renyi_n; 28 x 28 inputs; a width-8 ResNet-8's penultimate width


def _data(seed):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(N) % K
    x = torch.randn(N, DX, generator=gen) + 2.0 * torch.nn.functional.one_hot(labels, DX).float()
    t = x[:, :DT] * 1.5 + 0.1 * torch.randn(N, DT, generator=gen)  # T depends on X (and so on Y)
    return x, t, labels


def test_shuffled_pairs_read_like_independent_data_and_below_dependent_pairs():
    x, t, labels = _data(0)
    null = renyi_null(x, t, labels, shuffles=2)
    assert null.n == N and null.shuffles == 2
    # a fresh, independent T at the same n and d reads the same as the shuffled pairs
    x2, _, _ = _data(1)
    independent = renyi_mutual_information(x2, t)
    assert null.i_xt == pytest.approx(independent, abs=0.05)
    # the finite-n bias: independent pairs read about 2 bits here (measured 1.98), far above 0 and below log2 n;
    # T's dependence on 32 of X's 784 dimensions lifts the reading only a little above that floor (measured 2.01)
    assert 1.5 < null.i_xt < 2.5
    dependent = renyi_mutual_information(x, t)
    assert null.i_xt + 10 * null.i_xt_sd < dependent < math.log2(N)
    labels_dependent = renyi_mutual_information(t, labels, t_is_labels=True)
    # I(T;Y) of shuffled labels reads about 0.42 bits (measured), the dependent pairs 0.66
    assert 0.2 < null.i_ty < 0.7 and null.i_ty + 10 * null.i_ty_sd < labels_dependent
    assert null.i_xt_sd < 0.05 and null.i_ty_sd < 0.05
    with pytest.raises(ValueError, match="same number of points"):
        renyi_null(x, t[:-1], labels)
    with pytest.raises(ValueError, match="shuffles"):
        renyi_null(x, t, labels, shuffles=0)
