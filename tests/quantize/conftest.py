"""Small, really trained models for the quantizer contract suite: a ResNet-like and a MobileNetV2-like CNN
on digits, and a transformer encoder on the synthetic token task of `experiments.tasks.tokens`.

Widths are reduced so that training the three baselines takes seconds; they are cached like any task's.
Torch runs one thread: the suite shares two cores with other work, and more threads only thrash.
"""

from __future__ import annotations

import pytest
import torch

from autocompress.task import SupervisedTask
from experiments.models import MobileNetV2Like, ResNetLike, TransformerEncoderClassifier
from experiments.tasks.digits import load_digits_splits
from experiments.tasks.tokens import CLASSES, SEQ, VOCAB, token_splits

torch.set_num_threads(1)


def small_resnet() -> ResNetLike:
    return ResNetLike(width=8)


def small_mobilenet() -> MobileNetV2Like:
    return MobileNetV2Like(width=8)


def small_transformer() -> TransformerEncoderClassifier:
    return TransformerEncoderClassifier(vocab=VOCAB, dim=32, heads=4, ffn=64, layers=1, classes=CLASSES, max_len=SEQ)


_DIGITS = load_digits_splits()
TASKS = {
    "resnet": SupervisedTask("q-resnet", small_resnet, _DIGITS, train_epochs=8),
    "mobilenet": SupervisedTask("q-mobilenet", small_mobilenet, _DIGITS, train_epochs=8),
    "transformer": SupervisedTask("q-transformer", small_transformer, token_splits(), train_epochs=8),
}


@pytest.fixture(scope="session", params=sorted(TASKS))
def task(request: pytest.FixtureRequest) -> SupervisedTask:
    return TASKS[request.param]
