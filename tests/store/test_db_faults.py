"""Database faults during a real search (digits CNN, inline executor) on a private PostgreSQL server that the
test starts itself: stopped mid-trial and restarted, the loop retries, keeps the finished result in memory and
writes it when the server is back, and the budget is met with every state change written once; stopped for
longer than the retry budget, the search stops with one line (exit 1) and a resume re-runs the trial whose
result was never stored, losing nothing that was."""

from __future__ import annotations

import re
import shlex
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

import autocompress
from autocompress.store import COMPLETE
from tests.conftest import FAST_SPACE, run_cli

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SPACE = FAST_SPACE.replace("experiments.tasks.digits:task", "tests.faulty_task:stops_db")


def written_twice(url: str) -> list[tuple]:
    """Metric, intermediate-value and artefact rows that exist more than once for one trial."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = [
            *conn.execute(text("SELECT trial_id, name FROM trial_metrics GROUP BY 1, 2 HAVING count(*) > 1")),
            *conn.execute(text("SELECT trial_id, kind FROM artefacts GROUP BY 1, 2 HAVING count(*) > 1")),
            *conn.execute(
                text("SELECT trial_id, step, name FROM intermediate_values GROUP BY 1, 2, 3 HAVING count(*) > 1")
            ),
        ]
    engine.dispose()
    return [tuple(r) for r in rows]


def prepare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server) -> Path:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AUTOCOMPRESS_FAULT_DIR", str(tmp_path))
    monkeypatch.setenv("AUTOCOMPRESS_ARTIFACTS", str(tmp_path / "artefacts"))
    monkeypatch.setenv("AUTOCOMPRESS_FAULT_DB_STOP", shlex.join(server.command("stop", "-m", "fast")))
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    return space


def test_server_restart_mid_trial_is_ridden_out_and_the_budget_met(private_postgres, tmp_path, monkeypatch) -> None:
    server = private_postgres
    space = prepare(tmp_path, monkeypatch, server)
    marker, log = tmp_path / "db-stopped-1", tmp_path / "artefacts" / "restart" / "study.log"
    after_failure = 8.0

    def restart_after_the_loop_failed() -> None:
        """Bring the server back `after_failure` seconds after the loop first found it gone."""
        while not (marker.exists() and log.exists() and "the study store failed" in log.read_text()):
            time.sleep(0.1)
        time.sleep(after_failure)
        server.start()

    restarter = threading.Thread(target=restart_after_the_loop_failed, daemon=True)
    restarter.start()
    study = autocompress.search(
        space, study="restart", storage=server.url, strategy="random", trials=3, executor="inline"
    )
    restarter.join(timeout=60)
    assert marker.exists() and server.running()

    trials = study.trials()
    assert [(t.number, t.state, t.attempts) for t in trials] == [(n, COMPLETE, 1) for n in range(3)], [
        t.error for t in trials
    ]
    assert study.record.status == "finished" and study.record.spent["trials"] == 3
    assert written_twice(server.url) == []
    assert all(len(t.artefacts) == 1 for t in trials)
    text = log.read_text()
    assert "the study store failed (" in text, text
    waited = [float(s) for s in re.findall(r"answers again after ([\d.]+) s", text)]
    assert len(waited) == 1 and after_failure < waited[0] < 60, text
    print(f"store outage ridden out: the loop retried for {waited[0]:.1f} s, then wrote trial 1's result")


def test_server_down_past_the_retry_budget_stops_then_resume_loses_nothing(
    private_postgres, tmp_path, monkeypatch
) -> None:
    server = private_postgres
    space = prepare(tmp_path, monkeypatch, server)
    started = time.monotonic()
    result = run_cli(
        "search", str(space), "--study", "down", "--storage", server.url, "--strategy", "random",
        "--trials", "3", "--executor", "inline", "--store-retry", "5s", "-q",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("autocompress:")]
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(
        rf"autocompress: stopped: the study store at {re.escape(server.url)} failed for [56] s \(.+\); finished "
        r"trials not yet stored will be re-run by 'autocompress resume down' once it answers",
        lines[0],
    ), lines[0]
    print(f"search stopped {time.monotonic() - started:.1f} s after it began, retry budget 5 s")
    assert not server.running()

    server.start()
    before = {t.number: t for t in autocompress.load_study("down", server.url).trials()}
    assert {n: t.state for n, t in before.items()} == {0: COMPLETE, 1: "running"}  # trial 1's result was lost
    result = run_cli("resume", "down", "--storage", server.url, "--executor", "inline", "-q")
    assert result.returncode == 0, result.stderr
    study = autocompress.load_study("down", server.url)
    trials = {t.number: t for t in study.trials()}
    assert [(n, t.state) for n, t in trials.items()] == [(0, COMPLETE), (1, COMPLETE), (2, COMPLETE)]
    assert trials[1].attempts == 2 and trials[0].attempts == trials[2].attempts == 1  # one trial re-run
    # trial 0 is untouched, except that the finished search reads the test split for its choice
    chosen = {row["trial"] for row in study.pareto()} or {study.leaderboard(top=1)[0]["trial"]}
    searched = {k: v for k, v in trials[0].metrics.items() if k != "test_accuracy"}
    assert searched == before[0].metrics and trials[0].finished_at == before[0].finished_at
    assert ("test_accuracy" in trials[0].metrics) == (0 in chosen)
    assert study.record.status == "finished" and study.record.spent["trials"] == 3
    assert written_twice(server.url) == []
