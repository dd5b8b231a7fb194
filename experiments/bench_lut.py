"""The per-layer latency table on this machine: which weight bit-widths really run faster on which runtime.

For each model, `autocompress.runtime.measure_latency_table` (what a study of ``haq``, ``netadapt`` or ``amc``
with ``target_latency`` measures when it is created) is built at 4, 8 and 32 weight bits on every installed
runtime: each conv/linear layer alone, batch 1, one thread, CPU time of the measuring thread, at 25/50/75/100 %
of its prunable channels. The summary compares, per runtime, the table's prediction for the dense model at each
bit-width (overhead once plus every layer) with the whole dense model lowered at that bit-width (every conv and
linear; the same runtimes, timed interleaved), and counts the layers where int8 beats float and where 4-bit
differs from 8-bit by more than 5 %.

    nice python -m experiments.bench_lut [--models digits,mobilenet] [--repeats N] [--reuse]

``--reuse`` reads the tables a previous run wrote instead of measuring them again.

Writes ``experiments/results/bench_lut/{MODEL}.json`` (the tables) and ``experiments/results/bench_lut.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from autocompress.deploy import get_runtime, installed_runtimes, lower_all
from autocompress.measure import compare_latency
from autocompress.runtime import measure_latency_table
from autocompress.runtime._trial import measurement_clock
from autocompress.space import LatencyTable, Space, discover_layers, parse_space, resolve_space
from autocompress.task import Task, load_task

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = {"digits": "experiments.tasks.digits:task", "mobilenet": "experiments.tasks.cnn:mobilenet"}
BITS = (4, 8, 32)


def whole_models(task: Task, space: Space, repeats: int) -> dict[str, float]:
    """Milliseconds of the whole dense model at each of `BITS` on each runtime (``"RUNTIME/BITS"``), one
    interleaved run."""
    model, x = task.baseline_model(), task.example_input(1)
    runtimes = [get_runtime(name) for name in space.measure["runtimes"]]
    models = {}
    for bits in BITS:
        policy = space.policy_from_params({f"{n}/weight_bits": bits for n in space.layers})
        artefacts, _ = lower_all(runtimes, model, policy, x, task.calibration_batches())
        models.update({f"{name}/{bits}": get_runtime(name).load(art) for name, art in artefacts.items()})
    return compare_latency(models, x, warmup=5, repeats=repeats, clock=measurement_clock(1))


def summary(table: LatencyTable, whole: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for runtime in table.runtimes:
        layers = table.entries[runtime]
        dense = {b: table.total({}, dict.fromkeys(layers, b), runtime) for b in BITS}
        int8_faster = sum(by_bits[8][-1] < by_bits[32][-1] for by_bits in layers.values())
        four_vs_eight = [by_bits[4][-1] / by_bits[8][-1] for by_bits in layers.values()]
        rows.append(
            {
                "runtime": runtime,
                "overhead_ms": table.overhead[runtime],
                **{f"dense_{b}bit_ms": dense[b] for b in BITS},
                **{f"whole_{b}bit_ms": whole.get(f"{runtime}/{b}") for b in BITS},
                "layers": len(layers),
                "layers_int8_faster": int8_faster,
                "layers_4bit_differs_5pct": sum(abs(r - 1) > 0.05 for r in four_vs_eight),
                "median_4bit_over_8bit": statistics.median(four_vs_eight),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(TASKS))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    out = RESULTS / "bench_lut"
    out.mkdir(parents=True, exist_ok=True)
    runtimes = installed_runtimes()
    lines = [
        "# Per-layer latency table: dense model predicted at each weight bit-width",
        "",
        f"`python -m experiments.bench_lut --repeats {args.repeats}`; runtimes {', '.join(runtimes)}; ms at batch 1,",
        "1 thread, CPU time of the measuring thread; int8 faster / 4-bit differs count layers (width 100 %).",
        "",
        "| model | runtime | overhead | table: float / int8 / 4-bit | whole model: float / int8 / 4-bit "
        "| int8 faster | 4-bit vs 8-bit differs >5 % (median) | table built in |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in args.models.split(","):
        ref = TASKS[name]
        task = load_task(ref)
        text = (
            f"task: {ref}\ndefaults: {{channel_sparsity: [0.0, 0.5], weight_bits: {list(BITS)}}}\n"
            f"measure: {{threads: 1, repeats: {args.repeats}, warmup: 3, runtimes: {runtimes}}}\n"
        )
        space = resolve_space(parse_space(text), discover_layers(task.baseline_model(), task.example_input(1)))
        saved = out / f"{name}.json"
        if args.reuse and saved.exists():
            table = LatencyTable.from_dict(json.loads(saved.read_text()))
        else:
            table = measure_latency_table(space)
            saved.write_text(json.dumps(table.to_dict(), indent=1))
        whole = whole_models(task, space, args.repeats)
        for row in summary(table, whole):
            ms = {b: f"{row[f'whole_{b}bit_ms']:.3f}" if row[f"whole_{b}bit_ms"] else "-" for b in BITS}
            lines.append(
                f"| {name} | {row['runtime']} | {row['overhead_ms']:.3f} | {row['dense_32bit_ms']:.3f} / "
                f"{row['dense_8bit_ms']:.3f} / {row['dense_4bit_ms']:.3f} | {ms[32]} / {ms[8]} / {ms[4]} "
                f"| {row['layers_int8_faster']}/{row['layers']} | {row['layers_4bit_differs_5pct']}/{row['layers']} "
                f"({row['median_4bit_over_8bit']:.2f}) | {table.build_s:.0f} s |"
            )
        print("\n".join(lines), flush=True)
    (RESULTS / "bench_lut.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
