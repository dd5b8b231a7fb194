"""The experiments' hand-written architectures (one module per family), re-exported here."""

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

__all__ = [
    "BasicBlock",
    "DenseLayer",
    "DenseNetLike",
    "DigitsNet",
    "EncoderLayer",
    "InvertedResidual",
    "MobileNetV2Like",
    "ResNetLike",
    "TransformerEncoderClassifier",
    "conv_bn_relu",
]
