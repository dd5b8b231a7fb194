"""experiments/README.md's "Add a model" works as written: its task module, saved as a new file (in a temporary
folder on the path instead of experiments/tasks/), and its one line in EXPERIMENTS run one real trial through
`python -m experiments.run`'s code, with the default space derived from the task."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from experiments import run
from experiments.run import Experiment

GUIDE = Path(__file__).resolve().parent.parent / "experiments" / "README.md"

pytestmark = pytest.mark.slow


def test_a_model_added_as_the_guide_says_runs_a_trial(tmp_path, monkeypatch) -> None:
    section = GUIDE.read_text().split("## Add a model", 1)[1]
    module, line = re.findall(r"```python\n(.*?)```", section, flags=re.S)[:2]
    assert "experiments/tasks/tiny.py" in section and "EXPERIMENTS" in section
    (tmp_path / "tiny.py").write_text(module)  # the new file, importable as `tiny` rather than experiments.tasks.tiny
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")  # for export
    name, _, entry = line.strip().rstrip(",").partition(": ")
    experiment = eval(entry.replace("experiments.tasks.tiny:", "tiny:"), {"Experiment": Experiment})
    monkeypatch.setitem(run.EXPERIMENTS, json.loads(name), experiment)  # the one line

    summary = run.run_experiment("tiny", tmp_path / "results", trials=1, executor="inline")
    assert summary["trials_complete"] == 1 and summary["space"] == "default space for tiny:task"
    assert (tmp_path / "results" / "tiny" / "space.yaml").read_text().startswith("task: tiny:task\n")
    assert summary["baseline"]["accuracy"] > 0.5  # a trained baseline (chance is 0.1)
