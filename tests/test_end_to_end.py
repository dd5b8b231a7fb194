"""The walking skeleton end to end with real parts: digits CNN, SQLite, a local Ray cluster, the CLI.

An 8-trial search on 2 Ray workers is interrupted (SIGINT, and separately SIGKILL of the controller) after
at least two finished trials (with a budget of 6 the quick warm-start trials once all finished before the
signal arrived), then resumed to the total: no finished trial is lost or changed, no trial
number is used twice, and the final count equals the budget.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from autocompress.errors import UserError
from autocompress.store import COMPLETE, FAILED, StudyStore
from tests.conftest import cli_env, descendants, kill_pids, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.ray]

#: trials of the interrupted search
BUDGET = 8


def finished_trials(storage: str, study: str) -> dict[int, dict]:
    try:
        store = StudyStore(storage)
    except UserError:  # the search process created the file but not yet the schema
        return {}
    try:
        if not store.study_exists(study):
            return {}
        return {t.number: t.metrics for t in store.trials(study, (COMPLETE, FAILED))}
    finally:
        store.close()


def start_search(space: Path, storage: str, study: str, spawned: list) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autocompress",
            "search",
            str(space),
            "--study",
            study,
            "--storage",
            storage,
            "--trials",
            str(BUDGET),
            "--workers",
            "2",
            "--seed",
            "3",
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        start_new_session=True,
        # as a background job of a script starts it: SIGINT ignored; the CLI must still stop on it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    spawned.append(proc)
    return proc


def wait_for_finished(storage: str, study: str, proc: subprocess.Popen[str], count: int) -> dict[int, dict]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = finished_trials(storage, study) if Path(storage.removeprefix("sqlite:///")).exists() else {}
        if len(done) >= count:
            return done
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("search did not finish enough trials in time")


def assert_resumes_to_budget(storage: str, study: str, before: dict[int, dict]) -> None:
    result = run_cli("resume", study, "--storage", storage, "--workers", "2", "-q")
    assert result.returncode == 0, result.stderr
    store = StudyStore(storage)
    trials = store.trials(study)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(BUDGET)), numbers  # count equals the budget, no number used twice
    assert all(t.state in (COMPLETE, FAILED) for t in trials)
    after = {t.number: t.metrics for t in trials}
    for number, metrics in before.items():
        # finished trials survive unchanged; the search's end only adds the test figure of its Pareto front
        assert {k: v for k, v in after[number].items() if k != "test_accuracy"} == metrics
    assert store.study(study).status == "finished"
    store.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_interrupted_search_resumes_to_its_budget(fast_space, storage, sig, spawned) -> None:
    study = f"e2e-{sig.name.lower()}"
    proc = start_search(fast_space, storage, study, spawned)
    wait_for_finished(storage, study, proc, 2)
    below = descendants(proc.pid)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, proc.stderr.read() if proc.stderr else ""
    kill_pids(below)  # a SIGKILLed driver leaves its Ray processes behind for up to a minute
    before = finished_trials(storage, study)
    assert len(before) >= 2
    assert_resumes_to_budget(storage, study, before)


def test_search_leaderboard_and_export_round_trip(fast_space, storage, tmp_path) -> None:
    result = run_cli(
        "search", str(fast_space), "--study", "rt", "--storage", storage, "--trials", "4", "--workers", "2", "-q"
    )
    assert result.returncode == 0, result.stderr
    board = json.loads(run_cli("leaderboard", "rt", "--storage", storage, "--format", "json").stdout)
    assert len(board) == 4 and [row["rank"] for row in board] == [1, 2, 3, 4]
    feasible = [row["feasible"] for row in board]
    assert feasible == sorted(feasible, reverse=True)  # feasible trials rank first
    csv_out = run_cli("leaderboard", "rt", "--storage", storage, "--format", "csv").stdout.splitlines()
    assert csv_out[0].startswith("rank,trial") and len(csv_out) == 5
    best = board[0]
    out = tmp_path / "export"
    exported = run_cli("export", "rt", "--storage", storage, "--out", str(out), "--trial", str(best["trial"]))
    assert exported.returncode == 0, exported.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["trial"] == best["trial"] and manifest["metrics"]["accuracy"] == best["accuracy"]
    model = torch.jit.load(str(out / "model.pt"))  # plain torch, no autocompress needed
    from experiments.tasks.digits import task

    assert task.evaluate(model, "val") == pytest.approx(best["accuracy"], abs=1e-9)  # the search ranks on val
    assert task.evaluate(model, "test") == pytest.approx(manifest["metrics"]["test_accuracy"], abs=1e-9)
