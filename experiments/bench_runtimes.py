"""Float and int8 on every deploy runtime, batch 1 and 32, same run: where does each model run fastest?

For each model: the float model and its all-int8 version (minmax, per-channel; the one QDQ ONNX of
`autocompress.deploy` for OpenVINO and ONNX Runtime, torch.ao FX for TorchScript) are lowered to every
installed runtime and timed interleaved (`compare_latency`, 1 thread, CPU time of the measuring thread), with
the accuracy each runtime gives where the task has data.

    taskset -c 1 python -m experiments.bench_runtimes [--models digits,resnet,...] [--repeats N]

Models: the experiment tasks (``digits``, ``resnet``, ``mobilenet``, ``densenet``, ``transformer``, ``minilm``:
trained, with accuracy, MiniLM's being its cosine to the float embeddings) and
torchvision ``tv_resnet18``, ``tv_mobilenet_v2``, ``tv_efficientnet_b0`` at 224x224 with random weights
(latency only; torchvision needs ``pip install --no-deps torchvision``). Writes
``experiments/results/bench_runtimes.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.deploy import RUNTIMES, LoweringError, installed_runtimes
from autocompress.measure import compare_latency
from autocompress.runtime._trial import measurement_clock
from autocompress.space import LayerSetting, Policy
from autocompress.task import load_task

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = {
    "digits": "experiments.tasks.digits:task",
    "resnet": "experiments.tasks.cnn:resnet",
    "mobilenet": "experiments.tasks.cnn:mobilenet",
    "densenet": "experiments.tasks.cnn:densenet",
    "transformer": "experiments.tasks.text:transformer",
    # the re-implemented encoder: static (minmax) int8 goes through torch.fx, which cannot trace the model as
    # transformers ships it (the MiniLM search uses dynamic int8 on that one)
    "minilm": "experiments.tasks.minilm:handwritten",
}
TORCHVISION = {"tv_resnet18": "resnet18", "tv_mobilenet_v2": "mobilenet_v2", "tv_efficientnet_b0": "efficientnet_b0"}


def torchvision_model(name: str) -> nn.Module:
    """A torchvision classifier with random weights; its compiled ops (nms, ...) are not needed, and their
    registration fails beside the CPU torch (STACK.md), so it is skipped."""
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision

    return getattr(torchvision.models, TORCHVISION[name])(weights=None).eval()


def int8_policy(model: nn.Module) -> Policy:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    return Policy.from_mapping({n: LayerSetting(weight_bits=8) for n in names}, "l1", "minmax")


def bench(name: str, repeats: int) -> dict[str, Any]:
    if name in TASKS:
        task: Any = load_task(TASKS[name])
        model, x1, x32 = task.baseline_model(), task.example_input(1), task.example_input(32)
        calibration = list(task.calibration_batches())
    else:
        task, model = None, torchvision_model(name)
        x1, x32 = torch.randn(1, 3, 224, 224), torch.randn(32, 3, 224, 224)
        calibration = [torch.randn(8, 3, 224, 224) for _ in range(2)]
    row: dict[str, Any] = {"model": name, "accuracy": {}, "lower_s": {}, "errors": {}}
    loaded = {}
    for kind, policy in (("fp32", Policy(())), ("int8", int8_policy(model))):
        for runtime in installed_runtimes():
            key = f"{kind}@{runtime}"
            start = time.perf_counter()
            try:
                artefact = RUNTIMES[runtime].lower(model, policy, x1, calibration)
            except LoweringError as exc:
                row["errors"][key] = str(exc)
                continue
            row["lower_s"][key] = round(time.perf_counter() - start, 2)
            loaded[key] = artefact
            if task is not None:
                row["accuracy"][key] = task.evaluate(RUNTIMES[runtime].load(artefact))
    clock = measurement_clock(1)
    for label, x, reps in (("b1", x1, repeats), ("b32", x32, max(3, repeats // 4))):
        models = {key: RUNTIMES[key.split("@")[1]].load(art) for key, art in loaded.items()}
        row[label] = compare_latency(models, x, threads=1, warmup=2, repeats=reps, clock=clock)
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    runtimes = installed_runtimes()
    cols = [f"{kind}@{rt}" for kind in ("fp32", "int8") for rt in runtimes]
    lines = [
        "| model, batch | " + " | ".join(cols) + " | best fp32 -> best int8 |",
        "|---|" + "---|" * (len(cols) + 1),
    ]
    for row in rows:
        for batch in ("b1", "b32"):
            times = row[batch]
            cells = [f"{times[c]:.3g}" if c in times else "-" for c in cols]
            fp32 = min((v, k) for k, v in times.items() if k.startswith("fp32"))
            int8 = min(((v, k) for k, v in times.items() if k.startswith("int8")), default=None)
            best = f"{fp32[0] / int8[0]:.2f}x ({fp32[1]} -> {int8[1]})" if int8 else "-"
            lines.append(f"| {row['model']}, {batch} | " + " | ".join(cells) + f" | {best} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join([*TASKS, *TORCHVISION]))
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        rows.append(bench(name, args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_runtimes.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / "bench_runtimes.md").write_text(
        "Median ms per call, 1 thread, CPU time of the measuring thread, all columns of a row in one interleaved "
        "run (`experiments/bench_runtimes.py`).\n\n" + markdown(rows)
    )
    print(markdown(rows))


if __name__ == "__main__":
    main()
