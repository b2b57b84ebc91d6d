"""Tests of the information estimators (ctcbook.estimators) on cases with known answers."""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pytest
import torch

from ctcbook.estimators import (
    PAPER_MINE_TY, PAPER_MINE_XT, MineSettings, statistics_network, gaussian_gram, kernel_width, label_gram, mine,
    mine_step_loss, one_hot, renyi_entropy, smoothed_estimate,
)
from renyi_reference import renyi_joint_entropy, renyi_mutual_information

LN2 = math.log(2.0)
RHOS = (0.2, 0.5, 0.8, 0.95)
# MINE shrunk for a 2-core CPU: tiny network, few steps, larger learning rate (paper: 1024 x 3, 1e4 steps, batch 5000)
SMALL_MINE = MineSettings(hidden=64, layers=2, lr=3e-3, iterations=400, batch_size=256, smoothing=100, seed=0)


def correlated_gaussians(n: int, d: int, rho: float, seed: int, dtype=torch.float32):
    """x, t in R^d, each coordinate pair a standard bivariate normal with correlation rho."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    e = torch.randn(n, d, generator=g, dtype=dtype)
    return x, rho * x + math.sqrt(1.0 - rho ** 2) * e


def dv_bound(t_joint: torch.Tensor, t_marginal: torch.Tensor) -> torch.Tensor:
    """Donsker-Varadhan lower bound E_P[T] - log E_Q[e^T] in nats: the reference for mine_step_loss's bound."""
    if t_joint.numel() == 0 or t_marginal.numel() == 0:
        raise ValueError("t_joint and t_marginal must be non-empty")
    return t_joint.mean() - (torch.logsumexp(t_marginal.reshape(-1), 0) - math.log(t_marginal.numel()))


def true_mi_bits(d: int, rho: float) -> float:
    return -d / 2.0 * math.log(1.0 - rho ** 2) / LN2


# ----------------------------------------------------------------------------------------------------- MINE
@functools.lru_cache(maxsize=None)
def _mine_bits(rho: float, d: int = 2) -> float:
    x, t = correlated_gaussians(5000, d, rho, seed=11)
    return mine(x, t, SMALL_MINE).mi_bits


def test_mine_recovers_gaussian_mi_at_moderate_rho():
    truth = true_mi_bits(2, 0.5)  # 0.415 bits
    est = _mine_bits(0.5)
    assert abs(est - truth) <= 0.15, (est, truth)
    est = _mine_bits(0.8)  # 1.474 bits
    assert abs(est - true_mi_bits(2, 0.8)) <= 0.25 * true_mi_bits(2, 0.8), est


def test_mine_monotone_in_rho_and_near_zero_when_independent():
    ests = [_mine_bits(r) for r in RHOS]
    assert all(b > a for a, b in zip(ests, ests[1:])), ests
    indep = _mine_bits(0.0)
    assert abs(indep) < 0.1, indep
    assert ests[-1] > 2.5  # 3.36 bits true: a collapsed estimator would stay near 0


def test_mine_shuffle_marginal_and_result_fields():
    x, t = correlated_gaussians(3000, 2, 0.8, seed=3)
    s = dataclasses.replace(SMALL_MINE, iterations=250, marginal="shuffle", smoothing=50)
    res = mine(x, t, s)
    assert res.curve.shape == (250,) and res.curve.dtype == np.float64
    assert res.mi_bits == pytest.approx(smoothed_estimate(res.curve, 50))
    assert res.mi_bits == pytest.approx(true_mi_bits(2, 0.8), rel=0.25)
    assert res.seconds > 0


def test_mine_repeats_with_seed_and_uses_one_hot_labels():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (600,), generator=g)
    feats = one_hot(y, 4) * 2 + 0.1 * torch.randn(600, 4, generator=g)
    s = dataclasses.replace(SMALL_MINE, iterations=30, batch_size=128, smoothing=10)
    a, b = mine(feats, one_hot(y, 4), s), mine(feats, one_hot(y, 4), s)
    np.testing.assert_array_equal(a.curve, b.curve)
    c = mine(feats, one_hot(y, 4), dataclasses.replace(s, seed=1))
    assert not np.array_equal(a.curve, c.curve)


def test_dv_bound_with_optimal_critic_and_mutations():
    d, rho, n = 2, 0.5, 40_000
    x, t = correlated_gaussians(n, d, rho, seed=5, dtype=torch.float64)
    t_shuf = t[torch.randperm(n, generator=torch.Generator().manual_seed(1))]

    def pmi(a, b):  # log p(a, b) / (p(a) p(b)), nats, summed over coordinates
        q = 1.0 - rho ** 2
        return (-0.5 * math.log(q) - (rho ** 2 * a ** 2 - 2 * rho * a * b + rho ** 2 * b ** 2) / (2 * q)).sum(1)

    tj, tm = pmi(x, t), pmi(x, t_shuf)
    truth = -d / 2 * math.log(1 - rho ** 2)  # 0.575 nats
    good = float(dv_bound(tj, tm))
    assert good == pytest.approx(truth, abs=0.03)
    assert float(dv_bound(tj + 5.0, tm + 5.0)) == pytest.approx(good, abs=1e-9)  # DV is shift invariant
    assert float(dv_bound(tm, tj)) < truth - 0.3  # joint and marginal swapped
    assert float(tj.mean() - tm.mean()) > truth + 0.2  # log-mean-exp dropped (no log E_Q[e^T] term)
    with pytest.raises(ValueError, match="non-empty"):
        dv_bound(tj[:0], tm)


def test_mine_step_loss_gives_the_bias_corrected_gradient():
    g = torch.Generator().manual_seed(2)
    tj = torch.randn(64, 1, generator=g, dtype=torch.float64, requires_grad=True)
    tm = torch.randn(64, 1, generator=g, dtype=torch.float64, requires_grad=True)
    ma, rate = 2.0, 0.01
    loss, bound, log_ma = mine_step_loss(tj, tm, torch.tensor(math.log(ma), dtype=torch.float64), rate)
    new_ma = (1 - rate) * ma + rate * float(tm.detach().exp().mean())
    assert float(log_ma.exp()) == pytest.approx(new_ma, rel=1e-12)
    assert float(bound.detach()) == pytest.approx(float(dv_bound(tj.detach(), tm.detach())), rel=1e-12)
    loss.backward()
    np.testing.assert_allclose(tj.grad.numpy(), -np.ones((64, 1)) / 64, rtol=1e-12)
    np.testing.assert_allclose(tm.grad.numpy(), tm.detach().exp().numpy() / (64 * new_ma), rtol=1e-10)
    # the plain (biased) DV gradient would divide by the batch mean instead of the moving average
    biased = tm.detach().exp().numpy() / (64 * float(tm.detach().exp().mean()))
    assert not np.allclose(tm.grad.numpy(), biased, rtol=1e-3)


def test_mine_with_small_batches_needs_the_bias_correction():
    # End to end, on a known answer: rho = 0.95 in 2 dimensions (3.36 bits) with 16 pairs per batch. The plain DV
    # gradient differentiates log of the *batch* mean of e^T, which is biased for small batches; the critic it
    # trains makes the batch DV bound overshoot by about 2-5 bits (measured: 5.3 and 5.6 bits for seeds 0 and 1),
    # whereas the moving-average correction keeps the estimate near the truth (3.1 and 3.5 bits). At batch 256
    # (SMALL_MINE) the two agree within 0.05 bits, which is why the tests above cannot tell them apart.
    truth = true_mi_bits(2, 0.95)
    ests = []
    for seed in (0, 1):
        x, t = correlated_gaussians(5000, 2, 0.95, seed=11 + seed)
        ests.append(mine(x, t, dataclasses.replace(SMALL_MINE, batch_size=16, seed=seed)).mi_bits)
    assert abs(np.mean(ests) - truth) < 0.6, (ests, truth)


def test_smoothed_estimate_matches_paper_moving_average():
    a = np.random.default_rng(0).normal(size=700)
    ma = [np.mean(a[i:i + 500]) for i in range(0, len(a) - 500)]  # the paper code's ma()
    assert smoothed_estimate(a, 500) == pytest.approx(ma[-1])
    assert smoothed_estimate(a[:300], 500) == pytest.approx(a[:300].mean())
    with pytest.raises(ValueError, match="empty"):
        smoothed_estimate(np.array([]), 5)


def test_mine_settings_network_and_errors():
    assert (PAPER_MINE_XT.lr, PAPER_MINE_XT.iterations, PAPER_MINE_XT.hidden, PAPER_MINE_XT.layers) == (8e-5, 10_000, 1024, 3)
    assert (PAPER_MINE_TY.lr, PAPER_MINE_TY.iterations, PAPER_MINE_TY.batch_size) == (1e-5, 20_000, 5000)
    assert (PAPER_MINE_XT.ema_rate, PAPER_MINE_XT.smoothing) == (0.01, 500)
    net = statistics_network(10, hidden=16, layers=3)
    assert sum(isinstance(m, torch.nn.Linear) for m in net.modules()) == 4
    assert net(torch.zeros(5, 10)).shape == (5, 1)
    with pytest.raises(ValueError, match="marginal"):
        MineSettings(marginal="perm")
    with pytest.raises(ValueError, match="batch_size"):
        mine(torch.zeros(10, 2), torch.zeros(10, 2), MineSettings(batch_size=11))
    with pytest.raises(ValueError, match="same number"):
        mine(torch.zeros(10, 2), torch.zeros(9, 2), MineSettings(batch_size=5))
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        one_hot(torch.tensor([0, 3]), 3)
    assert one_hot(torch.tensor([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]


# ---------------------------------------------------------------------------------------------------- Renyi
def test_renyi_entropy_closed_forms_and_trace_normalisation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 3, generator=g, dtype=torch.float64)
    k = gaussian_gram(x, 1.0)
    a = k / k.trace()
    assert renyi_entropy(k, 2.0) == pytest.approx(-math.log2(float((a * a).sum())), abs=1e-9)  # tr(A^2)
    lam = torch.linalg.eigvalsh(a).clamp_min(0)
    lam = lam[lam > 0]
    assert renyi_entropy(k, 1.0) == pytest.approx(float(-(lam * lam.log2()).sum()), abs=1e-9)
    s = renyi_entropy(k)
    assert 0 < s < math.log2(60)
    assert renyi_entropy(7.0 * k) == pytest.approx(s, abs=1e-9)  # unit trace makes the scale irrelevant
    # mutation: eigenvalues of K itself (no unit-trace normalisation) give a very different number
    lam_k = torch.linalg.eigvalsh(k).clamp_min(0)
    wrong = float(torch.log2((lam_k ** 1.01).sum()) / (1 - 1.01))
    assert abs(wrong - s) > 1.0


def test_renyi_entropy_identical_and_far_apart_points():
    same = torch.full((40, 3), 2.5)
    assert abs(renyi_entropy(gaussian_gram(same, kernel_width(same)))) < 1e-9
    far = torch.arange(40, dtype=torch.float64)[:, None] * 100.0
    assert renyi_entropy(gaussian_gram(far, 1.0)) == pytest.approx(math.log2(40), abs=1e-6)


def test_kernel_width_rule():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 3, generator=g, dtype=torch.float64)
    med = float(torch.pdist(x).median())
    assert kernel_width(x) == pytest.approx(med * 200 ** (-1 / 7), rel=1e-9)
    assert kernel_width(3 * x + 1) == pytest.approx(3 * kernel_width(x), rel=1e-9)
    q = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))[0]
    assert kernel_width(x @ q) == pytest.approx(kernel_width(x), rel=1e-9)


def test_renyi_self_information_equals_entropy():
    y = torch.arange(300) % 5
    ly = label_gram(y)
    s = renyi_entropy(ly)
    assert s == pytest.approx(math.log2(5), abs=1e-6)  # balanced classes: 5 equal eigenvalues
    assert 2 * s - renyi_joint_entropy(ly, ly) == pytest.approx(s, abs=1e-6)  # I(Y;Y) = S(Y), delta kernel
    # Gaussian kernels: K o K != K, so I(X;X) = 2 S(K) - S(K o K) <= S(X) (Giraldo et al.'s S(A o B) >= S(A))
    x, _ = correlated_gaussians(300, 3, 0.0, seed=4, dtype=torch.float64)
    sx = renyi_entropy(gaussian_gram(x, kernel_width(x)))
    assert renyi_mutual_information(x, x) <= sx + 1e-9


def test_renyi_invariant_to_affine_maps_and_rotations():
    x, t = correlated_gaussians(300, 3, 0.7, seed=6, dtype=torch.float64)
    base = renyi_mutual_information(x, t)
    q = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    assert renyi_mutual_information(x, 3 * t + 1) == pytest.approx(base, abs=1e-6)
    assert renyi_mutual_information(x, t @ q) == pytest.approx(base, abs=1e-6)
    assert renyi_mutual_information(-2 * x + 4, t @ q) == pytest.approx(base, abs=1e-6)


@functools.lru_cache(maxsize=None)
def _renyi_curve(d: int, n: int = 400) -> tuple[float, ...]:
    return tuple(renyi_mutual_information(*correlated_gaussians(n, d, r, seed=0, dtype=torch.float64))
                 for r in (0.0,) + RHOS)


@pytest.mark.parametrize("d", [2, 5])
def test_renyi_monotone_in_rho(d):
    curve = _renyi_curve(d)
    assert all(b > a for a, b in zip(curve, curve[1:])), curve


def test_renyi_independent_variables():
    indep, strong = _renyi_curve(2)[0], _renyi_curve(2)[-1]
    # with the default width rule the estimate has a positive floor (about 1.1 bits here, n=400, d=2) ...
    assert indep < 0.5 * strong
    # ... which shrinks with wider kernels: two median distances
    x, t = correlated_gaussians(400, 2, 0.0, seed=0, dtype=torch.float64)
    xs, ts = correlated_gaussians(400, 2, 0.95, seed=0, dtype=torch.float64)

    def wide(a, b):
        return renyi_mutual_information(a, b, sigma_x=2 * float(torch.pdist(a).median()),
                                        sigma_t=2 * float(torch.pdist(b).median()))
    assert wide(x, t) < 0.05 and wide(x, t) < 0.1 * wide(xs, ts)


@pytest.mark.parametrize("d", [3, 4])
def test_renyi_data_processing_on_a_deterministic_chain(d):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(400, d, generator=g, dtype=torch.float64)
    t1 = torch.tanh(x @ torch.randn(d, d, generator=g, dtype=torch.float64))  # invertible f
    i1 = renyi_mutual_information(x, t1)
    tol = 0.01
    assert renyi_mutual_information(x, t1[:, :d - 1]) <= i1 + tol  # drop one coordinate
    assert renyi_mutual_information(x, t1[:, :1]) <= renyi_mutual_information(x, t1[:, :d - 1]) + tol
    assert renyi_mutual_information(x, torch.sign(t1)) <= i1 + tol  # coarse quantisation


def test_renyi_with_labels():
    k, n = 4, 400
    g = torch.Generator().manual_seed(3)
    y = torch.arange(n) % k
    feats = 10 * torch.randn(k, 2, generator=g, dtype=torch.float64)[y] + 0.1 * torch.randn(n, 2, generator=g,
                                                                                              dtype=torch.float64)
    assert renyi_mutual_information(feats, y, t_is_labels=True) == pytest.approx(math.log2(k), rel=0.05)
    y_rand = y[torch.randperm(n, generator=g)]
    assert renyi_mutual_information(feats, y_rand, t_is_labels=True) < 0.05 * math.log2(k)


def test_renyi_input_errors():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="alpha"):
        renyi_entropy(gaussian_gram(x, 1.0), alpha=0.0)
    with pytest.raises(ValueError, match="square"):
        renyi_entropy(torch.ones(3, 4))
    with pytest.raises(ValueError, match="sigma"):
        gaussian_gram(x, -1.0)
    with pytest.raises(ValueError, match="same number"):
        renyi_mutual_information(x, torch.randn(9, 2))
    with pytest.raises(ValueError, match="same shape"):
        renyi_joint_entropy(torch.eye(3), torch.eye(4))
    with pytest.raises(ValueError, match="labels"):
        renyi_mutual_information(x, torch.randn(10), t_is_labels=True)
