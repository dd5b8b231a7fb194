"""The experiments' hand-written architectures (one module per family) and the factory of torchvision's
(`TorchvisionClassifier`), re-exported here."""

from experiments.models.cnn import (
    BasicBlock,
    DenseLayer,
    DenseNetLike,
    DigitsNet,
    InvertedResidual,
    MobileNetV2Like,
    ResNetLike,
    conv_bn_relu,
)
from experiments.models.transformer import EncoderLayer, TransformerEncoderClassifier
from experiments.models.vision import TorchvisionClassifier

__all__ = [
    "BasicBlock",
    "DenseLayer",
    "DenseNetLike",
    "DigitsNet",
    "EncoderLayer",
    "InvertedResidual",
    "MobileNetV2Like",
    "ResNetLike",
    "TorchvisionClassifier",
    "TransformerEncoderClassifier",
    "conv_bn_relu",
]
