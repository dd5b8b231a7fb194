"""Float vs real int8 (and int8 + 50% channels pruned) per model: latency at batch 1 and 32, accuracy.

All variants of a model are TorchScript (the export form) and are timed interleaved in one run, one torch
thread, median of repeats, so the speedups are same-run ratios robust to load from other processes.
The 4-bit row is simulated on int8 kernels: its latency is that of int8 (``latency_basis``), its size the
packed size at 4 bits. Goal (issue 5): int8 >= 2x and int8 + 50% channels >= 4x at batch 32 on the CNNs.

    PYTHONPATH=. RAY_AUTH_MODE=disabled python -m experiments.bench_quant [--models resnet,mobilenet]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from autocompress.compress import latency_basis, needs_training, prepare_quantization, prune, quantize
from autocompress.measure import compare_latency, count_packed_bytes, serialize, to_torchscript
from autocompress.space import LayerSetting, Policy, discover_layers
from autocompress.task import SupervisedTask
from experiments.tasks import cnn, text

OUT = Path(__file__).parent / "results" / "bench_quant"
MODELS: dict[str, SupervisedTask] = {
    "resnet": cnn.resnet,
    "mobilenet": cnn.mobilenet,
    "densenet": cnn.densenet,
    "transformer": text.transformer,
}
#: fine-tuning after 50% channel pruning, in epochs (accuracy right after pruning is at chance)
PRUNE_FINETUNE_EPOCHS = 4.0


def policy(task: SupervisedTask, sparsity: float, bits: int, quantizer: str = "histogram") -> Policy:
    layers = discover_layers(task.baseline_model(), task.example_input(1))
    settings = {info.name: LayerSetting(sparsity if info.prunable else 0.0, bits) for info in layers}
    return Policy.from_mapping(settings, quantizer=quantizer)


def build(task: SupervisedTask, pol: Policy, finetune_epochs: float) -> tuple[torch.jit.ScriptModule, int]:
    """The deployable model of `pol` (as a trial builds it) and its packed size in bytes."""
    x1 = task.example_input(1)
    model = prune(task.baseline_model(), pol, x1)
    packed = count_packed_bytes(model, pol)
    if needs_training(pol):
        model = prepare_quantization(model, pol, x1)
    if finetune_epochs > 0:
        task.finetune(model, finetune_epochs)
    return to_torchscript(quantize(model, pol, x1, task.calibration_batches()), x1), packed


def bench(name: str, task: SupervisedTask, repeats: int) -> list[dict[str, object]]:
    variants = {
        "float": (policy(task, 0.0, 32), 0.0),
        "int8": (policy(task, 0.0, 8), 0.0),
        "int4 (simulated)": (policy(task, 0.0, 4, "qat"), 1.0),
        "int8 + 50% channels": (policy(task, 0.5, 8), PRUNE_FINETUNE_EPOCHS),
    }
    built = {label: build(task, pol, epochs) for label, (pol, epochs) in variants.items()}
    scripts = {label: script for label, (script, _) in built.items()}
    with torch.inference_mode():
        b1 = compare_latency(scripts, task.example_input(1), threads=1, warmup=5, repeats=repeats)
        b32 = compare_latency(scripts, task.example_input(32), threads=1, warmup=3, repeats=repeats)
    rows = []
    for label, (pol, epochs) in variants.items():
        script, packed = built[label]
        rows.append(
            {
                "model": name,
                "variant": label,
                "quantizer": pol.quantizer if label != "float" else "-",
                "finetune_epochs": epochs,
                "accuracy": task.evaluate(script),
                "latency_ms": b1[label],
                "latency_ms_b32": b32[label],
                "speedup": b1["float"] / b1[label],
                "speedup_b32": b32["float"] / b32[label],
                "size_bytes": len(serialize(script)),
                "packed_bytes": packed,
                "latency_basis": latency_basis(pol),
            }
        )
    return rows


def table(rows: list[dict[str, object]]) -> str:
    head = (
        "| model | variant | quantizer | ft epochs | accuracy | b1 ms | b32 ms | speedup b1 "
        "| speedup b32 | file bytes | packed bytes | latency basis |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['quantizer']} | {r['finetune_epochs']:g} "
            f"| {r['accuracy']:.3f} | {r['latency_ms']:.3f} | {r['latency_ms_b32']:.2f} "
            f"| {r['speedup']:.2f}x | {r['speedup_b32']:.2f}x "
            f"| {r['size_bytes']} | {r['packed_bytes']} | {r['latency_basis']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.models.split(","):
        start = time.perf_counter()
        rows.extend(bench(name, MODELS[name], args.repeats))
        elapsed = time.perf_counter() - start
        print(table([r for r in rows if r["model"] == name]), f"\n({elapsed:.0f} s)", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    previous = json.loads((OUT / "results.json").read_text()) if (OUT / "results.json").exists() else []
    rerun = set(args.models.split(","))  # rows of models not re-run this time are kept
    rows = [r for r in previous if r["model"] not in rerun] + rows
    (OUT / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (OUT / "results.md").write_text(
        "# bench_quant: float vs FX x86 int8, same run, 1 thread, TorchScript\n\n"
        "int4 rows: weights and activations on the 4-bit grid, run on int8 kernels: latency is int8's "
        "(latency basis int8-kernel); packed bytes = storage at 4 bits.\n\n" + table(rows) + "\n"
    )


if __name__ == "__main__":
    main()
