"""Budgets are study totals that stop the loop cleanly and say which one stopped it; multi-fidelity
promotions and the study log land in the store's folder."""

from __future__ import annotations

import pytest

import autocompress
from autocompress.store import COMPLETE, FAILED, QUEUED
from tests.conftest import FAST_SPACE


def space_file(tmp_path, text: str = FAST_SPACE):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_failure_budget_stops_the_study_and_resume_takes_a_new_total(tmp_path, monkeypatch) -> None:
    space = space_file(tmp_path, FAST_SPACE.replace("experiments.tasks.digits:task", "tests.faulty_task:raising"))
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = autocompress.search(
        space, study="f", storage=storage, strategy="random", trials=10, max_failures=1, executor="inline"
    )
    record = study.record
    assert record.stop_reason == "failure budget reached (1/1 failed trials)"
    assert [t.state for t in study.trials()] == [COMPLETE, FAILED]
    study = autocompress.resume("f", storage=storage, trials=3, max_failures=5, executor="inline")
    assert study.record.stop_reason.startswith("trial budget reached (3/3")
    assert study.record.budgets["trials"] == 3 and study.record.budgets["max_failures"] == 5


@pytest.mark.slow
def test_cpu_and_time_budgets_stop_the_loop(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = autocompress.search(space_file(tmp_path), study="cpu", storage=storage, cpu_hours=1e-9, executor="inline")
    assert study.record.stop_reason.startswith("cpu budget reached") and len(study.trials()) == 1
    study = autocompress.search(
        space_file(tmp_path), study="time", storage=storage, time_budget="1s", executor="inline"
    )
    assert study.record.stop_reason.startswith("time budget reached") and len(study.trials()) >= 1
    assert study.record.spent["wall_s"] >= 1.0


@pytest.mark.slow
@pytest.mark.ray
def test_cancel_on_budget_queues_running_trials_for_resume(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    slow = FAST_SPACE.replace("[0.5]", "[4]")
    study = autocompress.search(
        space_file(tmp_path, slow),
        study="c",
        storage=storage,
        strategy="random",
        time_budget="2s",
        on_budget="cancel",
        workers=2,
    )
    states = [t.state for t in study.trials()]
    assert states.count(QUEUED) == 2 and study.record.stop_reason.startswith("time budget reached")
    study = autocompress.resume("c", storage=storage, time_budget="10m", trials=2, workers=2)
    assert sorted(t.number for t in study.trials()) == [0, 1]
    details = [(t.state, t.attempts, t.error) for t in study.trials()]
    assert all(state == COMPLETE and attempts == 2 for state, attempts, _ in details), details


@pytest.mark.slow
def test_asha_promotions_are_stored_and_the_log_is_written(tmp_path) -> None:
    rungs = FAST_SPACE.replace("fidelity: {finetune_epochs: [0.5]}", "fidelity: {finetune_epochs: [0.2, 0.6], eta: 2}")
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = autocompress.search(
        space_file(tmp_path, rungs), study="a", storage=storage, strategy="random", trials=6, executor="inline"
    )
    board = study.leaderboard()
    promoted = [row for row in board if row["rung"] == 1]
    assert promoted and all(row["promoted_from"] is not None for row in promoted)
    by_number = {t.number: t for t in study.trials()}
    for row in promoted:
        assert by_number[row["trial"]].policy == by_number[int(row["promoted_from"])].policy
        assert by_number[row["trial"]].finetune_epochs == 0.6
    log = (tmp_path / "autocompress-artifacts" / "a" / "study.log").read_text()
    assert "trial 0 complete" in log and "stopped: trial budget reached" in log
