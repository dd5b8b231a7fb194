"""Schema migrations: a store written at revision 0001, with data in it, upgrades to head and keeps its data."""

from __future__ import annotations

import json

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

import autocompress
from autocompress.store import COMPLETE, FAILED, StaleControllerState, StudyStore, head_revision
from autocompress.store._engine import _alembic_config

SPACE = {"objectives": {"accuracy": "max", "latency_ms": "min"}, "constraints": {"max_accuracy_drop": 0.02}}
POLICY = {"layers": {"conv1": {"channel_sparsity": 0.5, "weight_bits": 8}}, "criterion": "l1"}


def write_revision_0001_store(url: str) -> None:
    """Create the schema of revision 0001 only and fill it the way the 0001 code did: one study, a feasible,
    an infeasible and a failed trial, an intermediate value and an artefact."""
    engine = create_engine(url)
    config = _alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(
            text(
                "INSERT INTO studies (name, task, strategy, seed, space, space_text, budgets, spent, "
                "controller_state, baseline, status, stop_reason, created_at, updated_at) VALUES ('old', "
                "'experiments.tasks.digits:task', 'tpe', 3, :space, 'task: x', :budgets, :spent, :state, :base, "
                "'finished', "
                "'trial budget reached', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            ),
            {
                "space": json.dumps(SPACE),
                "budgets": json.dumps({"trials": 3}),
                "spent": json.dumps({"trials": 3, "wall_s": 12.5}),
                "state": json.dumps({"events": [["ask", 0]]}),
                "base": json.dumps({"accuracy": 0.97}),
            },
        )
        trials = [
            (0, COMPLETE, {"accuracy": 0.96, "latency_ms": 1.0}, {"max_accuracy_drop": -0.5}),
            (1, COMPLETE, {"accuracy": 0.90, "latency_ms": 0.5}, {"max_accuracy_drop": 2.5}),
            (2, FAILED, {}, {}),
        ]
        for number, state, metrics, violations in trials:
            conn.execute(
                text(
                    "INSERT INTO trials (study_id, number, state, policy, finetune_epochs, metrics, violations, "
                    "error, worker, attempts, started_at, heartbeat_at, finished_at) VALUES ((SELECT id FROM studies), "
                    ":n, :state, "
                    ":policy, 1.0, :metrics, :violations, '', 'w', 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00', "
                    "'2026-01-01 00:01:00')"
                ),
                {
                    "n": number,
                    "state": state,
                    "policy": json.dumps(POLICY),
                    "metrics": json.dumps(metrics),
                    "violations": json.dumps(violations),
                },
            )
        first = "(SELECT id FROM trials WHERE number = 0)"
        conn.execute(
            text(f"INSERT INTO intermediate_values (trial_id, step, name, value) VALUES ({first}, 0, 'accuracy', 0.9)")
        )
        conn.execute(
            text(
                f"INSERT INTO artefacts (trial_id, kind, path, sha256, size_bytes) "
                f"VALUES ({first}, 'model', '/x/trial-0-model.pt', :sha, 10)"
            ),
            {"sha": "ab" * 32},
        )
    engine.dispose()


def test_a_revision_0001_store_with_data_upgrades_to_head(store_url: str) -> None:
    write_revision_0001_store(store_url)
    store = StudyStore(store_url)  # a reader opening it upgrades it: the data stay, new columns are filled
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head_revision()
        assert "next_number" not in {c["name"] for c in inspect(conn).get_columns("studies")}  # dropped in 0003
        violation = dict(conn.execute(text("SELECT number, violation FROM trials")).all())
        assert violation == {0: 0.0, 1: 2.5, 2: None}
        assert conn.execute(text("SELECT COUNT(*) FROM trial_metrics")).scalar() == 4
    record = store.study("old")
    assert (record.seed, record.spent, record.counts) == (3, {"trials": 3, "wall_s": 12.5}, {COMPLETE: 2, FAILED: 1})
    trial = store.trial("old", 0)
    assert trial.policy == POLICY and trial.artefacts[0].sha256 == "ab" * 32
    board = autocompress.Study("old", store).leaderboard()
    assert [(r["trial"], r["feasible"], r["violation"]) for r in board] == [
        (0, True, 0.0),
        (1, False, 2.5),
        (2, False, None),
    ]
    with pytest.raises(StaleControllerState):  # the budget of 3 trials is spent
        store.start_trial("old", 3, POLICY, 1.0, {"events": [["ask", 0]]}, owner="new", expected_events=1)
    store.update_study("old", budgets={"trials": 4})
    store.start_trial("old", 3, POLICY, 1.0, {"events": [["ask", 0], ["ask", 3]]}, owner="new", expected_events=1)
    assert store.trial("old", 3).state == "running"
    store.close()
