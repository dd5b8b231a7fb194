"""Selection on the validation split only: a real search (inline executor, so the task's evaluations happen in
this process and are recorded) ranks and constrains on ``val``, reads ``test`` only after its last trial, for
the final Pareto front and the baseline, and the export verifies on both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import autocompress
from autocompress.task import load_task
from experiments.tasks.minilm import MiniLMTask
from experiments.tasks.tokens import token_splits
from tests import split_recording_task
from tests.conftest import FAST_SPACE
from tests.split_recording_task import EVENTS


@pytest.mark.slow
def test_search_never_reads_the_test_split_before_it_ends(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(FAST_SPACE.replace("experiments.tasks.digits:task", "tests.split_recording_task:task"))
    EVENTS.clear()
    study = autocompress.search(
        space,
        study="splits",
        storage=f"sqlite:///{tmp_path / 'store.db'}",
        trials=3,
        executor="inline",
        on_progress=lambda progress: EVENTS.append(("trial", progress.last_number)),
    )
    last_trial = max(i for i, (kind, _) in enumerate(EVENTS) if kind == "trial")
    during = [split for kind, split in EVENTS[:last_trial] if kind == "evaluate"]
    after = [split for kind, split in EVENTS[last_trial:] if kind == "evaluate"]
    assert sum(kind == "trial" for kind, _ in EVENTS) == 3
    assert set(during) == {"val"} and len(during) >= 4  # the baseline and each of the 3 trials
    assert after and set(after) == {"test"}  # the front and the baseline, once the search is over

    task = split_recording_task.task
    board = study.leaderboard()
    front = [row for row in board if row["pareto"]] or board[:1]
    for row in board:  # the stored figure is the val one; test only for the trials the search chose
        trial = study.store.trial("splits", row["trial"])
        model = torch.jit.load(study.store.artefact_file(trial.shipped_artefacts()[0]))
        assert row["accuracy"] == task.evaluate(model, "val")
        if row in front:
            assert row["test_accuracy"] == task.evaluate(model, "test")
        else:
            assert row["test_accuracy"] is None
    baseline = study.record.baseline
    assert baseline["test_accuracy"] > 0.8 and baseline["accuracy"] > 0.8  # a trained linear net on 8x8 digits

    out = tmp_path / "export"
    study.export(out, trial=front[0]["trial"], allow_infeasible=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"] == {"accuracy": "val", "test_accuracy": "test"}
    assert manifest["metrics"]["accuracy"] == front[0]["accuracy"]
    assert manifest["metrics"]["test_accuracy"] == manifest["verified"]["test_accuracy"] == front[0]["test_accuracy"]
    assert manifest["baseline"]["test_accuracy"] == baseline["test_accuracy"]


@pytest.mark.parametrize(
    "ref",
    [
        "experiments.tasks.digits:task",
        "experiments.tasks.trivial:task",
        "experiments.tasks.cnn:resnet",
        "experiments.tasks.cnn:mobilenet",
        "experiments.tasks.cnn:densenet",
        "experiments.tasks.text:transformer",
    ],
)
def test_every_experiment_task_has_a_validation_split_apart_from_test(ref: str) -> None:
    data = load_task(ref).data  # type: ignore[attr-defined]
    (x_val, y_val), (x_test, _) = data["val"], data["test"]
    assert len(y_val) > 0.1 * len(data["train"][1])
    val_rows = {tuple(row) for row in x_val.flatten(1).tolist()}
    assert not val_rows & {tuple(row) for row in x_test.flatten(1).tolist()}


def test_the_token_and_minilm_data_have_validation_splits() -> None:
    assert {"train", "val", "test"} == set(token_splits())
    assert "val" in dict(MiniLMTask().splits)
