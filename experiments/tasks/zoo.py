"""Every torchvision classification builder as a task: ``experiments.tasks.zoo:resnet18``, ``...:vit_b_16``;
and a set of timm architectures, named with a ``timm_`` prefix: ``experiments.tasks.zoo:timm_convnext_atto``.

For model coverage (experiments/bench_zoo.py), not accuracy: the model is built at random init (seed 0, 10
classes; no weights are downloaded), its inputs are synthetic Gaussian images (3x64x64 unless the architecture
needs more, `INPUT_SIZE`), and `evaluate` is the mean cosine between the model's logits and the float model's
on that split: 1.0 for the baseline, lower as compression changes the function. Fine-tuning distils the
compressed model towards the float model's logits (MSE) on the train split.

torchvision is imported with `autocompress.import_torchvision` (its CUDA build from PyPI beside the CPU torch);
timm after it (timm imports torchvision).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from autocompress import import_torchvision
from autocompress.task import train_minibatches

#: input side where 64 is too small or does not fit the architecture (maxvit partitions its grid by 7,
#: inception_v3 needs >= 75, vit_h_14's patches are 14 wide)
INPUT_SIZE = {"maxvit_t": 224, "inception_v3": 96, "vit_h_14": 56}
#: builder arguments: vision transformers take the input size; aux heads are off (a tensor out, not a tuple)
BUILD_ARGS: dict[str, dict[str, Any]] = {"inception_v3": {"aux_logits": False}, "googlenet": {"aux_logits": False}}
#: timm architectures beyond torchvision's (timm's own builders, random init): families torchvision lacks
#: (GhostNet, RepVGG, DLA, HRNet, MobileViT, FastViT, EdgeNeXt, LeViT, PoolFormer, Swin, MobileNetV4,
#: EfficientViT, HGNetV2, ...) and timm's variants of shared ones (resnet50d, its own EfficientNet)
TIMM_MODELS = (
    "lcnet_050",
    "mobilevit_xxs",
    "edgenext_xx_small",
    "efficientvit_b0",
    "regnetx_002",
    "mobilenetv4_conv_small",
    "mixnet_s",
    "fastvit_t8",
    "convnext_atto",
    "tf_efficientnet_lite0",
    "rexnet_100",
    "ghostnet_100",
    "hgnetv2_b0",
    "efficientnet_b0",
    "mobilenetv3_large_100",
    "vit_tiny_patch16_224",
    "levit_128s",
    "repvgg_a0",
    "hrnet_w18_small",
    "poolformer_s12",
    "dla34",
    "cspresnet50",
    "resnet50d",
    "swin_tiny_patch4_window7_224",
)
TIMM_PREFIX = "timm_"
#: timm builders that take the input size (position embeddings, attention windows)
TIMM_SIZED = ("vit_", "levit_", "swin_")
SPLITS = {"train": 64, "val": 16, "test": 16}
CLASSES = 10


def classification_models() -> list[str]:
    """The names `torchvision.models.list_models(module=torchvision.models)` lists: its classification builders."""
    torchvision = import_torchvision()
    return list(torchvision.models.list_models(module=torchvision.models))


def timm_models() -> list[str]:
    """The timm architectures of `TIMM_MODELS`, as this module names them (``timm_`` + timm's name)."""
    return [TIMM_PREFIX + name for name in TIMM_MODELS]


def input_size(arch: str) -> int:
    return INPUT_SIZE.get(arch, 64)


def build(arch: str) -> nn.Module:
    """The architecture at random init (seed 0), `CLASSES` outputs, sized for `input_size`, its batch-norm
    statistics set from synthetic images (`calibrate_batch_norm`)."""
    torchvision = import_torchvision()
    kwargs = dict(BUILD_ARGS.get(arch, {}))
    side = input_size(arch)
    torch.manual_seed(0)
    if arch.startswith(TIMM_PREFIX):
        import timm

        name = arch.removeprefix(TIMM_PREFIX)
        if name.startswith(TIMM_SIZED):
            kwargs["img_size"] = side
        model = timm.create_model(name, pretrained=False, num_classes=CLASSES, **kwargs)
    else:
        if arch.startswith("vit_"):
            kwargs["image_size"] = side
        model = torchvision.models.get_model(arch, weights=None, num_classes=CLASSES, **kwargs)
    calibrate_batch_norm(model, torch.randn(32, 3, side, side, generator=torch.Generator().manual_seed(2)))
    return model.eval()


def calibrate_batch_norm(model: nn.Module, images: torch.Tensor) -> None:
    """Batch-norm running statistics measured on `images` (one forward in train mode, cumulative average).

    At random init the running statistics are 0 and 1, so activations shrink layer after layer in eval mode
    (MobileNet's logits come out ~1e-10, and int8 rounds them to 0); measured statistics normalise every
    layer, as trained ones would, so the cosine to the float model says something about the function.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    for norm in norms:
        norm.momentum = 0.1


@dataclass
class ZooTask:
    """A torchvision architecture at random init, judged by fidelity to its float self (mean logit cosine)."""

    arch: str
    finetune_lr: float = 1e-4
    batch_size: int = 16
    name: str = field(init=False)
    _model: nn.Module | None = field(default=None, init=False, repr=False)
    _data: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.name = f"zoo-{self.arch}"

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            self._model = build(self.arch)
        return self._model

    @property
    def data(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Synthetic images per split (fixed seed) and the float model's logits on them (the targets), computed
        `batch_size` images at a time (all 64 training images at once took maxvit_t at 224x224 to 3.9 GB)."""
        if self._data is None:
            side, gen = input_size(self.arch), torch.Generator().manual_seed(1)
            inputs = {split: torch.randn(n, 3, side, side, generator=gen) for split, n in SPLITS.items()}
            self._data = {split: (x, self._logits(self.model, x)) for split, x in inputs.items()}
        return self._data

    def baseline_model(self) -> nn.Module:
        return copy.deepcopy(self.model).eval()

    def evaluate(self, model: nn.Module, split: str = "test") -> float:
        x, target = self.data[split]
        return float(F.cosine_similarity(self._logits(model, x).float(), target, dim=1).mean())

    @torch.no_grad()
    def _logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        model.eval()
        return torch.cat([model(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)])

    def finetune(
        self, model: nn.Module, epochs: float, seed: int = 0, on_step: Callable[[], None] | None = None
    ) -> None:
        x, target = self.data["train"]
        torch.manual_seed(seed)
        model.train()
        train_minibatches(
            model.parameters(),
            len(x),
            lambda idx: F.mse_loss(model(x[idx]), target[idx]),
            steps=self.finetune_steps(epochs),
            batch_size=self.batch_size,
            lr=self.finetune_lr,
            weight_decay=0.0,
            seed=seed,
            on_step=on_step,
        )
        model.eval()

    def finetune_steps(self, epochs: float) -> int:
        return max(1, round(epochs * -(-SPLITS["train"] // self.batch_size)))

    def calibration_batches(self) -> Iterator[torch.Tensor]:
        x, _ = self.data["train"]
        yield from (x[i : i + self.batch_size] for i in range(0, 2 * self.batch_size, self.batch_size))

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        side = input_size(self.arch)
        return torch.randn(batch_size, 3, side, side, generator=torch.Generator().manual_seed(batch_size))


@cache
def task_for(arch: str) -> ZooTask:
    if arch not in classification_models() + timm_models():
        raise AttributeError(f"neither torchvision nor TIMM_MODELS has a classification model {arch!r}")
    return ZooTask(arch)


def __getattr__(name: str) -> ZooTask:
    """``experiments.tasks.zoo:ARCH`` is the task of that torchvision architecture."""
    if name.startswith("__"):
        raise AttributeError(name)
    return task_for(name)
