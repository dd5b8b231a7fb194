"""`autocompress sensitivity` end to end on the digits task: real pruning of the trained baseline, one layer
at a time, a CSV the report reads, a PNG, the table and the JSON document."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import autocompress
from autocompress.report import SENSITIVITY_COLUMNS, load_sensitivity
from autocompress.space import discover_layers
from experiments.tasks.digits import task
from tests.conftest import FAST_SPACE, run_cli

pytestmark = pytest.mark.slow  # each test runs sensitivity over a real model (10+ s)

ONLY_STEM = FAST_SPACE + "layers: {'*': {channel_sparsity: [0.0]}, 'stem.0': {channel_sparsity: [0.0, 0.5]}}\n"


def test_every_prunable_layer_at_every_sparsity_lands_in_csv_png_and_json(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(FAST_SPACE)
    result = run_cli(
        "sensitivity", str(space), "--out", str(tmp_path / "out"), "--sparsities", "0.75,0.25", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)  # one JSON document, nothing else on stdout
    prunable = [i for i in discover_layers(task.baseline_model(), task.example_input(1)) if i.prunable]
    assert doc["sparsities"] == [0.25, 0.75]
    assert [(r["layer"], r["sparsity"]) for r in doc["rows"]] == [(i.name, s) for i in prunable for s in (0.25, 0.75)]
    assert doc["baseline_accuracy"] == task.evaluate(task.baseline_model(), "val")
    for row in doc["rows"]:
        assert row["channels_kept"] == round(row["channels"] * (1 - row["sparsity"]))  # channels really removed
        assert abs(row["accuracy_drop"] - (doc["baseline_accuracy"] - row["accuracy"])) < 1e-12
    stem = {r["sparsity"]: r["accuracy"] for r in doc["rows"] if r["layer"] == "stem.0"}
    assert stem[0.75] < doc["baseline_accuracy"] - 0.3  # 8 of 32 stem channels left, no fine-tuning: it hurts

    csv_path, png_path = tmp_path / "out" / "sensitivity.csv", tmp_path / "out" / "sensitivity.png"
    with open(csv_path, newline="") as handle:
        header = next(csv.reader(handle))
    assert tuple(header[:3]) == SENSITIVITY_COLUMNS and "baseline_accuracy" in header
    points = load_sensitivity(csv_path)  # the report's own reader accepts it
    assert [(p.layer, p.sparsity, p.accuracy) for p in points] == [
        (r["layer"], r["sparsity"], r["accuracy"]) for r in doc["rows"]
    ]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pinned_layers_are_skipped_and_fine_tuning_recovers_accuracy(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(ONLY_STEM)
    raw = autocompress.sensitivity(space, tmp_path / "raw", sparsities="0.75")
    tuned = autocompress.sensitivity(space, tmp_path / "tuned", sparsities=[0.75], finetune_epochs=1)
    assert [r.layer for r in raw.rows] == [r.layer for r in tuned.rows] == ["stem.0"]  # the others are pinned
    assert tuned.rows[0].accuracy > raw.rows[0].accuracy + 0.3
    with open(tuned.csv, newline="") as handle:
        assert next(csv.DictReader(handle))["finetune_epochs"] == "1.0"


def test_table_names_each_layer_and_its_accuracy(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(ONLY_STEM)
    result = run_cli("sensitivity", str(space), "--out", str(tmp_path / "out"), "--sparsities", "0.5")
    assert result.returncode == 0, result.stderr
    points = load_sensitivity(tmp_path / "out" / "sensitivity.csv")
    assert "stem.0" in result.stdout and f"{points[0].accuracy:.4f}" in result.stdout
    assert "50% removed" in result.stdout
