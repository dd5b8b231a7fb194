"""Runtime overhead per trial: time the search spends outside the trial function, with trivial trials.

Runs N trivial trials (no fine-tune, 3 latency repeats) on 2 Ray workers with the random strategy and
compares the search's wall time with the trials' own wall time: with K workers a perfect runtime would take
sum(trial wall) / K. Overhead per trial = (wall - sum(trial wall) / K) / N, which counts asking, the store's
transactions, artefact writes, Ray round trips and idle workers. Ray start-up and the baseline measurement
happen before the first trial and are reported apart. Writes experiments/results/bench_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import autocompress

SPACE = """
task: experiments.tasks.trivial:task
objectives: {accuracy: max, latency_ms: min}
constraints: {max_accuracy_drop: 0.05}
fidelity: {finetune_epochs: [0]}
defaults: {channel_sparsity: [0.0, 0.25, 0.5], weight_bits: [32]}
measure: {threads: 1, repeats: 3, warmup: 0}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--strategy", default="random")
    parser.add_argument("--demo-storage", default="sqlite:///demo-out/autocompress.db")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        space = Path(tmp) / "trivial.yaml"
        space.write_text(SPACE)
        started = time.monotonic()
        study = autocompress.search(
            space,
            study="overhead",
            storage=f"sqlite:///{tmp}/bench.db",
            strategy=args.strategy,
            trials=args.trials,
            workers=args.workers,
        )
        total = time.monotonic() - started
        trials = study.trials()
        search_wall = study.record.spent["wall_s"]
        trial_wall = sum(t.metrics["wall_s"] for t in trials if t.metrics)
        overhead = (search_wall - trial_wall / args.workers) / len(trials)
    result = {
        "trials": len(trials),
        "workers": args.workers,
        "strategy": args.strategy,
        "search_wall_s": round(search_wall, 2),
        "startup_s": round(total - search_wall, 2),
        "mean_trial_wall_s": round(trial_wall / len(trials), 4),
        "overhead_per_trial_ms": round(overhead * 1e3, 1),
    }
    try:
        demo = autocompress.load_study("demo", args.demo_storage).record
        result["demo_wall_s"] = round(demo.spent["wall_s"], 1)
        result["demo_trials"] = demo.spent["trials"]
        result["overhead_share_of_demo"] = round(overhead * demo.spent["trials"] / demo.spent["wall_s"], 4)
    except autocompress.UserError:
        result["demo_wall_s"] = None
    out = Path(__file__).parent / "results" / "bench_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
