"""The storage contract, run on every backend (SQLite file and PostgreSQL schema) by the `store_url` fixture."""

from __future__ import annotations

import random
import threading
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import autocompress
from autocompress.errors import UserError
from autocompress.store import COMPLETE, FAILED, QUEUED, RUNNING, StaleControllerState, StudyStore, rank_trials
from autocompress.store._models import MetricRow
from tests.store.store_worker import take_trial, tell_trial

OBJECTIVES = {"accuracy": "max", "latency_ms": "min"}
CONSTRAINTS = {"max_accuracy_drop": 0.02, "min_speedup": 1.5}


def new_study(store: StudyStore, name: str = "s", trials: int | None = None) -> None:
    store.create_study(
        name=name,
        task="experiments.tasks.digits:task",
        strategy="random",
        seed=0,
        space={"objectives": OBJECTIVES, "constraints": CONSTRAINTS},
        space_text="",
        budgets={"trials": trials},
        baseline={"accuracy": 0.97},
        controller_state={},
    )


def policy(sparsity: float) -> dict[str, Any]:
    return {
        "layers": {
            "conv1": {"channel_sparsity": sparsity, "weight_bits": 8},
            "fc": {"channel_sparsity": 0.0, "weight_bits": 32},
        },
        "criterion": "l1",
    }


def finished(state: str = COMPLETE) -> dict[str, Any]:
    """The keyword arguments of `finish_trial` other than the controller state, for an empty trial."""
    return dict(state=state, metrics={}, violations={}, error="", worker="w", intermediate=[], artefacts=[], spent={})


def finish(
    store: StudyStore,
    name: str,
    number: int,
    metrics: dict[str, float],
    violations: dict[str, float],
    state: str = COMPLETE,
    intermediate: list[tuple[int, str, float]] | None = None,
) -> None:
    store.finish_trial(
        name,
        number,
        state=state,
        metrics=metrics,
        violations=violations,
        error="",
        worker="w",
        intermediate=intermediate or [],
        artefacts=[],
        controller_state={"n": number},
        spent={"wall_s": 1.0 + number},
    )


def test_trial_life_cycle_round_trips_every_field(store_url: str) -> None:
    store = StudyStore(store_url, create=True)
    new_study(store)
    store.start_trial("s", 0, policy(0.5), 1.0, {"asked": 0}, owner="controller:h:1")
    finish(
        store,
        "s",
        0,
        {"accuracy": 0.95, "latency_ms": 2.0, "cpu_s": 3.0},
        {"max_accuracy_drop": 0.5, "min_speedup": -0.1},
        intermediate=[(0, "accuracy", 0.9), (1, "accuracy", 0.95)],
    )
    trial = store.trial("s", 0)
    assert (trial.state, trial.policy, trial.finetune_epochs, trial.worker) == (COMPLETE, policy(0.5), 1.0, "w")
    assert trial.metrics["latency_ms"] == 2.0 and trial.violations["max_accuracy_drop"] == 0.5
    record = store.study("s")
    assert record.spent == {"trials": 1, "failed": 0, "wall_s": 1.0, "cpu_s": 3.0}
    assert record.controller_state == {"n": 0} and record.counts == {COMPLETE: 1}
    with Session(store.engine) as session:
        metrics = dict(session.execute(select(MetricRow.name, MetricRow.value)).all())
        assert metrics == {"accuracy": 0.95, "latency_ms": 2.0, "cpu_s": 3.0}
        assert session.execute(text("SELECT violation FROM trials")).scalar() == 0.5
        assert session.execute(text("SELECT COUNT(*) FROM intermediate_values")).scalar() == 2
    with pytest.raises(RuntimeError, match="already complete"):
        finish(store, "s", 0, {"accuracy": 0.1, "latency_ms": 1.0}, {})
    store.close()


def test_shared_controller_state_hands_out_numbers_and_holds_the_trial_budget(store_url: str) -> None:
    store = StudyStore(store_url, create=True)
    new_study(store, trials=4)
    numbers = [take_trial(store, "s", policy(0.25), owner="b") for _ in range(5)]
    assert numbers == [0, 1, 2, 3, None]  # the budget of 4 counts running trials too
    with pytest.raises(StaleControllerState):  # written against a state that has moved on since
        store.start_trial("s", 4, policy(0.0), 1.0, {"events": []}, owner="b", expected_events=2)
    tell_trial(store, "s", 1, **finished(state=FAILED))
    assert take_trial(store, "s", policy(0.25), owner="b") is None  # a failed trial stays spent
    assert store.study("s").spent["failed"] == 1
    new_study(store, "t")
    store.start_trial("t", 0, policy(0.0), 1.0, {}, owner="controller:h:1")  # a controller-numbered trial
    with pytest.raises(RuntimeError, match="running under controller:h:1.*expected_events"):
        store.start_trial("t", 0, policy(0.0), 1.0, {}, owner="controller:h:2")  # another process's number
    store.close()


def test_a_failed_write_leaves_no_part_of_the_trial(store_url: str) -> None:
    """Crash consistency: an error inside finish_trial (here a NULL intermediate value the schema refuses)
    rolls the whole transaction back: the trial stays running and resumable, no metric rows, spent unchanged."""
    store = StudyStore(store_url, create=True)
    new_study(store)
    store.start_trial("s", 0, policy(0.5), 1.0, {"asked": 0})
    with pytest.raises(IntegrityError):
        finish(store, "s", 0, {"accuracy": 0.9, "latency_ms": 1.0}, {}, intermediate=[(0, "loss", None)])  # type: ignore[list-item]
    trial = store.trial("s", 0)
    assert trial.state == RUNNING and trial.metrics == {}
    assert store.study("s").spent["trials"] == 0 and store.study("s").controller_state == {"asked": 0}
    with Session(store.engine) as session:
        assert session.execute(select(MetricRow)).first() is None
    assert [t.number for t in store.queue_unfinished("s")] == [0]
    assert store.trial("s", 0).state == QUEUED
    store.close()


def synthetic_study(store: StudyStore, n: int, seed: int = 0) -> None:
    """`n` trials through the public life cycle: complete feasible, complete infeasible, failed, running;
    metric values on a coarse grid so that ties and duplicate points occur."""
    rng = random.Random(seed)
    new_study(store)
    for number in range(n):
        store.start_trial("s", number, policy(rng.choice([0.0, 0.5])), 1.0, {})
        kind = rng.random()
        if kind < 0.1:
            continue
        if kind < 0.2:
            finish(store, "s", number, {}, {}, state=FAILED)
            continue
        metrics = {"accuracy": rng.randint(80, 100) / 100, "latency_ms": rng.randint(1, 20) / 4}
        violations = {"max_accuracy_drop": rng.choice([-0.5, 0.0, 0.3, 1.2]), "min_speedup": rng.choice([-0.2, 0.4])}
        finish(store, "s", number, metrics, violations if kind < 0.6 else {"max_accuracy_drop": -1.0})


def test_leaderboard_ranks_like_the_reference_ranking(store_url: str) -> None:
    """The store's narrow-query ranking (with top-k loading) orders trials exactly as `rank_trials` over full
    records: feasible by front and accuracy, infeasible by total violation, the rest by number."""
    store = StudyStore(store_url, create=True)
    synthetic_study(store, 120)
    study = autocompress.Study("s", store)
    expected = rank_trials([t.as_mapping() for t in store.trials("s")], OBJECTIVES)
    board = study.leaderboard()
    assert [(r["trial"], r["feasible"], r["violation"]) for r in board] == [
        (e.number, e.feasible, None if e.violation == float("inf") else e.violation) for e in expected
    ]
    assert [r["pareto"] for r in board] == [e.pareto_front == 0 for e in expected]
    n_feasible = sum(r["feasible"] for r in board)
    n_complete = sum(r["state"] == COMPLETE for r in board)
    for top in (1, 7, n_feasible, n_feasible + 1, n_complete + 2, len(board) + 5):  # cuts in every group
        assert study.leaderboard(top=top) == board[:top]
    feasible = study.leaderboard(feasible_only=True)
    assert feasible and all(r["feasible"] for r in feasible)
    assert feasible == [r for r in board if r["feasible"]]
    assert study.pareto() == [r for r in board if r["pareto"]]
    assert {r["state"] for r in board[len(feasible) :]} >= {COMPLETE, FAILED, RUNNING}
    store.close()


def test_trials_dataframe_has_a_column_per_layer_setting_and_metric(store_url: str, tmp_path) -> None:
    store = StudyStore(store_url, create=True)
    synthetic_study(store, 12)
    frame = autocompress.Study("s", store).trials_dataframe()
    assert len(frame) == 12 and list(frame["number"]) == list(range(12))
    assert {
        "conv1/channel_sparsity",
        "conv1/weight_bits",
        "fc/weight_bits",
        "accuracy",
        "latency_ms",
        "violation/max_accuracy_drop",
    } <= set(frame.columns)
    path = autocompress.Study("s", store).to_parquet(tmp_path / "trials.parquet")
    back = pd.read_parquet(path)
    assert back.shape == frame.shape and list(back["conv1/channel_sparsity"]) == list(frame["conv1/channel_sparsity"])
    store.close()


def test_a_reader_in_a_long_transaction_does_not_block_the_writer(store_url: str) -> None:
    store = StudyStore(store_url, create=True)
    new_study(store)
    store.start_trial("s", 0, policy(0.5), 1.0, {})
    reader = StudyStore(store_url)
    with Session(reader.engine) as session, session.begin():
        session.execute(text("SELECT COUNT(*) FROM trials")).scalar()  # holds a read snapshot open
        done = threading.Event()
        writer = threading.Thread(
            target=lambda: (finish(store, "s", 0, {"accuracy": 0.9, "latency_ms": 1.0}, {}), done.set())
        )
        writer.start()
        assert done.wait(10), "the writer waited for the reader"
        writer.join()
    assert reader.trial("s", 0).state == COMPLETE
    reader.close()
    store.close()


def test_a_newer_schema_is_refused_not_changed(store_url: str) -> None:
    store = StudyStore(store_url, create=True)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    store.close()
    for create in (False, True):
        with pytest.raises(UserError, match="'9999' is newer than this autocompress"):
            StudyStore(store_url, create=create)
    engine = create_engine(store_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "9999"
    engine.dispose()


def test_a_foreign_database_is_refused_not_changed(store_url: str) -> None:
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE customers (id INTEGER PRIMARY KEY)"))
    with pytest.raises(UserError, match="not an autocompress store"):
        StudyStore(store_url, create=True)
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) == {"customers"}
    engine.dispose()
