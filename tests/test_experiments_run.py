"""`python -m experiments.run`: one command runs an experiment's search and writes the kept results."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_run_writes_leaderboard_report_and_manifest(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.run",
            "digits",
            "--trials",
            "2",
            "--executor",
            "inline",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "digits"
    with (out / "leaderboard.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and {"trial", "accuracy", "speedup", "feasible"} <= set(rows[0])
    assert (out / "report" / "index.html").exists()
    assert list((out / "report").glob("*.png"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["trial"] in {int(row["trial"]) for row in rows}
    assert not (out / "model.pt").exists()  # the binary stays out of the results folder
    summary = json.loads(proc.stdout)
    assert summary["trials"] == 2 and summary["exported_trial"] == manifest["trial"]
    assert summary["baseline"]["accuracy"] > 0.9


def test_unknown_experiment_is_a_user_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.run", "nope", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown experiment 'nope'" in proc.stderr and "resnet" in proc.stderr
