"""Every strategy vs `random` and `uniform` at an equal trial budget, on the ResNet-like and MobileNetV2-like
models (digits, 16x16), 3 seeds each; hypervolume of (accuracy, speedup at batch 1) against a fixed reference.

Trials are real (prune, fine-tune, int8, TorchScript, latency measured against the baseline in the same
process) but cheap, so the whole comparison fits on 2 cores: a quarter-epoch fine-tune, 5 latency repeats,
trials run inline one at a time. Cheap fine-tuning lowers every strategy's accuracy alike; absolute numbers
are not those of a full search. Studies go to `--storage` (a study already finished there is not run
again, so an interrupted benchmark resumes). Writes
experiments/results/bench_search/{results.csv,summary.md,hypervolume.png}.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
from pathlib import Path

import autocompress
from autocompress.store import hypervolume_2d

SPACE = """
task: experiments.tasks:{model}
objectives: {{accuracy: max, latency_ms: min}}
constraints: {{max_accuracy_drop: 0.02}}
fidelity: {{finetune_epochs: [0.25]}}
defaults: {{channel_sparsity: [0.0, 0.25, 0.5, 0.75], weight_bits: [8, 32]}}
measure: {{threads: 1, repeats: 5, warmup: 1}}
"""
REFERENCE = (0.8, 1.0)  # (accuracy, speedup): trials below 80 % accuracy or slower than the baseline add nothing
STRATEGIES = ("random", "uniform", "tpe", "nsga2", "anneal", "netadapt")
OUT = Path(__file__).parent / "results" / "bench_search"


def curve(study: autocompress.Study) -> list[float]:
    """Hypervolume after each finished trial (in trial-number order)."""
    points, values = [], []
    for trial in sorted(study.trials(), key=lambda t: t.number):
        if trial.state == "complete":
            points.append((trial.metrics["accuracy"], trial.metrics["speedup"]))
        values.append(hypervolume_2d(points, REFERENCE))
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["resnet", "mobilenet"])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--storage", default="sqlite:///.cache/bench_search.db")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows, curves = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            space = Path(tmp) / f"{model}.yaml"
            space.write_text(SPACE.format(model=model))
            for strategy in args.strategies:
                for seed in range(args.seeds):
                    name = f"{model}-{strategy}-{seed}"
                    try:
                        study = autocompress.load_study(name, args.storage)
                        if study.record.spent.get("trials", 0) < args.trials:
                            study = autocompress.resume(name, storage=args.storage, trials=args.trials,
                                                        executor="inline")
                    except autocompress.UserError:
                        study = autocompress.search(space, study=name, storage=args.storage, strategy=strategy,
                                                    seed=seed, trials=args.trials, executor="inline")
                    values = curve(study)
                    curves[(model, strategy, seed)] = values
                    baseline = study.record.baseline["accuracy"]
                    rows.append({"model": model, "strategy": strategy, "seed": seed, "trials": len(values),
                                 "hypervolume": round(values[-1], 5), "baseline_accuracy": round(baseline, 4)})
                    print(rows[-1], flush=True)
    with open(OUT / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"Hypervolume of (accuracy, speedup b1) vs reference {REFERENCE}, {args.trials} trials, "
             f"{args.seeds} seeds (mean ± std); ratio = mean / mean of random.", "",
             "| model | strategy | hypervolume | ratio vs random | ratio vs uniform |", "|---|---|---|---|---|"]
    for model in args.models:
        mean = {s: statistics.mean(r["hypervolume"] for r in rows if r["model"] == model and r["strategy"] == s)
                for s in args.strategies}
        for strategy in args.strategies:
            values = [r["hypervolume"] for r in rows if r["model"] == model and r["strategy"] == strategy]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            lines.append(f"| {model} | {strategy} | {mean[strategy]:.4f} ± {spread:.4f} | "
                         f"{ratio(mean[strategy], mean['random'])} | {ratio(mean[strategy], mean['uniform'])} |")
    (OUT / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(curves, args)


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}" if reference > 0 else ("n/a (0/0)" if value == 0 else "inf (reference 0)")


def plot(curves: dict, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.models), figsize=(6 * len(args.models), 4), squeeze=False)
    for ax, model in zip(axes[0], args.models, strict=True):
        for strategy in args.strategies:
            runs = [curves[(model, strategy, seed)] for seed in range(args.seeds)]
            length = min(len(r) for r in runs)
            mean = [statistics.mean(r[i] for r in runs) for i in range(length)]
            ax.plot(range(1, length + 1), mean, label=strategy)
        ax.set(title=f"{model}: hypervolume vs trials (mean of {args.seeds} seeds)", xlabel="finished trials",
               ylabel=f"hypervolume, reference {REFERENCE}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "hypervolume.png", dpi=110)


if __name__ == "__main__":
    main()
