"""The contrastive losses of CTC against direct computations on small tensors."""
import math

import pytest
import torch
import torch.nn.functional as F

from ctcbook.losses import (info_nce, instance_discrimination_loss, log_normaliser, momentum_update, nce_loss,
                            pair_scores)


def direct_info_nce(logits, positive):
    """-log(exp(l_pos) / sum exp(l)) term by term, in float64."""
    logits = logits.double()
    terms = [-math.log(math.exp(row[p]) / sum(math.exp(v) for v in row))
             for row, p in zip(logits.tolist(), positive.tolist())]
    return sum(terms) / len(terms)


def test_info_nce_matches_the_direct_formula_for_any_number_of_negatives():
    gen = torch.Generator().manual_seed(0)
    for m in (1, 2, 7, 50):
        logits = torch.randn(5, m, generator=gen) * 3
        positive = torch.randint(0, m, (5,), generator=gen)
        assert info_nce(logits, positive).item() == pytest.approx(direct_info_nce(logits, positive), rel=1e-5,
                                                                  abs=1e-6)


def test_info_nce_stays_finite_for_huge_logits():
    logits = torch.tensor([[1000.0, 999.0, -1000.0], [5000.0, 5000.0, 5000.0]])
    loss = info_nce(logits, torch.tensor([0, 2]))
    # Row 1: log(1 + e^-1 + e^-2000) ~ log(1 + e^-1); row 2: log 3.
    expected = (math.log(1 + math.exp(-1)) + math.log(3)) / 2
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(expected, rel=1e-5)  # float32 at 5e3
    naive = -torch.log(torch.exp(logits[:, :1]) / torch.exp(logits).sum(1, keepdim=True)).mean()
    assert not math.isfinite(naive.item())  # the direct form overflows: the test does exercise stability


def test_info_nce_rejects_bad_shapes():
    with pytest.raises(ValueError, match="info_nce needs logits"):
        info_nce(torch.zeros(3), torch.zeros(3, dtype=torch.long))


def test_instance_loss_falls_when_the_positive_moves_closer():
    gen = torch.Generator().manual_seed(1)
    memory = F.normalize(torch.randn(20, 8, generator=gen), dim=1)
    index = torch.tensor([3, 7, 11])
    z_far = F.normalize(torch.randn(3, 8, generator=gen), dim=1)
    losses = []
    for t in (0.0, 0.3, 0.6, 0.9):
        z = F.normalize((1 - t) * z_far + t * memory[index], dim=1)
        losses.append(instance_discrimination_loss(z, memory, index, temperature=0.1).item())
    assert losses == sorted(losses, reverse=True) and losses[0] - losses[-1] > 1.0
    # It is CE(z M^T / tau, index): the N-way InfoNCE with every other slot as a negative.
    z = z_far
    assert instance_discrimination_loss(z, memory, index, 0.1).item() == pytest.approx(
        F.cross_entropy(z @ memory.t() / 0.1, index).item(), rel=1e-6)


def test_nce_loss_matches_crd_formula_and_falls_with_closer_positives():
    gen = torch.Generator().manual_seed(2)
    n_data, k = 100, 6
    scores = torch.randn(4, 1 + k, generator=gen)
    log_z = torch.tensor(2.3)
    p = torch.exp(scores.double() - 2.3)
    noise = k / n_data
    direct = -(torch.log(p[:, 0] / (p[:, 0] + noise)) + torch.log(noise / (p[:, 1:] + noise)).sum(1)).mean()
    assert nce_loss(scores, log_z, n_data).item() == pytest.approx(direct.item(), rel=1e-5)
    closer = scores.clone()
    closer[:, 0] += 2.0
    assert nce_loss(closer, log_z, n_data) < nce_loss(scores, log_z, n_data)
    huge = torch.full((2, 1 + k), 1e4)
    assert torch.isfinite(nce_loss(huge, log_z, n_data))


def test_log_normaliser_is_log_of_n_times_mean_exp_without_overflow():
    scores = torch.randn(3, 5)
    assert log_normaliser(scores, 40).item() == pytest.approx(math.log(40 * scores.exp().mean().item()), rel=1e-5)
    assert math.isfinite(log_normaliser(torch.full((3, 5), 2000.0), 40).item())


def test_pair_scores_equal_gathering_the_keys_first():
    gen = torch.Generator().manual_seed(3)
    memory, anchor = torch.randn(30, 4, generator=gen), torch.randn(5, 4, generator=gen)
    candidates = torch.randint(0, 30, (5, 9), generator=gen)
    keys = memory[candidates]  # (5, 9, 4)
    expected = torch.einsum("bkd,bd->bk", keys, anchor) / 0.2
    assert torch.allclose(pair_scores(anchor, memory, candidates, 0.2), expected, atol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        pair_scores(anchor, memory, candidates, 0.0)


def test_momentum_update_keeps_unit_norm_and_moves_toward_the_feature():
    gen = torch.Generator().manual_seed(4)
    memory = F.normalize(torch.randn(10, 6, generator=gen), dim=1)
    before = memory.clone()
    index = torch.tensor([1, 4, 8])
    z = F.normalize(torch.randn(3, 6, generator=gen), dim=1)
    momentum_update(memory, index, z, 0.9)
    assert torch.allclose(memory.norm(dim=1), torch.ones(10), atol=1e-6)
    cos_before = (before[index] * z).sum(1)
    cos_after = (memory[index] * z).sum(1)
    assert torch.all(cos_after > cos_before)
    expected = F.normalize(0.9 * before[index] + 0.1 * z, dim=1)
    assert torch.allclose(memory[index], expected, atol=1e-6)
    untouched = [i for i in range(10) if i not in index.tolist()]
    assert torch.equal(memory[untouched], before[untouched])
    momentum_update(memory, index, z, 0.0)  # momentum 0 overwrites (the refill)
    assert torch.allclose(memory[index], z, atol=1e-6)
    with pytest.raises(ValueError, match="momentum"):
        momentum_update(memory, index, z, 1.5)
