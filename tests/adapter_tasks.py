"""Tasks built with the adapters of `autocompress.tasks` from a user's point of view: a trained model saved as
a checkpoint file and torch DataLoaders over real data (scikit-learn's digits), referenced by import path so a
search and an export's fresh process rebuild them. The checkpoint path comes from ``ADAPTER_CHECKPOINT``.

`TwoHalves` is a real two-input model: the top and the bottom half of each digit go through their own conv
branch, joined before the classifier.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from autocompress.tasks import ClassificationTask, FunctionTask
from experiments.tasks.digits import load_digits_splits

DATA = load_digits_splits(size=16)


class TwoHalves(nn.Module):
    """Classifies a digit from its top and bottom halves (two inputs of shape N x 1 x 8 x 16)."""

    def __init__(self) -> None:
        super().__init__()
        self.top = self._branch()
        self.bottom = self._branch()
        self.head = nn.Linear(2 * 32 * 2 * 4, 10)

    @staticmethod
    def _branch() -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d((2, 4)),
            nn.Flatten(),
        )

    def forward(self, top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.top(top), self.bottom(bottom)], dim=1))


class HalvesAsDicts(Dataset[dict[str, torch.Tensor]]):
    """Hugging Face style examples: the inputs by forward's argument names, the class under ``labels``."""

    def __init__(self, split: str) -> None:
        self.x, self.y = DATA[split]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"top": self.x[i, :, :8], "bottom": self.x[i, :, 8:], "labels": self.y[i]}


def halves_loaders(batch_size: int = 64) -> dict[str, DataLoader[dict[str, torch.Tensor]]]:
    return {
        split: DataLoader(HalvesAsDicts(split), batch_size=batch_size, shuffle=split == "train")
        for split in ("train", "val", "test")
    }


def train_two_halves(path: Path, epochs: int = 8) -> None:
    """The user's own training, before autocompress: plain torch, saved as a state dict."""
    torch.manual_seed(0)
    model = TwoHalves()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = DATA["train"]
    for _ in range(epochs):
        for i in torch.randperm(len(y)).split(64):
            loss = nn.functional.cross_entropy(model(x[i, :, :8], x[i, :, 8:]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.save(model.state_dict(), path)


def two_halves() -> ClassificationTask:
    """A two-input classifier from a factory and a checkpoint file, dict batches."""
    return ClassificationTask(
        TwoHalves, checkpoint=os.environ["ADAPTER_CHECKPOINT"], name="two-halves", **halves_loaders()
    )


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))


def digit_loaders() -> dict[str, DataLoader[tuple[torch.Tensor, ...]]]:
    return {
        split: DataLoader(TensorDataset(*DATA[split]), batch_size=64, shuffle=split == "train")
        for split in ("train", "val", "test")
    }


def _accuracy(model, split: str) -> float:  # type: ignore[no-untyped-def]
    x, y = DATA[split]
    return float((model(x).argmax(dim=1) == y).float().mean())


def _train_loss(model: nn.Module, step: int) -> torch.Tensor:
    x, y = DATA["train"]
    start = step * 64 % len(y)
    return nn.functional.cross_entropy(model(x[start : start + 64]), y[start : start + 64])


def functions() -> FunctionTask:
    """The generic adapter: the same digits classifier judged and trained by plain functions."""
    return FunctionTask(
        mlp,
        checkpoint=os.environ["ADAPTER_CHECKPOINT"],
        evaluate_fn=_accuracy,
        example=DATA["val"][0][:16],
        calibration=[DATA["train"][0][i : i + 128] for i in range(0, 512, 128)],
        train_loss=_train_loss,
        steps_per_epoch=-(-len(DATA["train"][1]) // 64),
        name="functions",
    )


def non_number() -> FunctionTask:
    """A user's mistake: evaluate returns a dict, not a number."""
    task = functions()
    task.evaluate_fn = lambda model, split: {"accuracy": _accuracy(model, split)}  # type: ignore[assignment,return-value]
    return task
