"""Every strategy vs `random` and `uniform` at an equal trial budget, on the ResNet-like and MobileNetV2-like
models (digits, 16x16), 3 seeds each; hypervolume of (accuracy, speedup at batch 1) against a fixed reference.

Trials are real (prune, fine-tune, int8, TorchScript, latency measured against the baseline in the same
process) but cheap, so the comparison fits on 2 shared cores: a short fine-tune (``--finetune``, epochs),
few latency repeats (``--repeats``), trials run inline one at a time. Cheap fine-tuning lowers every
strategy's accuracy alike; absolute numbers are not those of a full search. Writes
experiments/results/bench_search/{results.csv,summary.md,hypervolume.png}.

Each finished study appends one row (with its hypervolume curve) to results.csv at once, and runs already in
that file are skipped, so the benchmark can be split over several invocations; ``--report`` only rewrites the
table and plot from the file.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
from pathlib import Path

import autocompress
from autocompress.store import hypervolume_2d

SPACE = """
task: experiments.tasks.cnn:{model}
objectives: {{accuracy: max, latency_ms: min}}
constraints: {{max_accuracy_drop: 0.02}}
fidelity: {{finetune_epochs: [{finetune}]}}
defaults: {{channel_sparsity: [0.0, 0.25, 0.5, 0.75], weight_bits: [8, 32]}}
measure: {{threads: 1, repeats: {repeats}, warmup: 1}}
"""
REFERENCE = (0.8, 1.0)  # (accuracy, speedup): trials below 80 % accuracy or slower than the baseline add nothing
STRATEGIES = ("random", "uniform", "tpe", "nsga2", "anneal", "netadapt", "amc", "haq", "autocompress")
FIELDS = [
    "model",
    "strategy",
    "seed",
    "trials",
    "hypervolume",
    "baseline_accuracy",
    "best_accuracy",
    "best_speedup",
    "wall_s",
    "curve",
]
OUT = Path(__file__).parent / "results" / "bench_search"


def curve(study: autocompress.Study) -> list[float]:
    """Hypervolume after each finished trial (in trial-number order)."""
    points, values = [], []
    for trial in sorted(study.trials(), key=lambda t: t.number):
        if trial.state == "complete":
            points.append((trial.metrics["accuracy"], trial.metrics["speedup"]))
        values.append(hypervolume_2d(points, REFERENCE))
    return values


def load_rows() -> list[dict]:
    path = OUT / "results.csv"
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [
            {
                **row,
                "seed": int(row["seed"]),
                "hypervolume": float(row["hypervolume"]),
                "curve": json.loads(row["curve"]),
            }
            for row in csv.DictReader(handle)
        ]


def append_row(row: dict) -> None:
    path = OUT / "results.csv"
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({**row, "curve": json.dumps(row["curve"])})


def run(args: argparse.Namespace) -> None:
    done = {(r["model"], r["strategy"], r["seed"]) for r in load_rows()}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:  # seed outermost: complete comparisons first if the run is cut short
            for model in args.models:
                space = Path(tmp) / f"{model}.yaml"
                space.write_text(SPACE.format(model=model, finetune=args.finetune, repeats=args.repeats))
                for strategy in args.strategies:
                    if (model, strategy, seed) in done:
                        continue
                    study = autocompress.search(
                        space,
                        study=f"{model}-{strategy}-{seed}",
                        storage=f"sqlite:///{tmp}/bench.db",
                        strategy=strategy,
                        seed=seed,
                        trials=args.trials,
                        executor="inline",
                    )
                    values = curve(study)
                    complete = [t.metrics for t in study.trials() if t.state == "complete"]
                    row = {
                        "model": model,
                        "strategy": strategy,
                        "seed": seed,
                        "trials": len(values),
                        "hypervolume": round(values[-1], 5),
                        "baseline_accuracy": round(study.record.baseline["accuracy"], 4),
                        "best_accuracy": round(max(m["accuracy"] for m in complete), 4),
                        "best_speedup": round(max(m["speedup"] for m in complete), 3),
                        "wall_s": round(study.record.spent.get("wall_s", 0.0), 1),
                        "curve": values,
                    }
                    append_row(row)
                    print({k: v for k, v in row.items() if k != "curve"}, flush=True)


def report(args: argparse.Namespace) -> None:
    rows = load_rows()
    models = [m for m in args.models if any(r["model"] == m for r in rows)]
    strategies = [s for s in args.strategies if any(r["strategy"] == s for r in rows)]
    lines = [
        f"Hypervolume of (accuracy, speedup b1) vs reference {REFERENCE}, {args.trials} trials per study, "
        f"{args.finetune} fine-tune epochs and {args.repeats} latency repeats per trial, trials inline one at a "
        "time, latency on one thread's CPU time; "
        "seeds as listed (mean ± std); ratio = mean / mean of random (or uniform).",
        "",
        "| model | strategy | seeds | hypervolume | vs random | vs uniform | best acc | best speedup |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in models:
        by = {s: [r for r in rows if r["model"] == model and r["strategy"] == s] for s in strategies}
        mean = {s: statistics.mean(r["hypervolume"] for r in by[s]) for s in strategies if by[s]}
        for strategy in strategies:
            if not by[strategy]:
                continue
            values = [r["hypervolume"] for r in by[strategy]]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            ratio = {b: f"{mean[strategy] / mean[b]:.2f}" if mean.get(b) else "n/a" for b in ("random", "uniform")}
            lines.append(
                f"| {model} | {strategy} | {len(values)} | {mean[strategy]:.4f} ± {spread:.4f} | "
                f"{ratio['random']} | {ratio['uniform']} | "
                f"{statistics.mean(float(r['best_accuracy']) for r in by[strategy]):.3f} | "
                f"{statistics.mean(float(r['best_speedup']) for r in by[strategy]):.2f} |"
            )
    (OUT / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot({(r["model"], r["strategy"], r["seed"]): r["curve"] for r in rows}, models, strategies)


def main() -> None:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=OUT, help="folder of results.csv, summary.md, hypervolume.png")
    parser.add_argument("--models", nargs="+", default=["resnet", "mobilenet"])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--finetune", type=float, default=0.25, help="fine-tune epochs per trial")
    parser.add_argument("--repeats", type=int, default=5, help="latency repeats per batch size")
    parser.add_argument("--report", action="store_true", help="only rewrite the table and plot from results.csv")
    args = parser.parse_args()
    OUT = args.out
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.report:
        run(args)
    report(args)


def plot(curves: dict, models: list[str], strategies: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for strategy in strategies:
            runs = [c for (m, s, _), c in curves.items() if m == model and s == strategy]
            if not runs:
                continue
            length = min(len(r) for r in runs)
            mean = [statistics.mean(r[i] for r in runs) for i in range(length)]
            ax.plot(range(1, length + 1), mean, label=strategy)
        ax.set(
            title=f"{model}: hypervolume vs trials (mean over seeds)",
            xlabel="finished trials",
            ylabel=f"hypervolume, reference {REFERENCE}",
        )
        ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "hypervolume.png", dpi=110)


if __name__ == "__main__":
    main()
