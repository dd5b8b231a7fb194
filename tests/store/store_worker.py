"""A process that writes or reads one study, for the concurrency test (``python store_worker.py ROLE URL STUDY``).

It prints ``ready`` once the store is open, waits for the file named by ``$GO``, then as ``writer`` starts
and finishes trials until the budget is taken (printing each number), or as ``reader`` runs leaderboards
until the file ``$GO.done`` appears (printing how many it ran). Writers take numbers as the search loop
does: from the study's shared controller state, written back by compare-and-swap (`take_trial`).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from autocompress.store import COMPLETE, StaleControllerState, StudyStore
from autocompress.study import Study


def take_trial(store: StudyStore, study: str, policy: dict[str, Any], owner: str) -> int | None:
    """Start the next trial as processes sharing a study do: its number is the count of asks in the stored
    controller state (a minimal controller: an event log), written back with `expected_events`; None when
    the study's trial budget is taken."""
    while True:
        events = store.controller_state(study).get("events", [])
        number = sum(event[0] == "ask" for event in events)
        try:
            state = {"events": [*events, ["ask", number]]}
            store.start_trial(study, number, policy, 1.0, state, owner=owner, expected_events=len(events))
            return number
        except StaleControllerState:
            limit = store.study(study).budgets.get("trials")
            if limit is not None and sum(store.trial_counts(study).values()) >= limit:
                return None


def tell_trial(store: StudyStore, study: str, number: int, **finish: Any) -> None:
    """Finish trial `number`, appending its tell to the shared controller state by compare-and-swap."""
    while True:
        events = store.controller_state(study).get("events", [])
        state = {"events": [*events, ["tell", number]]}
        try:
            store.finish_trial(study, number, controller_state=state, expected_events=len(events), **finish)
            return
        except StaleControllerState:
            continue


def main(role: str, url: str, study: str) -> None:
    store = StudyStore(url)
    go = Path(os.environ["GO"])
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.01)
    if role == "writer":
        policy = {"layers": {"conv1": {"channel_sparsity": 0.5, "weight_bits": 8}}, "criterion": "l1"}
        while (number := take_trial(store, study, policy, owner=f"writer:{os.getpid()}")) is not None:
            time.sleep(0.01)  # the trial runs outside any transaction, as in a search
            tell_trial(
                store,
                study,
                number,
                state=COMPLETE,
                metrics={"accuracy": 0.9 + number * 1e-4, "latency_ms": 1.0, "cpu_s": 1.0},
                violations={},
                error="",
                worker=str(os.getpid()),
                intermediate=[(0, "accuracy", 0.5)],
                artefacts=[],
                spent={"wall_s": 0.0},
            )
            print(number, flush=True)
    else:
        reads = 0
        done = Path(f"{go}.done")
        while not done.exists():
            Study(study, store).leaderboard(top=10)
            store.study(study)
            reads += 1
            time.sleep(0.02)  # a user re-running leaderboards, not a busy loop hogging the 2 cores
        print(f"reads {reads}", flush=True)
    store.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
