"""Linear learning-rate warm-up (``TrainConfig.warmup_epochs``, torchvision's ``--lr-warmup-epochs``): the
schedule's values at known steps, the hash of configs without warm-up, the checks, and the engine's use of it.

Mistakes this catches (each put in by hand once): warm-up starting at 0 instead of lr / W (step 0 is 0), the cosine
still running over all the steps after the warm-up (step W is below 1 and the end is not 0), ``warmup_epochs`` 0
written into the config dict (every earlier run's hash changes), the engine ignoring warm-up (the first epoch's
learning rates differ)."""
from __future__ import annotations

import math

import pytest
import torch

from ctcbook.config import TrainConfig
from ctcbook.runs import RunStore, config_hash
from ctcbook.train import lr_factor, train

SPE = 5  # steps per epoch


def test_cosine_with_warmup_values():
    c = TrainConfig(epochs=10, warmup_epochs=2)  # W = 10 warm-up steps, then cosine over 40
    assert lr_factor(c, 0, SPE) == pytest.approx(0.1)  # lr / W at the first step
    assert lr_factor(c, 4, SPE) == pytest.approx(0.5)
    assert lr_factor(c, 9, SPE) == pytest.approx(1.0)  # lr at the last warm-up step
    assert lr_factor(c, 10, SPE) == pytest.approx(1.0)  # the cosine starts at 1 ...
    assert lr_factor(c, 30, SPE) == pytest.approx(0.5)  # ... is at 1/2 halfway through its 40 steps ...
    assert lr_factor(c, 50, SPE) == pytest.approx(0.0, abs=1e-12)  # ... and 0 at the end
    plain = c.replace(warmup_epochs=0)
    assert [lr_factor(plain, s, SPE) for s in (0, 25)] == pytest.approx([1.0, 0.5])  # unchanged without warm-up


def test_two_stage_and_step_with_warmup():
    c = TrainConfig(epochs=10, warmup_epochs=1, schedule="two_stage", stages={"stage_two_epoch": 6})
    assert [lr_factor(c, s, SPE) for s in (0, 2, 4)] == pytest.approx([0.2, 0.6, 1.0])
    assert lr_factor(c, 5, SPE) == pytest.approx(1.0)
    assert lr_factor(c, 5 + 25 // 2, SPE) == pytest.approx(0.5 * (1 + math.cos(math.pi * 12 / 25)))
    assert lr_factor(c, 30, SPE) == pytest.approx(0.1)  # stage 2 restarts at lr_restart, as without warm-up
    s = TrainConfig(epochs=10, warmup_epochs=1, schedule="step", milestones=(5,), gamma=0.1)
    assert [lr_factor(s, k, SPE) for k in (0, 4, 5, 24, 25)] == pytest.approx([0.2, 1.0, 1.0, 1.0, 0.1])


def test_hash_unchanged_and_checks():
    old = TrainConfig()
    assert "warmup_epochs" not in old.to_dict()
    assert config_hash(old.replace(warmup_epochs=0).to_dict()) == config_hash(old.to_dict())
    warm = old.replace(warmup_epochs=1)
    assert warm.to_dict()["warmup_epochs"] == 1 and TrainConfig.from_dict(warm.to_dict()) == warm
    assert config_hash(warm.to_dict()) != config_hash(old.to_dict())
    with pytest.raises(ValueError, match=r"warmup_epochs must be an integer >= 0 and below epochs.*got 30"):
        TrainConfig(epochs=30, warmup_epochs=30)
    with pytest.raises(ValueError, match=r"warmup_epochs must be .*below stages.stage_two_epoch.*got 5"):
        TrainConfig(epochs=30, warmup_epochs=5, schedule="two_stage", stages={"stage_two_epoch": 5})
    with pytest.raises(ValueError, match=r"warmup_epochs must be .*got -1"):
        TrainConfig(warmup_epochs=-1)


def test_engine_follows_the_warmup(tmp_path):
    """The engine's optimiser steps follow lr_factor: recorded per step on a tiny digits run."""
    config = TrainConfig(source="digits", source_classes=None, train_size=256, depth=8, width=4, epochs=2,
                         batch_size=64, lr=0.05, warmup_epochs=1, seed=0)
    seen = []
    step = torch.optim.SGD.step

    def record(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    torch.optim.SGD.step = record
    try:
        run = train(config, store=RunStore(tmp_path / "runs"), progress=False, device="cpu")
    finally:
        torch.optim.SGD.step = step
    spe = len(seen) // 2
    assert spe >= 2 and seen == pytest.approx([0.05 * lr_factor(config, s, spe) for s in range(2 * spe)])
    assert seen[0] == pytest.approx(0.05 / spe) and run.metrics()[0]["lr"] == pytest.approx(0.05)


def _public_cosine(epoch, epochs, warm, floor):
    """The public train_vanilla.py rate (helper/util.py, adjust_learning_rate_cosine), as a multiplier of lr."""
    if epoch <= warm:
        return epoch / warm
    return floor + (1 - floor) * 0.5 * (1 + math.cos(epoch / (epochs + 1) * math.pi))


def _public_decouple(epoch, switch, epochs, warm, decay):
    """The public CTC rate (adjust_learning_rate_decouple) with stage_two_epochs = epochs - switch."""
    if epoch <= switch:
        return epoch / warm if epoch <= warm else 0.5 * (1 + math.cos(epoch * math.pi / (switch + 1)))
    e = epoch - switch
    return decay * (e / warm if e <= warm else 0.5 * (1 + math.cos(e * math.pi / (epochs - switch + 1))))


def test_paper_schedules_follow_the_public_formulas_per_epoch():
    from ctcbook.chapters.ch3_ctc import ctc_config

    c = TrainConfig(epochs=200, schedule="paper_cosine", warmup_epochs=5, lr_floor=0.1)
    for epoch in (1, 3, 5, 6, 100, 199, 200):
        want = _public_cosine(epoch, 200, 5, 0.1)
        assert [lr_factor(c, (epoch - 1) * SPE + k, SPE) for k in range(SPE)] == pytest.approx([want] * SPE)
    assert lr_factor(c, 0, SPE) == pytest.approx(0.2) and lr_factor(c, 199 * SPE, SPE) > 0.1  # the floor holds
    ctc = ctc_config(c.replace(epochs=300), stage_two_epoch=200, weight_decay_coef=1.0, lr_restart=0.3, alpha=1.0,
                     beta=1.0)
    assert ctc.schedule == "paper_two_stage" and ctc.lr_floor == 0.0
    for epoch in (1, 5, 6, 150, 200, 201, 203, 205, 206, 250, 300):
        assert lr_factor(ctc, (epoch - 1) * SPE, SPE) == pytest.approx(_public_decouple(epoch, 200, 300, 5, 0.3))


def test_lr_floor_is_left_out_of_old_hashes_and_refused_off_the_paper_schedule():
    assert "lr_floor" not in TrainConfig().to_dict()
    assert TrainConfig(schedule="paper_cosine", lr_floor=0.1).to_dict()["lr_floor"] == 0.1
    with pytest.raises(ValueError, match="lr_floor"):
        TrainConfig(lr_floor=0.1)
    with pytest.raises(ValueError, match="lr_floor"):
        TrainConfig(schedule="paper_cosine", lr_floor=1.0)
