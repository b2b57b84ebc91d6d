"""Feature geometry (ctcbook.geometry): NC1 and effective rank on features with known answers."""
import math

import numpy as np
import pytest
import torch

from ctcbook.geometry import class_covariances, effective_rank, nc1

K, D, A = 5, 8, 3.0


def _means():
    return A * torch.eye(D, dtype=torch.float64)[:K]                    # well separated, |mu_k - mu_j| = A sqrt(2)


def test_features_equal_to_their_class_means_give_zero():
    labels = torch.arange(K).repeat(20)
    assert nc1(_means()[labels], labels) == pytest.approx(0.0, abs=1e-12)


def test_exactly_isotropic_spread_gives_the_closed_form():
    # each class: mu_k +- c e_j for every direction j -> class mean mu_k, Sigma_W = c^2/D I exactly, and
    # Sigma_B has K-1 eigenvalues A^2/K, so NC1 = (c^2/D) * (K-1) / A^2.
    c = 0.7
    eye = torch.eye(D, dtype=torch.float64)
    offsets = torch.cat([c * eye, -c * eye])
    feats = torch.cat([m + offsets for m in _means()])
    labels = torch.arange(K).repeat_interleave(2 * D)
    sigma_w, sigma_b, k = class_covariances(feats, labels)
    assert k == K and torch.allclose(sigma_w, c * c / D * torch.eye(D, dtype=torch.float64))
    assert nc1(feats, labels) == pytest.approx(c * c / D * (K - 1) / A ** 2, rel=1e-10)


def test_isotropic_gaussian_noise_around_separated_means_matches_the_closed_form():
    sigma, n = 0.5, 4000
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(K).repeat(n)
    feats = _means()[labels] + sigma * torch.randn(K * n, D, generator=gen, dtype=torch.float64)
    expected = sigma ** 2 * (K - 1) / A ** 2
    assert nc1(feats.numpy(), labels.numpy()) == pytest.approx(expected, rel=0.03)
    # the number grows with the noise and does not depend on a rescaling of the features
    assert nc1(2 * feats, labels) == pytest.approx(nc1(feats, labels), rel=1e-9)


def test_effective_rank_of_k_equal_singular_values_is_k():
    for k in (1, 3, 7):
        rows = torch.cat([torch.eye(D)[:k], -torch.eye(D)[:k]])             # centred; k singular values sqrt(2)
        assert effective_rank(rows) == pytest.approx(k, rel=1e-10)
    # unequal singular values: exp of the entropy of s / s.sum()
    feats = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    p = np.array([3.0, 1.0]) / 4
    assert effective_rank(feats) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-10)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="at least 2 classes"):
        nc1(torch.randn(10, 3), torch.zeros(10))
    with pytest.raises(ValueError, match="labels must be"):
        nc1(torch.randn(10, 3), torch.zeros(9))
    with pytest.raises(ValueError, match="features must be"):
        effective_rank(torch.randn(10))
