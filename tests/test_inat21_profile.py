"""The `inat21` end-to-end profile on small real JPEG files in the official archive layout."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ctcbook.book.profiles import E2E_PROFILES, e2e_config
from ctcbook.config import FusionTrainConfig
from ctcbook.fusion_train import build_fusion_net, fusion_splits, load_backbone_weights, load_fusion_net
from ctcbook import train as engine
from ctcbook.models import build_model
from ctcbook.runs import RunStore

CLASSES = ["Poecile atricapillus", "Rosa canina", "Bufo bufo"]


def write_inat21(root, per_class=(6, 2), size=(40, 30), seed=0):
    """train_mini.json / val.json and JPEG files under root (official layout: <split>/<dir>/<uuid>.jpg); every 4th
    image lacks a location or date (null), as in iNat."""
    rng = np.random.default_rng(seed)
    cats = [{"id": k, "name": n, "image_dir_name": f"{k:05d}_{n.replace(' ', '_')}"} for k, n in enumerate(CLASSES)]
    next_id = 0
    for split, n in (("train_mini", per_class[0]), ("val", per_class[1])):
        images, anns = [], []
        for k, cat in enumerate(cats):
            for i in range(n):
                rel = f"{split}/{cat['image_dir_name']}/{next_id:08d}-aaaa-4000-8000-000000000000.jpg"
                arr = np.clip(rng.normal(60 + 70 * k, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(root / rel, quality=90)
                missing = next_id % 4 == 3
                images.append({"id": next_id, "file_name": rel, "width": size[0], "height": size[1],
                               "latitude": None if missing and next_id % 8 == 3 else float(rng.uniform(-60, 60)),
                               "longitude": float(rng.uniform(-180, 180)),
                               "date": None if missing and next_id % 8 == 7 else f"2019-{1 + k * 4:02d}-1{i % 9} "
                                                                                 "10:00:00+00:00"})
                anns.append({"id": next_id, "image_id": next_id, "category_id": k})
                next_id += 1
        (root / f"{split}.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))


TINY_HEAD = {"meta_width": 8, "embed_dim": 8, "reduced_dim": 8, "hidden_dim": 4, "num_blocks": 2}


def test_profile_states_the_public_recipe(monkeypatch, tmp_path):
    p = E2E_PROFILES["inat21"]
    assert (p["epochs"], p["warmup_epochs"], p["batch_size"], p["lr"], p["image_size"]) == (90, 2, 512, 0.04, 224)
    assert (p["momentum"], p["weight_decay"], p["label_smoothing"], p["mixup_alpha"]) == (0.9, 1e-4, 0.1, 0.4)
    assert p["arch"] == "resnet50" and p["method"] == "dynamic_mlp_c" and p["head"]["hidden_dim"] == 64
    monkeypatch.setenv("CTCBOOK_DATA", str(tmp_path))
    assert e2e_config("inat21").inat_root == str(tmp_path / "inat21")
    with pytest.raises(ValueError, match="weights"):
        e2e_config("inat21", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="profile"):
        e2e_config("inat2021")


def test_inat21_profile_trains_one_epoch_on_jpeg_files(monkeypatch, tmp_path):
    write_inat21(tmp_path / "inat21")
    monkeypatch.setenv("CTCBOOK_DATA", str(tmp_path))
    config = e2e_config("inat21", arch="cifar_resnet", width=4, depth=8, stem_stride=2, image_size=16,
                        head=TINY_HEAD, epochs=1, warmup_epochs=0, batch_size=6, crop_padding=2)
    train, test, classes = fusion_splits(config)
    assert list(classes) == CLASSES and len(train) == 18 and len(test) == 6
    missing = ~train.raw.valid
    assert missing.sum() >= 3 and (train.meta[torch.as_tensor(missing)] == 0).all()
    run = engine.train(config, store=RunStore(tmp_path / "runs"), progress=False)
    assert run.done and [r["epoch"] for r in run.metrics()] == [1] and run.saved_epochs() == [1]
    assert all(0 <= r["test_acc"] <= 1 and np.isfinite(r["train_loss"]) for r in run.metrics())
    model = load_fusion_net(run)
    x = torch.rand(2, 3, 16, 16)
    assert model(x, test.meta[:2])[1].shape == (2, 3)


def test_backbone_weights_come_from_a_local_file(tmp_path):
    src = build_model("cifar_resnet", 3, in_channels=3, mean=[0.5] * 3, std=[0.25] * 3, depth=8, width=4)
    state = {**src.backbone.state_dict(), "fc.weight": torch.zeros(3, 16), "fc.bias": torch.zeros(3)}
    torch.save(state, tmp_path / "w.pth")
    config = FusionTrainConfig(arch="cifar_resnet", width=4, depth=8, stem_stride=1, head=TINY_HEAD,
                               weights=str(tmp_path / "w.pth"), method="image_only")
    net = build_fusion_net(config, 3, 3, [0.5] * 3, [0.25] * 3)
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(net.backbone.backbone.state_dict()[k], v), k
    other = build_model("cifar_resnet", 3, in_channels=3, mean=[0.5] * 3, std=[0.25] * 3, depth=8, width=8)
    with pytest.raises(ValueError, match="does not fit the backbone"):
        load_backbone_weights(other.backbone, str(tmp_path / "w.pth"))


def test_decoding_workers_give_the_same_batches_as_this_process(tmp_path):
    write_inat21(tmp_path / "inat21")
    config = e2e_config("inat21", inat_root=str(tmp_path / "inat21"), arch="cifar_resnet", width=4, depth=8,
                        image_size=16, head=TINY_HEAD, epochs=1, warmup_epochs=0, batch_size=4, crop_padding=2)
    train, _, _ = fusion_splits(config)
    from ctcbook.distributed import default_workers
    from ctcbook.fusion_train import image_batches
    from fusion_reference import epoch_batches

    index = [torch.tensor([5, 0, 17]), torch.tensor([3]), torch.tensor([9, 8])]
    here = list(image_batches(train, index, 16, workers=0))
    spawned = list(image_batches(train, index, 16, workers=2))
    assert [b.shape for b in here] == [(3, 3, 16, 16), (1, 3, 16, 16), (2, 3, 16, 16)]
    assert all(torch.equal(a, b) for a, b in zip(here, spawned))
    device = torch.device("cpu")
    a = list(epoch_batches(train, config, 1, device, workers=0))
    b = list(epoch_batches(train, config, 1, device, workers=2))
    assert len(a) == len(train) // 4 and all(torch.equal(u, v) for p, q in zip(a, b) for u, v in zip(p, q))
    assert default_workers() >= 1
