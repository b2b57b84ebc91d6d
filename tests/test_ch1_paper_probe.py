"""The paper's probe done fairly: every target gets a comparable number of SGD steps."""
import math

import pytest
import torch

from ctcbook.probes import paper_probe, paper_probe_epochs, paper_probe_steps

#: The default profile's: transfer.py's 30 epochs at batch 512 on its largest target (fmnist_5-9, 5,000 images).
PAPER_PROBE_STEPS = 30 * math.ceil(5000 / 512)


def _data(n, d=8, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = torch.randn(n, d, generator=g)
    x[torch.arange(n), y] += 3.0
    return x, y


def test_steps_are_the_same_for_a_900_and_a_5000_image_target_within_one_batch_each():
    assert PAPER_PROBE_STEPS == 300 == paper_probe_steps([5000, 2500, 897])  # the default profile's targets
    assert paper_probe_steps([300, 300]) == 30  # the smoke profile's: transfer.py's 30 epochs on the largest
    steps = {}
    for n in (900, 2500, 5000, 897):
        epochs = paper_probe_epochs(n, 512, PAPER_PROBE_STEPS)
        per_epoch = math.ceil(n / 512)
        steps[n] = epochs * per_epoch
        assert PAPER_PROBE_STEPS <= steps[n] < PAPER_PROBE_STEPS + per_epoch
    assert abs(steps[900] - steps[5000]) <= math.ceil(900 / 512)
    assert paper_probe_epochs(900, 512, PAPER_PROBE_STEPS) == 150 and paper_probe_epochs(5000, 512, 300) == 30
    # transfer.py's fixed 30 epochs give the small target a fifth of the steps
    assert paper_probe_epochs(900, 512) * math.ceil(900 / 512) == 60


def test_paper_probe_takes_the_steps_it_reports():
    x, y = _data(200)
    xt, yt = _data(100, seed=1)
    fixed = paper_probe(x, y, xt, yt, batch_size=64)
    scaled = paper_probe(x, y, xt, yt, batch_size=64, steps=300)
    assert len(fixed.curve) == 30 and fixed.steps == 30 * 4
    assert len(scaled.curve) == 75 and scaled.steps == 300
    with pytest.raises(ValueError, match="steps"):
        paper_probe(x, y, xt, yt, steps=0)
