"""End-to-end fusion training: the recipe's pieces on fixed examples, exact resume, reuse."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ctcbook.fusion_train as ft
from ctcbook.config import FusionTrainConfig
from ctcbook import distributed
from ctcbook.fusion_train import FusionTask, load_fusion_net, mixup_draw, smoothed_targets, soft_cross_entropy
from ctcbook.train import lr_factor, train
from ctcbook.runs import RunStore

HEAD = {"meta_width": 8, "embed_dim": 8, "reduced_dim": 8, "hidden_dim": 4, "num_blocks": 2}
TINY = FusionTrainConfig(train_size=200, test_size=100, width=4, depth=8, epochs=3, warmup_epochs=1, batch_size=50, head=HEAD,
                         seed=1, metadata={"seed": 0, "interaction": 0.5, "groups": [[0, 2, 4, 6]],
                                           "missing_fraction": 0.1, "draw_seed": 0})


def test_label_smoothing_is_the_public_codes_formula():
    t = smoothed_targets(torch.tensor([2, 0]), 5, 0.1)
    expected = torch.tensor([[0.025, 0.025, 0.9, 0.025, 0.025], [0.9, 0.025, 0.025, 0.025, 0.025]])
    torch.testing.assert_close(t, expected)
    logits = torch.tensor([[1.0, 2.0, 3.0, 0.0, -1.0]])
    by_hand = -(0.9 * F.log_softmax(logits, 1)[0, 2] + 0.025 * F.log_softmax(logits, 1)[0, [0, 1, 3, 4]].sum())
    torch.testing.assert_close(soft_cross_entropy(logits, smoothed_targets(torch.tensor([2]), 5, 0.1)), by_hand)
    # torch's own label_smoothing spreads eps / K over all classes: a different number.
    assert not torch.isclose(F.cross_entropy(logits, torch.tensor([2]), label_smoothing=0.1), by_hand)


def test_mixup_draws_a_beta_lambda_and_a_permutation():
    lam, perm = mixup_draw(4, 0.4, np.random.default_rng(3))
    assert 0 < lam < 1 and sorted(perm.tolist()) == [0, 1, 2, 3]
    # The lambdas follow Beta(0.4, 0.4): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 0.1389.
    rng = np.random.default_rng(0)
    lams = np.array([mixup_draw(4, 0.4, rng)[0] for _ in range(3000)])
    assert abs(lams.mean() - 0.5) < 0.03 and abs(lams.var() - 0.25 / 1.8) < 0.01
    lam, perm = mixup_draw(4, 0.0, rng)
    assert lam == 1.0 and perm.tolist() == [0, 1, 2, 3]


def test_warmup_then_cosine():
    f = [lr_factor(FusionTrainConfig(epochs=5, warmup_epochs=1), s, 10) for s in range(50)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[30] == pytest.approx(0.5) and f[49] < 0.01
    assert all(a >= b for a, b in zip(f[9:], f[10:]))


def test_images_in_memory_need_no_decoding_workers():
    assert FusionTask(TINY, distributed.SINGLE, torch.device("cpu"), False, None, 50).workers == 0


def test_bad_config_values_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="FusionTrainConfig.method"):
        FusionTrainConfig(method="geo_prior")
    with pytest.raises(ValueError, match="warmup_epochs"):
        FusionTrainConfig(epochs=2, warmup_epochs=2)
    with pytest.raises(ValueError, match="weights"):
        FusionTrainConfig(weights=str(tmp_path / "none.pt"))
    with pytest.raises(ValueError, match="metadata has unknown keys"):
        FusionTrainConfig(metadata={"interaction": 0.1, "spread": 3})


def test_interrupted_run_resumes_exactly(tmp_path):
    full = train(TINY, store=RunStore(tmp_path / "a"), progress=False)
    assert full.done and full.saved_epochs() == [1, 2, 3]
    assert all(0 <= r["test_acc"] <= 1 for r in full.metrics())

    def stop_after_first(epoch, model, run):
        if epoch == 1:
            raise KeyboardInterrupt

    store = RunStore(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        train(TINY, store=store, progress=False, on_epoch_end=stop_after_first)
    partial = store.open(TINY.to_dict(), prefix=TINY.run_prefix)
    assert not partial.done and partial.saved_epochs() == [1]
    partial.append_metrics({"epoch": 2, "test_acc": -1.0})      # a crash between the log and the state save
    resumed = train(TINY, store=store, progress=False)
    a, b = full.load_checkpoint(3), resumed.load_checkpoint(3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["test_acc"] for r in full.metrics()] == [r["test_acc"] for r in resumed.metrics()]
    # A finished run is reused, not retrained.
    assert train(TINY, store=store, progress=False, on_epoch_end=lambda *a: 1 / 0).path == resumed.path
    model = load_fusion_net(resumed)
    assert model.head.__class__.__name__ == "DynamicMLPHead"


def test_training_uses_the_metadata(tmp_path):
    """Guards against a loop that drops m (e.g. feeds zeros): shuffling the test metadata must change the output."""
    run = train(TINY.replace(epochs=2), store=RunStore(tmp_path), progress=False)
    model = load_fusion_net(run)
    _, test, classes = ft.fusion_splits(TINY)
    x = test.images[:64].float() / 255
    with torch.no_grad():
        a = model(x, test.meta[:64])[1]
        b = model(x, test.meta[:64].roll(1, 0))[1]
    assert (a - b).abs().max() > 1e-3
    assert all(np.isfinite(r["train_loss"]) for r in run.metrics()) and len(test) == 100


def test_mlp_concat_matches_dynamic_mlp_c_parameters():
    from ctcbook.models.fusion import count_parameters

    cfg = TINY.replace(head={**HEAD, "embed_dim": 16, "reduced_dim": 16})
    nets = {m: ft.build_fusion_net(cfg.replace(method=m), 10, 1, [0.5], [0.25]) for m in ("dynamic_mlp_c",
                                                                                          "mlp_concat")}
    c, mlp = (count_parameters(nets[m].head) for m in ("dynamic_mlp_c", "mlp_concat"))
    per_unit = 16 + 16 + 3 + 10          # one hidden unit of the MLP: (C + embed) weights, bias, LayerNorm, K
    assert abs(c - mlp) <= per_unit / 2
