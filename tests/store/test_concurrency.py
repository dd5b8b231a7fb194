"""Concurrent processes on one study: two writers allocate trial numbers and spend the budget through the
store while a reader runs leaderboards. The writers drive `StudyStore` directly (allocate, finish) rather
than running full searches, so the test takes seconds; the search loop's own numbering is not under test."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from autocompress.store import COMPLETE, StudyStore
from tests.conftest import cli_env

TRIALS = 60
WORKER = Path(__file__).with_name("store_worker.py")


@pytest.mark.slow
def test_two_writers_and_a_reader_share_one_study(store_url: str, tmp_path: Path,
                                                  spawned: list[subprocess.Popen[str]]) -> None:
    store = StudyStore(store_url, create=True)
    store.create_study(name="shared", task="t", strategy="random", seed=0,
                       space={"objectives": {"accuracy": "max", "latency_ms": "min"}, "constraints": {}},
                       space_text="", budgets={"trials": TRIALS}, baseline={}, controller_state={})
    go = tmp_path / "go"
    env = cli_env() | {"GO": str(go)}
    for role in ("writer", "writer", "reader"):
        spawned.append(subprocess.Popen([sys.executable, str(WORKER), role, store_url, "shared"], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
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
