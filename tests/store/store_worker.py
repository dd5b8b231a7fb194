"""A process that writes or reads one study, for the concurrency test (``python store_worker.py ROLE URL STUDY``).

It prints ``ready`` once the store is open, waits for the file named by ``$GO``, then as ``writer`` starts
and finishes trials with store-allocated numbers until the budget is taken (printing each number), or as
``reader`` runs leaderboards until the file ``$GO.done`` appears (printing how many it ran).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from autocompress.store import COMPLETE, StudyStore
from autocompress.study import Study


def main(role: str, url: str, study: str) -> None:
    store = StudyStore(url)
    go = Path(os.environ["GO"])
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.01)
    if role == "writer":
        policy = {"layers": {"conv1": {"channel_sparsity": 0.5, "weight_bits": 8}}, "criterion": "l1"}
        while (number := store.allocate_trial(study, policy, 1.0, owner=f"writer:{os.getpid()}")) is not None:
            time.sleep(0.01)  # the trial runs outside any transaction, as in a search
            store.finish_trial(
                study,
                number,
                state=COMPLETE,
                metrics={"accuracy": 0.9 + number * 1e-4, "latency_ms": 1.0, "cpu_s": 1.0},
                violations={},
                error="",
                worker=str(os.getpid()),
                intermediate=[(0, "accuracy", 0.5)],
                artefacts=[],
                controller_state={"last": number},
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
