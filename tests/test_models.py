import pytest
import torch

from ctcbook.models import CifarResNet, build_model


@pytest.mark.parametrize("depth,width,stride,channels,size", [(8, 4, 2, 1, 28), (20, 8, 1, 3, 32), (14, 4, 1, 1, 28)])
def test_cifar_resnet_returns_features_and_logits(depth, width, stride, channels, size):
    model = build_model("cifar_resnet", 7, in_channels=channels, mean=[0.5] * channels, std=[0.25] * channels,
                        depth=depth, width=width, stem_stride=stride)
    feats, logits = model(torch.rand(5, channels, size, size))
    assert feats.shape == (5, 4 * width) and logits.shape == (5, 7)
    assert torch.allclose(logits, model.head(feats))


def test_block_count_follows_depth():
    assert len(CifarResNet(depth=20, width=4).stages) == 9
    assert len(CifarResNet(depth=8, width=4).stages) == 3


def test_normalisation_lives_in_the_model():
    model = build_model("cifar_resnet", 3, in_channels=1, mean=[0.3], std=[0.2], depth=8, width=4).eval()
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(model.features(x), model.backbone((x - 0.3) / 0.2))


def test_torchvision_resnet18_backbone_for_grey_images():
    model = build_model("resnet18", 10, in_channels=1, mean=[0.5], std=[0.5])
    feats, logits = model(torch.rand(2, 1, 64, 64))
    assert feats.shape == (2, 512) and logits.shape == (2, 10)


@pytest.mark.parametrize("kwargs,name", [({"depth": 9}, "depth"), ({"width": 0}, "width"),
                                         ({"stem_stride": 3}, "stem_stride")])
def test_bad_model_arguments_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        CifarResNet(**kwargs)


def test_unknown_arch_is_refused():
    with pytest.raises(ValueError, match="arch must be one of"):
        build_model("vgg", 10, in_channels=3, mean=[0] * 3, std=[1] * 3)
