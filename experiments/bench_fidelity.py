"""ASHA vs full fine-tuning at equal wall time on the digits task.

Both searches use TPE with the same seed, 2 Ray workers and the same wall-clock budget. `full` fine-tunes
every trial for the top rung's epochs; `asha` uses rungs [1, 3, 9] with eta 3 and promotes the top third.
Reported: trials run, fine-tune epochs (each trial's total: a promoted trial counts its rung's epochs), epochs
trained (what the search paid: a promoted trial that went on from its parent's weights trains only the extra
epochs), best feasible accuracy, and the hypervolume of (accuracy, speedup) over complete trials against the
reference point (accuracy 0.9, speedup 1.0).
Writes experiments/results/bench_fidelity.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import autocompress
from autocompress.store import hypervolume_2d

SPACE = """
task: experiments.tasks.digits:task
objectives: {{accuracy: max, latency_ms: min}}
constraints: {{max_accuracy_drop: 0.01, min_speedup: 1.5}}
fidelity: {{finetune_epochs: {rungs}, eta: 3}}
defaults: {{channel_sparsity: [0.0, 0.25, 0.5, 0.75], weight_bits: [8, 32]}}
layers:
  "stem.0": {{channel_sparsity: [0.0, 0.25, 0.5]}}
measure: {{threads: 1, repeats: 10, warmup: 2}}
"""
REFERENCE = (0.9, 1.0)


def run(name: str, rungs: list[float], budget: str, seed: int, tmp: Path) -> dict:
    space = tmp / f"{name}.yaml"
    space.write_text(SPACE.format(rungs=json.dumps(rungs)))
    study = autocompress.search(
        space,
        study=name,
        storage=f"sqlite:///{tmp}/{name}.db",
        strategy="tpe",
        seed=seed,
        time_budget=budget,
        workers=2,
    )
    complete = [t for t in study.trials() if t.state == "complete"]
    feasible = [t.metrics["accuracy"] for t in complete if all(v <= 0 for v in t.violations.values())]
    return {
        "mode": name,
        "rungs": rungs,
        "trials": len(complete),
        "finetune_epochs": sum(t.finetune_epochs for t in complete),
        "trained_epochs": sum(t.metrics["finetune_epochs"] - t.metrics.get("continued_epochs", 0.0) for t in complete),
        "best_feasible_accuracy": max(feasible) if feasible else None,
        "hypervolume": hypervolume_2d([(t.metrics["accuracy"], t.metrics["speedup"]) for t in complete], REFERENCE),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--time", default="150s")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            run("full", [9.0], args.time, args.seed, Path(tmp)),
            run("asha", [1.0, 3.0, 9.0], args.time, args.seed, Path(tmp)),
        ]
    out = Path(__file__).parent / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_fidelity.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "| mode | rungs | trials | fine-tune epochs | epochs trained | epochs/trial | best feasible acc "
        "| hypervolume |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        best = f"{r['best_feasible_accuracy']:.4f}" if r["best_feasible_accuracy"] else "none"
        lines.append(
            f"| {r['mode']} | {r['rungs']} | {r['trials']} | {r['finetune_epochs']:g} | {r['trained_epochs']:g} | "
            f"{r['finetune_epochs'] / max(r['trials'], 1):.2f} | {best} | {r['hypervolume']:.4f} |"
        )
    lines.append(f"\nWall budget {args.time} each, TPE seed {args.seed}, 2 Ray workers, reference point {REFERENCE}.")
    (out / "bench_fidelity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
