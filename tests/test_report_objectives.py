"""The report's Pareto plot and hypervolume follow the study's own objectives and constraints (here accuracy
and batch-32 latency, as mobilenet.yaml optimises), with the reference point stated; trials are written to a
real SQLite store directly, so no training runs."""

from __future__ import annotations

from pathlib import Path

import pytest

import autocompress
from autocompress.report import Frame
from autocompress.space import violations
from autocompress.store import COMPLETE, StudyStore, hypervolume_2d

OBJECTIVES = {"accuracy": "max", "latency_ms_b32": "min"}
CONSTRAINTS = {"max_accuracy_drop": 0.1, "min_speedup_b32": 1.5}
BASELINE = {"accuracy": 0.9, "latency_ms": 1.0, "latency_ms_b32": 10.0}
#: (accuracy, batch-32 latency): two on the front, one dominated, one too slow for min_speedup_b32
TRIALS = [(0.88, 5.0), (0.85, 4.0), (0.80, 6.0), (0.89, 8.0)]


def write_study(folder: Path, trials: list[tuple[float, float]]) -> autocompress.Study:
    """A study in a real SQLite store with finished trials of the given (accuracy, batch-32 latency)."""
    store = StudyStore(f"sqlite:///{folder / 'store.db'}", create=True)
    store.create_study(
        name="b32",
        task="experiments.tasks.digits:task",
        strategy="random",
        seed=0,
        space={"objectives": OBJECTIVES, "constraints": CONSTRAINTS},
        space_text="",
        budgets={"trials": None},
        baseline=BASELINE,
        controller_state={},
    )
    for number, (accuracy, latency) in enumerate(trials):
        metrics = {
            "accuracy": accuracy,
            "accuracy_drop": BASELINE["accuracy"] - accuracy,
            "latency_ms_b32": latency,
            "speedup_b32": BASELINE["latency_ms_b32"] / latency,
            "latency_ms": 1.0,
            "speedup": 1.0,
        }
        store.start_trial("b32", number, {"layers": {}}, 1.0, {})
        store.finish_trial(
            "b32",
            number,
            state=COMPLETE,
            metrics=metrics,
            violations=violations(metrics, CONSTRAINTS),
            error="",
            worker="w",
            intermediate=[],
            artefacts=[],
            controller_state={},
            spent={},
        )
    return autocompress.Study("b32", store)


@pytest.fixture
def study(tmp_path: Path) -> autocompress.Study:
    return write_study(tmp_path, TRIALS)


def test_report_plots_and_measures_the_studys_objectives_with_the_reference_stated(study, tmp_path) -> None:
    board = study.leaderboard()
    assert [r["trial"] for r in board if r["pareto"]] == [0, 1] and not board[-1]["feasible"]
    frame = Frame.of(study.record, [t.metrics for t in study.trials()])
    assert (frame.y, frame.x, frame.reference) == ("accuracy", "latency_ms_b32", (0.0, 10.0))
    front = [frame.point(t.metrics) for t in study.trials() if t.number in (0, 1)]
    # area of accuracy <= 0.88 for latency in [5, 10], plus accuracy <= 0.85 for latency in [4, 5]
    assert hypervolume_2d(front, frame.oriented_reference) == pytest.approx(0.88 * 5 + 0.85 * 1)

    page = study.report(tmp_path / "out").read_text()
    assert "Pareto front: accuracy vs latency_ms_b32" in page
    assert "reference point accuracy 0, latency_ms_b32 10" in page
    assert "Constraints not on these axes" not in page  # both constraints are drawn on these axes
