"""Which int8 lowering to ship: torch.ao FX (x86) as TorchScript, or pt2e (torchao's X86InductorQuantizer) under
torch.compile, measured on this CPU in one run.

Variants of each model, timed interleaved (one torch thread, median of repeats, batch 1 and 32):
- ``float TorchScript``: the baseline every speedup is measured against (the export form);
- ``FX int8 TorchScript``: what autocompress ships (`autocompress.compress.quantize`, then TorchScript);
- ``float compiled``: torch.compile of the float model (freezing on), to separate compiler gains from int8 gains;
- ``pt2e int8 compiled``: torchao pt2e static int8 with the X86 inductor quantizer, then torch.compile.

Needs torchao (``pip install torch==2.13.0 torchao``); not part of ``make test``. Writes
experiments/results/bench_lowering.{json,md}.

    PYTHONPATH=. RAY_AUTH_MODE=disabled python -m experiments.bench_lowering [--models resnet,mobilenet]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from autocompress.compress import quantize
from autocompress.measure import compare_latency, to_torchscript
from autocompress.space import LayerSetting, Policy, discover_layers
from autocompress.task import SupervisedTask
from experiments.tasks import cnn

OUT = Path(__file__).parent / "results"
MODELS: dict[str, SupervisedTask] = {"resnet": cnn.resnet, "mobilenet": cnn.mobilenet}


def int8_policy(task: SupervisedTask) -> Policy:
    layers = discover_layers(task.baseline_model(), task.example_input(1))
    return Policy.from_mapping({info.name: LayerSetting(0.0, 8) for info in layers})


def pt2e_int8(task: SupervisedTask) -> torch.nn.Module:
    """Static int8 through torchao's pt2e flow, calibrated on the task's calibration batches."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config())
    # exported with a dynamic batch from a calibration batch: a size-1 example would specialise the graph to 1
    sample = next(iter(task.calibration_batches()))
    exported = torch.export.export(task.baseline_model(), (sample,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    exported = exported.module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for calibration in task.calibration_batches():
            prepared(calibration)
    return convert_pt2e(prepared)


def compiled(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    return torch.compile(model)


def bench(name: str, task: SupervisedTask, repeats: int) -> list[dict[str, object]]:
    x1 = task.example_input(1)
    rows: list[dict[str, object]] = []
    base = to_torchscript(task.baseline_model(), x1)
    ours = to_torchscript(quantize(task.baseline_model(), int8_policy(task), x1, task.calibration_batches()), x1)
    accuracy = {"float TorchScript": task.evaluate(base), "FX int8 TorchScript": task.evaluate(ours)}
    latency: dict[int, dict[str, float]] = {}
    for batch in (1, 32):
        x = task.example_input(batch)
        with torch.no_grad():
            variants = {
                "float TorchScript": base,
                "FX int8 TorchScript": ours,
                "float compiled": compiled(task.baseline_model()),
                "pt2e int8 compiled": compiled(pt2e_int8(task)),
            }
            for model in variants.values():  # compile outside the timed loop
                model(x)
            if batch == 32:  # accuracy of the compiled models on the test split, in batches of 32
                for label in ("float compiled", "pt2e int8 compiled"):
                    accuracy[label] = _accuracy(variants[label], task)
        latency[batch] = compare_latency(variants, x, threads=1, warmup=5, repeats=repeats)
    for label in latency[1]:
        rows.append(
            {
                "model": name,
                "variant": label,
                "accuracy": accuracy[label],
                "latency_ms": latency[1][label],
                "latency_ms_b32": latency[32][label],
                "speedup": latency[1]["float TorchScript"] / latency[1][label],
                "speedup_b32": latency[32]["float TorchScript"] / latency[32][label],
            }
        )
    return rows


@torch.no_grad()
def _accuracy(model: Callable[[torch.Tensor], torch.Tensor], task: SupervisedTask) -> float:
    """Test accuracy in full batches of 32 (the shape the model was compiled for); the remainder is dropped."""
    x, y = task.data["test"]
    usable = len(x) // 32 * 32
    correct = sum(int((model(x[i : i + 32]).argmax(1) == y[i : i + 32]).sum()) for i in range(0, usable, 32))
    return correct / usable


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| model | variant | accuracy | b1 ms | b32 ms | speedup b1 | speedup b32 |", "|" + "---|" * 7]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['accuracy']:.3f} | {r['latency_ms']:.3f} "
            f"| {r['latency_ms_b32']:.2f} | {r['speedup']:.2f}x | {r['speedup_b32']:.2f}x |"
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
        print(table([r for r in rows if r["model"] == name]), f"\n({time.perf_counter() - start:.0f} s)", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_lowering.json").write_text(json.dumps(rows, indent=2) + "\n")
    (OUT / "bench_lowering.md").write_text(
        "# bench_lowering: FX int8 (TorchScript, shipped) vs pt2e int8 under torch.compile, same run\n\n"
        "1 torch thread, median of repeats, speedups vs float TorchScript; compiled accuracy on the test split in "
        "full batches of 32.\n\n" + table(rows) + "\n"
    )


if __name__ == "__main__":
    main()
