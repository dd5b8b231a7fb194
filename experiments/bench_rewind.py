"""Where `lottery` should rewind within a fine-tuning budget: to the baseline's early checkpoint (Frankle et al.,
2020) or to the trained baseline (Renda et al., 2020), on the ResNet-like CNN at 50/75/90% zeros.

Both arms run the same `LotteryPruner` (3 rounds), trainer, seed and budget on the same trained model; only the
rewind point differs (the task's `early_checkpoint()`, kept after 5% of its 25 training epochs, or the trained
weights). No channel is removed, so the early checkpoint fits as it is. Validation accuracy of the float model.

    flock /tmp/autocompress-bench.lock env PYTHONPATH=. python -m experiments.bench_rewind
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from autocompress.compress import LotteryPruner, RewindPoint
from autocompress.runtime._trial import Gate, TaskTrainer
from autocompress.space import discover_layers
from experiments.tasks.cnn import resnet

OUT = Path(__file__).parent / "results"
SPARSITIES = (0.5, 0.75, 0.9)
BUDGETS = (2.0, 6.0)


def main() -> None:
    torch.set_num_threads(1)
    start = time.perf_counter()
    task = resnet
    early = task.early_checkpoint()
    if early is None:
        raise SystemExit("the resnet baseline is cached without an early checkpoint: delete its cache file")
    label = f"early (step {early.step} of {early.steps})"
    model = task.baseline_model()
    names = [layer.name for layer in discover_layers(model, task.example_input(1)) if layer.name != "fc"]
    baseline = task.evaluate(model, "val")
    rewound = task.baseline_model()
    rewound.load_state_dict(early.state)
    rows = []
    for sparsity in SPARSITIES:
        for epochs in BUDGETS:
            row = {"sparsity": sparsity, "epochs": epochs}
            for arm, point in (("trained", None), ("early", RewindPoint(early.state, label))):
                model = task.baseline_model()
                trainer = TaskTrainer(task, 0, Gate())
                if point is not None:
                    trainer.rewind = lambda point=point: point
                LotteryPruner().run(model, dict.fromkeys(names, sparsity), trainer, epochs)
                row[arm] = task.evaluate(model, "val")
            rows.append(row)
            print(row, flush=True)
    meta = {
        "baseline_val": baseline,
        "early_val": task.evaluate(rewound, "val"),
        "rewound_to": label,
        "train_epochs": task.train_epochs,
        "torch": torch.__version__,
        "wall_s": time.perf_counter() - start,
    }
    (OUT / "bench_rewind.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# Lottery: rewinding to early training or to the trained baseline",
        "",
        f"`experiments.tasks.cnn:resnet` (trained {task.train_epochs:g} epochs; val {baseline:.3f}; its early",
        f"checkpoint, {label}, scores {meta['early_val']:.3f}). `LotteryPruner` (3 rounds) zeroes the given share",
        "of every conv/linear weight but the classifier's within the fine-tuning budget; both arms share model,",
        "seed and budget, and differ only in the rewind point. Validation accuracy, float weights, 1 thread.",
        "",
        "| zeros | fine-tune epochs | rewound to trained | rewound to early |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['sparsity']:.0%} | {r['epochs']:g} | {r['trained']:.3f} | {r['early']:.3f} |" for r in rows]
    (OUT / "bench_rewind.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
