"""Two real search processes on one study (`autocompress resume NAME` twice, at once): one history, one
sequence of trial numbers, the trial budget exact, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

import pytest

import autocompress
from autocompress.store import StudyStore
from tests.conftest import FAST_SPACE, cli_env

pytestmark = pytest.mark.slow


def test_two_search_processes_share_one_study(store_url, tmp_path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(FAST_SPACE)
    autocompress.search(space, study="shared", storage=store_url, strategy="tpe", trials=1, executor="inline")
    command = [
        sys.executable,
        "-m",
        "autocompress",
        "resume",
        "shared",
        "--storage",
        store_url,
        "--trials",
        "8",
        "--executor",
        "inline",
        "-q",
    ]
    procs = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=tmp_path
        )
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    store = StudyStore(store_url)
    trials = store.trials("shared")
    assert sorted(t.number for t in trials) == list(range(8))  # no number twice, budget exact
    assert all(t.state in ("complete", "failed") for t in trials)
    workers = {t.worker.rsplit(":", 1)[-1] for t in trials if t.number > 0}
    assert len(workers) == 2, workers  # both processes ran trials
    record = store.study("shared")
    assert record.spent["trials"] == 8
    events = record.controller_state["events"]
    assert sum(e[0] == "ask" for e in events) == 8 and sum(e[0] == "tell" for e in events) == 8
    store.close()
    again = autocompress.resume("shared", storage=store_url, executor="inline")  # the shared log replays
    assert len(again.trials()) == 8
