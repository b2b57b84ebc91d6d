"""Models: classifiers returning (features, logits); Dynamic MLP and fusion heads."""
from .resnet import ARCHS, Classifier, CifarResNet, build_model

__all__ = ["ARCHS", "Classifier", "CifarResNet", "build_model"]
