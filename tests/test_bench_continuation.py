"""experiments/bench_continuation.py's record: runs of different recipes side by side end in one file, a rerun of
a recipe and seed replaces its own row, and the report's mean is chain minus single over every row."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from experiments.bench_continuation import write

RUNGS = (0.05, 0.15, 0.45)


def _row(recipe: str, seed: int, single: float, last: float) -> dict:
    return {"recipe": recipe, "seed": seed, "cpu": "AMD EPYC (VNNI)", "single": single, "chain": [0.9, 0.95, last]}


def test_runs_side_by_side_end_in_one_file_and_a_rerun_replaces_its_own_row(tmp_path: Path) -> None:
    args = argparse.Namespace(pair="mnist-resnet18", out=tmp_path)
    write(args, RUNGS, [_row("50% channels, 8 bits", 0, 0.98, 0.97)])
    write(args, RUNGS, [_row("25% channels, 8 bits", 0, 0.98, 0.99), _row("25% channels, 8 bits", 1, 0.98, 0.98)])
    write(args, RUNGS, [_row("50% channels, 8 bits", 0, 0.98, 0.98)])  # rerun of the first
    rows = json.loads((tmp_path / "bench_continuation.json").read_text())["rows"]
    assert [(r["recipe"][:3], r["seed"], r["chain"][-1]) for r in rows] == [
        ("25%", 0, 0.99),
        ("25%", 1, 0.98),
        ("50%", 0, 0.98),
    ]
    report = (tmp_path / "bench_continuation.md").read_text()
    assert "Chain - single over 3 runs: +0.33 ± 0.58 pt (0 below)." in report  # +1, 0, 0 pt
    assert "| 25% channels, 8 bits | 0 | 0.9800 | 0.9000 / 0.9500 / 0.9900 | – | +1.00 | – |" in report


def test_a_rerun_of_another_way_adds_its_figures_to_the_row_and_keeps_the_others(tmp_path: Path) -> None:
    args = argparse.Namespace(pair="mnist-resnet18", out=tmp_path)
    write(args, RUNGS, [_row("r", 0, 0.98, 0.97)])
    parts = {"recipe": "r", "seed": 0, "cpu": "AMD EPYC (VNNI)", "single": 0.98, "parts": [0.8, 0.9, 0.976]}
    write(args, RUNGS, [parts])
    (row,) = json.loads((tmp_path / "bench_continuation.json").read_text())["rows"]
    assert row["chain"] == [0.9, 0.95, 0.97] and row["parts"] == [0.8, 0.9, 0.976]
    report = (tmp_path / "bench_continuation.md").read_text()
    assert "| r | 0 | 0.9800 | 0.9000 / 0.9500 / 0.9700 | 0.8000 / 0.9000 / 0.9760 | -1.00 | -0.40 |" in report
    assert "Parts - single over 1 runs: -0.40 pt (1 below)." in report


def test_a_file_of_another_pair_or_other_rungs_is_refused(tmp_path: Path) -> None:
    write(argparse.Namespace(pair="mnist-resnet18", out=tmp_path), RUNGS, [_row("r", 0, 0.98, 0.97)])
    with pytest.raises(SystemExit, match="holds mnist-resnet18 at rungs"):
        write(argparse.Namespace(pair="mnist-mobilenetv2", out=tmp_path), RUNGS, [_row("r", 0, 0.98, 0.97)])
