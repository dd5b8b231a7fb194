"""The real text task (`experiments.tasks.text`): deterministic data from installed packages, real labels, a
transformer that learns it clearly better than guessing the majority class."""

from __future__ import annotations

import pytest
import torch

from autocompress.space import discover_layers, load_space_file, resolve_space
from autocompress.task import load_task
from experiments.tasks import text
from tests.conftest import ROOT


def test_data_comes_only_from_dependencies_and_every_label_occurs() -> None:
    rows = text.labelled_sentences()
    packages = {package for _, _, package in rows}
    assert packages <= set(text.dependency_closure())
    assert {"numpy", "torch", "pydantic", "sqlalchemy"} <= packages  # direct and transitive requirements
    assert "autocompress" not in packages and "pytest" not in packages  # itself and test extras excluded
    counts = torch.bincount(torch.tensor([label for _, label, _ in rows]), minlength=text.CLASSES)
    assert counts.min() > 0.15 * len(rows)  # no class is a token minority
    assert len(rows) == len({sentence for sentence, _, _ in rows})  # deduplicated


def test_labels_follow_the_trove_classifiers() -> None:
    assert (
        text.package_label(
            ["Topic :: Scientific/Engineering :: Mathematics", "Topic :: Software Development :: Libraries"]
        )
        == 0
    )
    assert text.package_label(["Topic :: Software Development :: Libraries"]) == 1
    assert text.package_label(["Topic :: Database", "Intended Audience :: Developers"]) == 2


def test_split_is_deterministic_disjoint_and_tokenized_in_range() -> None:
    first, second = text.text_splits(), text.text_splits()
    for split in ("train", "val", "test"):
        assert torch.equal(first[split][0], second[split][0]) and torch.equal(first[split][1], second[split][1])
    tokens = torch.cat([first[s][0] for s in first])
    assert tokens.shape[1] == text.SEQ and tokens.min() >= 0 and tokens.max() < text.VOCAB
    rows = {tuple(r) for r in first["test"][0].tolist()}
    assert not rows & {tuple(r) for r in first["train"][0].tolist()}
    assert len(first["train"][1]) > 3 * len(first["test"][1]) > 0


def test_tokenizer_is_case_insensitive_and_pads_with_zero() -> None:
    ids = text.tokenize("Fast arrays, FAST arrays.")
    assert ids[0] == ids[2] and ids[1] == ids[3] and ids[4:] == [0] * (text.SEQ - 4)


@pytest.mark.slow
def test_transformer_beats_the_majority_class_clearly() -> None:
    task = text.transformer
    accuracy = task.evaluate(task.baseline_model())
    assert accuracy > text.majority_accuracy(task.data) + 0.15


def test_the_transformer_space_resolves_against_the_text_task() -> None:
    spec, _ = load_space_file(ROOT / "search_spaces" / "transformer.yaml")
    task = load_task(spec.task)
    infos = discover_layers(task.model_factory(), task.example_input(1))
    space = resolve_space(spec, infos, "transformer.yaml")
    searched = sorted(n for n, c in space.layers.items() if max(c.channel_sparsity) > 0)
    assert searched == [f"layers.{i}.{name}" for i in range(2) for name in ("ffn_in", "v")]  # heads and FFN width
    assert all(c.weight_bits == (8, 32) for c in space.layers.values())
