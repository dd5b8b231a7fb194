"""Crash safety with real processes: a trial that raises, a Ray worker killed with SIGKILL (retried, and
failed once retries run out), and a trial that hangs past its timeout. Each study completes its budget and
the store stays consistent (every trial finished exactly once, numbers 0..n-1)."""

from __future__ import annotations

import pytest

import autocompress
from autocompress.store import COMPLETE, FAILED
from tests.conftest import FAST_SPACE

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def run_faulty(tmp_path, monkeypatch, task_ref: str, trials: int, **kwargs) -> autocompress.Study:
    monkeypatch.setenv("AUTOCOMPRESS_FAULT_DIR", str(tmp_path))
    space = tmp_path / "faulty.yaml"
    space.write_text(FAST_SPACE.replace("experiments.tasks.digits:task", task_ref))
    return autocompress.search(
        space,
        study="faulty",
        storage=f"sqlite:///{tmp_path / 'faults.db'}",
        strategy="random",
        trials=trials,
        workers=2,
        **kwargs,
    )


def assert_consistent(study: autocompress.Study, trials: int) -> dict[int, object]:
    records = {t.number: t for t in study.trials()}
    assert sorted(records) == list(range(trials))
    assert all(t.state in (COMPLETE, FAILED) for t in records.values())
    assert study.record.status == "finished" and study.record.spent["trials"] == trials
    return records


def test_trial_exception_is_recorded_failed_and_the_study_goes_on(tmp_path, monkeypatch) -> None:
    study = run_faulty(tmp_path, monkeypatch, "tests.faulty_task:raising", 4)
    records = assert_consistent(study, 4)
    assert [records[n].state for n in range(4)] == [COMPLETE, FAILED, COMPLETE, FAILED]
    assert "RuntimeError: injected failure in trial seed 1" in records[1].error


def test_killed_worker_is_retried_then_failed_when_retries_run_out(tmp_path, monkeypatch) -> None:
    study = run_faulty(tmp_path, monkeypatch, "tests.faulty_task:dies_once", 3)
    records = assert_consistent(study, 3)
    assert records[1].state == COMPLETE  # died once, re-run on a fresh worker, then finished
    assert (tmp_path / "died-1").exists()

    monkeypatch.setenv("AUTOCOMPRESS_FAULT_DIR", str(tmp_path))
    space = tmp_path / "always.yaml"
    space.write_text(FAST_SPACE.replace("experiments.tasks.digits:task", "tests.faulty_task:dies_always"))
    study = autocompress.search(
        space, study="always", storage=f"sqlite:///{tmp_path / 'always.db'}", strategy="random", trials=3, workers=2
    )
    records = assert_consistent(study, 3)
    assert records[2].state == FAILED and "worker died" in records[2].error and "2 retries" in records[2].error


def test_hanging_trial_times_out_and_is_failed(tmp_path, monkeypatch) -> None:
    study = run_faulty(tmp_path, monkeypatch, "tests.faulty_task:hanging", 3, trial_timeout=25)
    records = assert_consistent(study, 3)
    assert records[1].state == FAILED and "timed out after 25 s" in records[1].error
    assert records[0].state == records[2].state == COMPLETE


def test_memory_hungry_trial_is_failed_at_its_limit_and_its_worker_lives_on(tmp_path, monkeypatch) -> None:
    """Trial 1 allocates 16 GB in 256 MB tensors under a 1 GB per-trial limit: the allocation fails inside the
    worker, the trial is failed with the limit as its reason, the machine keeps its memory and the same worker
    runs later trials."""
    study = run_faulty(tmp_path, monkeypatch, "tests.faulty_task:hogs_memory", 4, trial_memory="1GB")
    records = assert_consistent(study, 4)
    assert records[1].state == FAILED, records[1].error
    assert records[1].error.startswith("TrialMemoryError: exceeded the 1 GB memory limit"), records[1].error
    assert [records[n].state for n in (0, 2, 3)] == [COMPLETE] * 3
    assert records[1].attempts == 1  # failed, not retried as a dead worker
    pids = {records[n].worker.split(":")[1] for n in (0, 2, 3)}
    assert len(pids) <= 2, pids  # no worker was replaced: the two started at the beginning ran everything
