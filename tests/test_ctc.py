"""CTC through the one training engine: config and hashes, schedule, gradients, snapshot, memories, exact resume."""
import pytest
import torch

from ctcbook.chapters import ch3_ctc as ctc_report
from ctcbook.config import CTCConfig, StageSchedule, TrainConfig
from ctcbook.ctc_objective import CTCObjective, OtherClassSampler
from ctcbook.models import build_model
from ctcbook.runs import RunStore, config_hash
from ctcbook.train import lr_factor, train, weight_decay_at

STAGES = StageSchedule(stage_two_epoch=2)
CTC = TrainConfig(train_size=200, epochs=4, width=4, depth=8, batch_size=50, seed=3, schedule="two_stage",
                  stages=STAGES, objective="ctc",
                  ctc=CTCConfig(instance_dim=16, nce_dim=16, nce_k=64, alpha=0.5, beta=1.0))


def test_ce_run_names_did_not_change():
    """Adding CTC must not rename chapter 1's runs: the default config's hash is pinned."""
    assert "stages" not in TrainConfig().to_dict() and "ctc" not in TrainConfig().to_dict()
    assert config_hash(TrainConfig().to_dict()) == "116345af7cad"
    assert config_hash(TrainConfig(seed=1).to_dict()) == "837d50ca0e10"
    assert config_hash(TrainConfig(seed=2).to_dict()) == "166e8e6730f3"


def test_ctc_config_round_trips_and_checks_its_fields():
    assert TrainConfig.from_dict(CTC.to_dict()) == CTC
    assert config_hash(CTC.to_dict()) != config_hash(CTC.replace(ctc=CTC.ctc.__class__(alpha=0.1)).to_dict())
    with pytest.raises(ValueError, match="TrainConfig.ctc must be a CTCConfig"):
        TrainConfig(objective="ctc", schedule="two_stage", stages=STAGES)
    with pytest.raises(ValueError, match="TrainConfig.schedule must be one of \\('two_stage', 'paper_two_stage'\\)"):
        TrainConfig(objective="ctc", ctc=CTCConfig())
    with pytest.raises(ValueError, match="stage_two_epoch must be an epoch in 1..3"):
        CTC.replace(stages=StageSchedule(4))
    with pytest.raises(ValueError, match="CTCConfig.nce_t must be a number > 0"):
        CTC.replace(ctc=CTCConfig(nce_t=0))
    with pytest.raises(ValueError, match="unknown TrainConfig.ctc field"):
        TrainConfig.from_dict({**CTC.to_dict(), "ctc": {"gamma": 1}})


def test_two_stage_schedule_restarts_the_learning_rate_and_halves_nothing_else():
    c = CTC.replace(epochs=30, stages=StageSchedule(20, weight_decay_coef=2.0, lr_restart=0.1))
    spe = 10
    assert lr_factor(c, 0, spe) == 1.0
    assert lr_factor(c, 100, spe) == pytest.approx(0.5)  # halfway through stage 1
    assert lr_factor(c, 199, spe) < 1e-3
    assert lr_factor(c, 200, spe) == pytest.approx(0.1)  # restart at 0.1 x lr
    assert lr_factor(c, 250, spe) == pytest.approx(0.05)
    assert weight_decay_at(c, 20) == pytest.approx(2 * c.weight_decay)
    assert weight_decay_at(c, 21) == c.weight_decay
    assert weight_decay_at(TrainConfig(), 1) == TrainConfig().weight_decay


def test_negatives_come_from_other_classes_with_the_anchor_first():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    sampler = OtherClassSampler(labels, k=500)
    index = torch.tensor([0, 4, 8])
    cand = sampler(index, labels[index], torch.Generator().manual_seed(0))
    assert cand.shape == (3, 501) and torch.equal(cand[:, 0], index)
    assert torch.all(labels[cand[:, 1:]] != labels[index][:, None])
    for row, lab in zip(cand, labels[index]):  # every other-class image is drawn
        assert set(row[1:].tolist()) == set((labels != lab).nonzero().flatten().tolist())


def _objective_and_models(seed=0):
    torch.manual_seed(seed)
    model = build_model("cifar_resnet", 3, in_channels=1, mean=[0.5], std=[0.25], depth=8, width=4)
    labels = torch.arange(40) % 3
    obj = CTCObjective(CTCConfig(instance_dim=8, nce_dim=8, nce_k=16), model.feature_dim, labels, 1, seed)
    images = torch.randint(0, 256, (40, 1, 12, 12), dtype=torch.uint8)
    return model, obj, labels, images


def test_stage_two_gradient_reaches_the_backbone_and_never_the_snapshot():
    model, obj, labels, images = _objective_and_models()
    obj.switch(model, images)
    snapshot = obj.snapshot
    assert not snapshot.training and all(not p.requires_grad for p in snapshot.parameters())
    index = torch.tensor([0, 5, 9, 13])
    x = images[index].float() / 255
    features, _ = model(x)
    loss, raw = obj.loss(2, features, x, labels[index], index, obj.generator(2))
    loss.backward()
    assert all(p.grad is None for p in snapshot.parameters())
    backbone = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None for g in backbone) and sum(g.abs().sum() for g in backbone) > 0
    assert obj.head.weight.grad.abs().sum() > 0 and obj.snapshot_head.weight.grad.abs().sum() > 0
    assert obj.instance_head.weight.grad is None  # stage 1's projection is not used in stage 2
    assert torch.isfinite(obj.log_z).all()


def test_stage_one_projection_stays_fixed_unless_asked_and_memories_move_after_backward():
    model, obj, labels, images = _objective_and_models()
    assert obj.instance_head not in set() and all(not p.requires_grad for p in obj.instance_head.parameters())
    assert {id(p) for p in obj.trainable()} == {id(p) for p in [*obj.head.parameters(),
                                                                 *obj.snapshot_head.parameters()]}
    index = torch.tensor([1, 2, 3])
    x = images[index].float() / 255
    before = obj.instance_memory.clone()
    features, _ = model(x)
    loss, _ = obj.loss(1, features, x, labels[index], index, obj.generator(1))
    assert torch.equal(obj.instance_memory, before)  # the gradient is computed with the old memory
    loss.backward()
    obj.update_memories()
    assert not torch.equal(obj.instance_memory[index], before[index])
    assert torch.allclose(obj.instance_memory[index].norm(dim=1), torch.ones(3), atol=1e-6)
    assert torch.equal(obj.instance_memory[10:], before[10:])
    trained = CTCObjective(CTCConfig(instance_dim=8, nce_dim=8, nce_k=16, train_instance_head=True),
                           model.feature_dim, labels, 1, 0)
    assert len(trained.trainable()) == 6


def test_refill_puts_the_snapshot_embeddings_in_both_memories():
    model, obj, labels, images = _objective_and_models()
    obj.switch(model, images)
    with torch.no_grad():
        f, _ = obj.snapshot(images.float() / 255)
    expected = torch.nn.functional.normalize(obj.head(f), dim=1)
    assert torch.allclose(obj.memory, expected, atol=1e-5)
    assert torch.allclose(obj.snapshot_memory, torch.nn.functional.normalize(obj.snapshot_head(f), dim=1), atol=1e-5)


def test_ctc_run_resumed_just_after_the_switch_is_exact(tmp_path):
    full = train(CTC, store=RunStore(tmp_path / "a"), progress=False)
    assert [r["stage"] for r in full.metrics()] == [1, 1, 2, 2]
    assert all(r["aux_loss"] > 0 for r in full.metrics())

    def stop_at_switch(epoch, model, run):
        if epoch == STAGES.stage_two_epoch:
            raise KeyboardInterrupt

    store = RunStore(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        train(CTC, store=store, progress=False, on_epoch_end=stop_at_switch)
    partial = store.open(CTC.to_dict(), prefix=CTC.run_prefix)
    state = partial.load_state()
    assert state["epoch"] == 2 and state["objective"]["snapshot"] is not None
    snap, ckpt = state["objective"]["snapshot"], partial.load_checkpoint(2)
    assert all(torch.equal(snap[k], ckpt[k]) for k in ckpt)  # the snapshot is the network after epoch S
    assert state["optimizer"]["param_groups"][0]["weight_decay"] == pytest.approx(2 * CTC.weight_decay)
    resumed = train(CTC, store=store, progress=False)
    assert resumed.done
    for epoch in (3, 4):
        a, b = full.load_checkpoint(epoch), resumed.load_checkpoint(epoch)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in full.metrics()] == [r["train_loss"] for r in resumed.metrics()]
    sa, sb = full.load_state()["objective"], resumed.load_state()["objective"]
    assert all(torch.equal(sa["module"][k], sb["module"][k]) for k in sa["module"])
    assert all(torch.equal(sa["snapshot"][k], sb["snapshot"][k]) for k in sa["snapshot"])
    assert resumed.load_state()["optimizer"]["param_groups"][0]["weight_decay"] == CTC.weight_decay


def test_zero_weights_reproduce_cross_entropy_with_ctcs_schedule(tmp_path):
    """alpha = beta = 0 runs all of CTC's machinery; it must leave exactly a `ce` run with the two-stage schedule
    (weight decay x coef in stage 1, learning-rate restart in stage 2), not chapter 1's cosine run."""
    zero = CTC.replace(ctc=CTCConfig(instance_dim=16, nce_dim=16, nce_k=64, alpha=0.0, beta=0.0))
    ce = ctc_report.schedule_only(zero)  # the chapter's control is exactly this run
    assert ce == CTC.replace(objective="ce", ctc=None)
    a = train(zero, store=RunStore(tmp_path), progress=False)
    b = train(ce, store=RunStore(tmp_path), progress=False)
    cosine = train(ce.replace(schedule="cosine", stages=None), store=RunStore(tmp_path), progress=False)
    for epoch in range(1, 5):
        wa, wb = a.load_checkpoint(epoch), b.load_checkpoint(epoch)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["test_acc"] for r in a.metrics()] == [r["test_acc"] for r in b.metrics()]
    assert [r["lr"] for r in a.metrics()] == [r["lr"] for r in b.metrics()]
    wc = cosine.load_checkpoint(4)
    assert not all(torch.equal(wc[k], wb[k]) for k in wc)
    # and a non-zero weight does change the network
    w1 = train(CTC, store=RunStore(tmp_path), progress=False).load_checkpoint(4)
    assert not all(torch.equal(w1[k], wb[k]) for k in wb)


def test_ctc_runs_the_gpu_mixed_precision_path_on_cpu(tmp_path):
    """bf16 autocast (the CUDA default) through both stages, the snapshot and the refill: finite losses."""
    run = train(CTC, store=RunStore(tmp_path), progress=False, amp=True)
    rows = run.metrics()
    assert [r["stage"] for r in rows] == [1, 1, 2, 2]
    assert all(torch.isfinite(torch.tensor([r["train_loss"], r["aux_loss"]])).all() for r in rows)
