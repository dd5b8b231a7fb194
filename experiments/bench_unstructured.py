"""Accuracy of the unstructured pruners (level, agp, lottery, admm) at 50/75/90% zeros, and of structured
ADMM against plain L2 channel pruning at 50% channels, on the ResNet-like CNN and the text transformer
(experiments.tasks.text).

Every row is a real trial (`run_trial`: prune, fine-tune, evaluate the TorchScript model, measure latency
interleaved with the baseline), float weights so that only pruning is compared. Unstructured zeros run on
dense kernels: the latency column shows they buy no speed (see bench_sparse for why no sparse kernel is used).

    flock /tmp/autocompress-bench.lock env PYTHONPATH=. python -m experiments.bench_unstructured [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from autocompress.runtime import run_trial
from autocompress.runtime._trial import cached_task
from autocompress.space import LayerSetting, Policy, discover_layers

OUT = Path(__file__).parent / "results"
MODELS = {"resnet": "experiments.tasks.cnn:resnet", "transformer": "experiments.tasks.text:transformer"}
PRUNERS = ("level", "agp", "lottery", "admm")
SPARSITIES = (0.5, 0.75, 0.9)
MEASURE = {"threads": 1, "repeats": 10, "warmup": 2}


def policies(ref: str) -> list[tuple[str, Policy]]:
    task = cached_task(ref)
    layers = discover_layers(task.baseline_model(), task.example_input(1))
    rows = []
    for sparsity in SPARSITIES:
        for pruner in PRUNERS:
            settings = {
                i.name: LayerSetting(0.0, 32, weight_sparsity=sparsity if i.name != "fc" else 0.0) for i in layers
            }
            rows.append((f"{pruner} {sparsity:.0%} weights", Policy.from_mapping(settings, pruner=pruner)))
    for criterion in ("l2", "admm"):
        settings = {i.name: LayerSetting(0.5 if i.prunable else 0.0, 32) for i in layers}
        rows.append((f"{criterion} 50% channels", Policy.from_mapping(settings, criterion=criterion)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--name", default="bench_unstructured", help="results file stem under experiments/results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = []
    for model, ref in MODELS.items():
        baseline = cached_task(ref).evaluate(cached_task(ref).baseline_model(), "val")  # as trials are
        for label, policy in policies(ref):
            m = run_trial(ref, policy, args.epochs, measure=MEASURE, train_threads=1).metrics
            rows.append(
                {
                    "model": model,
                    "policy": label,
                    "baseline_accuracy": baseline,
                    "accuracy": m["accuracy"],
                    "weight_sparsity": m["weight_sparsity"],
                    "params": m["params"],
                    "sparse_bytes": m["sparse_bytes"],
                    "packed_bytes": m["packed_bytes"],
                    "speedup": m["speedup"],
                    "wall_s": m["wall_s"],
                }
            )
            print(rows[-1], flush=True)
    meta = {
        "epochs": args.epochs,
        "torch": torch.__version__,
        "wall_s": time.perf_counter() - start,
        "note": "2-core machine shared with other agents; speedup is a same-run ratio",
    }
    (OUT / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# Unstructured pruners and structured ADMM",
        "",
        f"Real trials, {args.epochs:g} fine-tuning epochs, float weights, seed 0; speedup = baseline latency /",
        "latency at batch 1, same run (the 2-core machine was shared with other agents). Unstructured rows",
        "sparsify every conv/linear layer but the classifier; sparse_bytes: bitmask + nonzero values (float32).",
        "",
        "| model | policy | accuracy (baseline) | measured zeros | params | sparse / dense bytes | speedup |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['policy']} | {r['accuracy']:.3f} ({r['baseline_accuracy']:.3f}) | "
        f"{r['weight_sparsity']:.1%} | {r['params']:.0f} | {r['sparse_bytes'] / r['packed_bytes']:.2f} | "
        f"{r['speedup']:.2f}x |"
        for r in rows
    ]
    (OUT / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
