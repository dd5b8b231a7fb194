"""Concurrent processes on one study: two writers take trial numbers from the shared controller state by
compare-and-swap and spend the budget through the store while a reader runs leaderboards. The writers drive
`StudyStore` directly (start, finish, as the search loop does) rather than running full searches, so the
test takes seconds."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from autocompress.store import COMPLETE, StudyStore
from tests.conftest import cli_env
from tests.store.store_worker import take_trial, tell_trial

TRIALS = 60
WORKER = Path(__file__).with_name("store_worker.py")


@pytest.mark.slow
def test_two_writers_and_a_reader_share_one_study(
    store_url: str, tmp_path: Path, spawned: list[subprocess.Popen[str]]
) -> None:
    store = StudyStore(store_url, create=True)
    store.create_study(
        name="shared",
        task="t",
        strategy="random",
        seed=0,
        space={"objectives": {"accuracy": "max", "latency_ms": "min"}, "constraints": {}},
        space_text="",
        budgets={"trials": TRIALS},
        baseline={},
        controller_state={},
    )
    go = tmp_path / "go"
    env = cli_env() | {"GO": str(go)}
    for role in ("writer", "writer", "reader"):
        spawned.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), role, store_url, "shared"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in spawned:  # all three have the store open before any of them writes
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    go.touch()
    started = time.monotonic()
    writers, reader = spawned[:2], spawned[2]
    numbers = []
    for proc in writers:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        numbers.append([int(line) for line in out.split()])
    Path(f"{go}.done").touch()
    print(f"{TRIALS} trials by two writers beside a reader: {time.monotonic() - started:.2f} s")
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert int(out.split()[-1]) > 0

    assert all(numbers), f"one writer got no trial: {numbers}"
    assert sorted(numbers[0] + numbers[1]) == list(range(TRIALS))  # none shared, none skipped
    record = store.study("shared")
    assert record.counts == {COMPLETE: TRIALS}
    assert record.spent["trials"] == TRIALS and record.spent["cpu_s"] == pytest.approx(TRIALS * 1.0)
    assert {t.worker for t in store.trials("shared")} == {str(p.pid) for p in writers}
    store.close()


@pytest.mark.slow
def test_a_writer_killed_mid_write_leaves_a_study_that_resumes(
    store_url: str, tmp_path: Path, spawned: list[subprocess.Popen[str]]
) -> None:
    """SIGKILL a process while it writes trials back to back: every trial is either finished with all its
    rows or still running with none, the spent counts match the rows, and the study goes on."""
    store = StudyStore(store_url, create=True)
    store.create_study(
        name="killed",
        task="t",
        strategy="random",
        seed=0,
        space={"objectives": {"accuracy": "max", "latency_ms": "min"}, "constraints": {}},
        space_text="",
        budgets={"trials": 100_000},
        baseline={},
        controller_state={},
    )
    go = tmp_path / "go"
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "writer", store_url, "killed"],
        env=cli_env() | {"GO": str(go)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    spawned.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    go.touch()
    for line in proc.stdout:  # wait until it is well into its writing
        if line.strip() == "20":
            break
    proc.kill()
    proc.wait(timeout=30)

    trials = store.trials("killed")
    finished = [t for t in trials if t.state == COMPLETE]
    assert len(finished) >= 21 and {t.state for t in trials} <= {COMPLETE, "running"}
    assert all(t.metrics["cpu_s"] == 1.0 for t in finished) and all(
        t.metrics == {} for t in trials if t.state != COMPLETE
    )
    record = store.study("killed")
    assert record.spent["trials"] == len(finished) and record.spent["cpu_s"] == pytest.approx(len(finished))
    tells = [e[1] for e in record.controller_state["events"] if e[0] == "tell"]
    assert sorted(tells) == sorted(t.number for t in finished)
    store.queue_unfinished("killed")
    number = take_trial(store, "killed", {"layers": {}}, owner="resumed")
    assert number == len(trials)
    tell_trial(
        store,
        "killed",
        number,
        state=COMPLETE,
        metrics={"accuracy": 0.9, "cpu_s": 1.0},
        violations={},
        error="",
        worker="w",
        intermediate=[],
        artefacts=[],
        spent={},
    )
    assert store.study("killed").spent["trials"] == len(finished) + 1
    store.close()
