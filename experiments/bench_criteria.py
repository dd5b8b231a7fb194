"""Pruning criteria compared: accuracy after pruning 50% of the channels of every prunable layer and a short
fine-tune, per criterion, on the same trained model (default: the ResNet-like digits task).

Each criterion runs as a trial runs it: its `prepare` phase (activations, BN sparsity training, gradients)
on the trained model, then physical pruning, then ``--epochs`` of the task's fine-tuning, then evaluation
of the TorchScript model on the test split. A random ranking (torch-pruning's ``RandomImportance``) is the
floor. Every criterion prunes to the same widths, so params and MACs are equal across rows; seeds change
the fine-tuning's batch order (and the random ranking). Accuracy only, no latency; one torch thread.

    PYTHONPATH=. flock /tmp/autocompress-bench.lock python -m experiments.bench_criteria [--models resnet]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch_pruning as tp

from autocompress.compress import CRITERIA, prepare_criterion, prune
from autocompress.measure import count_macs, count_params, to_torchscript
from autocompress.space import LayerSetting, Policy, discover_layers
from autocompress.task import SupervisedTask
from experiments.tasks import cnn, text

OUT = Path(__file__).parent / "results"
MODELS: dict[str, SupervisedTask] = {
    "resnet": cnn.resnet,
    "mobilenet": cnn.mobilenet,
    "densenet": cnn.densenet,
    "transformer": text.transformer,
}
RANDOM = "random (floor)"


def run(task: SupervisedTask, criterion: str, sparsity: float, epochs: float, seed: int) -> dict[str, float]:
    model, x1 = task.baseline_model(), task.example_input(1)
    layers = discover_layers(model, x1)
    policy = Policy.from_mapping({i.name: LayerSetting(sparsity if i.prunable else 0.0) for i in layers}, criterion)
    start = time.perf_counter()
    if criterion == RANDOM:
        torch.manual_seed(seed)
        importance = tp.importance.RandomImportance()
    else:
        importance = prepare_criterion(criterion, model, task, epochs)
    prepare_s = time.perf_counter() - start
    prune(model, policy, x1, importance=importance)
    pruned_accuracy = task.evaluate(model)
    params, macs = count_params(model), sum(count_macs(model, x1).values())
    task.finetune(model, epochs, seed=seed)
    accuracy = task.evaluate(to_torchscript(model, x1))
    return {
        "accuracy": accuracy,
        "pruned_accuracy": pruned_accuracy,
        "prepare_s": prepare_s,
        "params": params,
        "macs": macs,
    }


def bench(name: str, criteria: list[str], sparsity: float, epochs: float, seeds: int) -> list[dict[str, object]]:
    task = MODELS[name]
    base = task.baseline_model()
    x1 = task.example_input(1)
    base_accuracy, base_params = task.evaluate(base), count_params(base)
    base_macs = sum(count_macs(base, x1).values())
    rows = []
    for criterion in criteria:
        runs = [run(task, criterion, sparsity, epochs, seed) for seed in range(seeds)]
        accuracies = [r["accuracy"] for r in runs]
        rows.append(
            {
                "model": name,
                "criterion": criterion,
                "sparsity": sparsity,
                "finetune_epochs": epochs,
                "seeds": seeds,
                "baseline_accuracy": base_accuracy,
                "accuracy_mean": statistics.mean(accuracies),
                "accuracy_min": min(accuracies),
                "accuracy_max": max(accuracies),
                "accuracies": accuracies,
                "pruned_accuracy": runs[0]["pruned_accuracy"],
                "prepare_s": statistics.mean(r["prepare_s"] for r in runs),
                "params_ratio": runs[0]["params"] / base_params,
                "macs_ratio": runs[0]["macs"] / base_macs,
            }
        )
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    return rows


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| model | criterion | accuracy after fine-tune: mean [min, max] | right after pruning | baseline "
        "| prepare s | params | MACs |",
        "|" + "---|" * 8,
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['criterion']} | {r['accuracy_mean']:.3f} [{r['accuracy_min']:.3f}, "
            f"{r['accuracy_max']:.3f}] | {r['pruned_accuracy']:.3f} | {r['baseline_accuracy']:.3f} "
            f"| {r['prepare_s']:.1f} | {r['params_ratio']:.2f}x | {r['macs_ratio']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet")
    parser.add_argument("--criteria", default=",".join(sorted(CRITERIA)))
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    criteria = [*args.criteria.split(","), RANDOM]
    rows = []
    start = time.perf_counter()
    for name in args.models.split(","):
        rows.extend(bench(name, criteria, args.sparsity, args.epochs, args.seeds))
    elapsed = time.perf_counter() - start
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_criteria.json").write_text(json.dumps(rows, indent=2) + "\n")
    (OUT / "bench_criteria.md").write_text(
        f"# bench_criteria: {args.sparsity:.0%} of the channels of every prunable layer, then "
        f"{args.epochs:g} epochs of fine-tuning\n\n"
        f"Accuracy on the test split of the TorchScript model, {args.seeds} fine-tuning seeds; 'right after "
        "pruning' is before any fine-tuning (seed 0); 'prepare s' is the criterion's own phase (activations on "
        "calibration batches, slim's BN sparsity training, taylor's gradient pass). One torch thread on a "
        f"2-core machine shared with other jobs ({elapsed:.0f} s in all); timings are indicative only.\n\n"
        + table(rows)
        + "\n"
    )
    print(f"({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
