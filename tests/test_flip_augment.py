"""augment="flip": horizontal flips only, no crop (a milder augmentation, a fit-search candidate)."""
import torch

from ctcbook.config import TrainConfig
from ctcbook.data.loader import DeviceBatches


def test_flip_only_flips_and_never_shifts():
    images = torch.randint(0, 256, (64, 1, 6, 6), dtype=torch.uint8)
    batches = DeviceBatches(images, torch.zeros(64, dtype=torch.long), batch_size=64, device="cpu", augment="flip",
                            crop_padding=2, seed=0)
    x, _, idx = next(iter(batches.epoch(1)))
    orig = images[idx].float() / 255
    same = (x == orig).flatten(1).all(1)
    flipped = (x == orig.flip(-1)).flatten(1).all(1)
    assert bool((same | flipped).all())            # every image is itself or its mirror image: no crop shift
    assert 10 < int(flipped.sum()) < 54 and 10 < int(same.sum()) < 54
    assert TrainConfig(augment="flip").augment == "flip"
