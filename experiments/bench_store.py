"""Store at scale: leaderboard --top 10 on a 100k-trial study and loading a 10k-trial study for resume.

    python -m experiments.bench_store [--trials 100000] [--resume-trials 10000] [--postgres URL]

Synthetic trials are bulk-inserted (the search loop would take days to make 100k); the timed parts go through
the public code paths: `autocompress.cli.main(["leaderboard", ...])` in-process (interpreter start and the
~2.5 s import of torch/ray by the CLI are not counted; they are the same for every command) and the store
calls `resume` makes before its controller is rebuilt (`study`, `trials(complete)`, `queue_unfinished`).
Each figure is the median of `--repeats` runs. Results go to ``experiments/results/bench_store.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, select, text

from autocompress import cli
from autocompress.store import COMPLETE, FAILED, RUNNING, StudyStore, rank_trials, total_violation
from autocompress.store._models import MetricRow, TrialRow, utcnow

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
OBJECTIVES = {"accuracy": "max", "latency_ms": "min"}
CONSTRAINTS = {"max_accuracy_drop": 0.01, "min_speedup": 2.0}
LAYERS = [f"block{i}.conv" for i in range(12)]
RESULTS = Path(__file__).parent / "results" / "bench_store.json"


def synthetic_trials(store: StudyStore, name: str, n: int, seed: int, batch: int = 5000) -> None:
    """Create study `name` with `n` trials (85% complete, 10% failed, 5% running) written in bulk."""
    rng = random.Random(seed)
    events: list[list[Any]] = []
    for number in range(n):
        events += [["ask", number], ["tell", number, {"state": COMPLETE, "values": {}, "violations": {}}]]
    store.create_study(
        name=name,
        task="experiments.tasks.digits:task",
        strategy="random",
        seed=seed,
        space={"objectives": OBJECTIVES, "constraints": CONSTRAINTS},
        space_text="",
        budgets={"trials": n},
        baseline={"accuracy": 0.97, "latency_ms": 1.0},
        controller_state={"controller": "random", "seed": seed, "events": events},
    )
    with store.engine.begin() as conn:
        study_id = conn.execute(text("SELECT id FROM studies WHERE name = :n"), {"n": name}).scalar_one()
        conn.execute(text("UPDATE studies SET next_number = :n WHERE id = :s"), {"n": n, "s": study_id})
    now = utcnow()
    for lo in range(0, n, batch):
        trials, metrics = [], {}
        for number in range(lo, min(n, lo + batch)):
            kind = rng.random()
            state = COMPLETE if kind < 0.85 else FAILED if kind < 0.95 else RUNNING
            policy = {
                "layers": {
                    layer: {"channel_sparsity": rng.choice([0.0, 0.25, 0.5, 0.75]), "weight_bits": rng.choice([8, 32])}
                    for layer in LAYERS
                },
                "criterion": "l1",
            }
            m: dict[str, float] = {}
            viol: dict[str, float] = {}
            if state == COMPLETE:
                drop = max(0.0, rng.gauss(0.01, 0.01))
                speedup = rng.uniform(1.0, 4.0)
                m = {
                    "accuracy": 0.97 - drop,
                    "accuracy_drop": drop,
                    "speedup": speedup,
                    "latency_ms": 1.0 / speedup,
                    "size_bytes": rng.randint(10_000, 100_000),
                    "macs": rng.randint(10**5, 10**6),
                    "params": rng.randint(10**4, 10**5),
                    "cpu_s": 5.0,
                }
                viol = {"max_accuracy_drop": (drop - 0.01) / 0.01, "min_speedup": (2.0 - speedup) / 2.0}
            metrics[number] = m
            trials.append(
                {
                    "study_id": study_id,
                    "number": number,
                    "state": state,
                    "policy": policy,
                    "finetune_epochs": 1.0,
                    "metrics": m,
                    "violations": viol,
                    "violation": total_violation(viol) if state == COMPLETE else None,
                    "error": "",
                    "worker": "bench",
                    "attempts": 1,
                    "started_at": now,
                    "heartbeat_at": now,
                    "finished_at": None if state == RUNNING else now,
                }
            )
        with store.engine.begin() as conn:
            conn.execute(insert(TrialRow), trials)
            ids = conn.execute(
                select(TrialRow.number, TrialRow.id).where(
                    TrialRow.study_id == study_id, TrialRow.number >= lo, TrialRow.number < lo + batch
                )
            ).all()
            conn.execute(
                insert(MetricRow),
                [
                    {"trial_id": trial_id, "name": k, "value": float(v)}
                    for number, trial_id in ids
                    for k, v in metrics[number].items()
                ],
            )


def median_s(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cli_leaderboard(url: str, name: str) -> list[dict[str, Any]]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
        cli.main(["leaderboard", name, "--top", "10", "--format", "json", "--storage", url])
    return json.loads(buffer.getvalue())


def resume_reads(url: str, name: str) -> int:
    """What `autocompress resume` reads from the store before rebuilding its controller."""
    store = StudyStore(url)
    record = store.study(name)
    complete = store.trials(name, (COMPLETE,))
    queued = store.queue_unfinished(name, lambda owner, _: False)  # nothing abandoned: read-only here
    store.close()
    return len(record.controller_state["events"]) + len(complete) + len(queued)


def bench(url: str, trials: int, resume_trials: int, repeats: int) -> dict[str, Any]:
    store = StudyStore(url, create=True)
    started = time.perf_counter()
    synthetic_trials(store, "big", trials, seed=0)
    synthetic_trials(store, "resume", resume_trials, seed=1)
    insert_s = time.perf_counter() - started
    board = cli_leaderboard(url, "big")
    full = store.trials("big")
    reference = [r.number for r in rank_trials([t.as_mapping() for t in full], OBJECTIVES)[:10]]
    assert [row["trial"] for row in board] == reference, "top-10 differs from the full-record reference"
    result = {
        "insert_s": round(insert_s, 1),
        "leaderboard_top10_s": round(median_s(lambda: cli_leaderboard(url, "big"), repeats), 3),
        "rank_full_records_s": round(
            median_s(lambda: rank_trials([t.as_mapping() for t in store.trials("big")], OBJECTIVES), 1), 3
        ),
        "resume_load_s": round(median_s(lambda: resume_reads(url, "resume"), repeats), 3),
    }
    store.close()
    return result


@contextlib.contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    schema = f"ac_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--resume-trials", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--postgres", default=PG_URL, help="server URL, or '' to skip PostgreSQL")
    args = parser.parse_args()
    results: dict[str, Any] = {"trials": args.trials, "resume_trials": args.resume_trials, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = bench(f"sqlite:///{tmp}/bench.db", args.trials, args.resume_trials, args.repeats)
        print("sqlite", results["sqlite"], flush=True)
    if args.postgres:
        with postgres_schema(args.postgres) as url:
            results["postgresql"] = bench(url, args.trials, args.resume_trials, args.repeats)
        print("postgresql", results["postgresql"], flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
