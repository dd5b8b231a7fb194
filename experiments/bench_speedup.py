"""Does removing channels buy the speed its MACs promise? MACs ratio vs measured latency ratio per model.

For each model (ResNet-, MobileNetV2-, DenseNet-like CNNs on 16x16 digits, the transformer on the text task)
every prunable layer loses the same fraction of its output channels (25/50/75%, L1), with exact channel
counts and with the kept counts rounded to multiples of 8 and of 16 (``round_to``; a rounded variant is kept
only where it changes a width). The baseline and all its pruned variants are TorchScript (the export form),
timed interleaved in one run, one torch thread, median of repeats, at batch 1 and 32. Latency needs no
fine-tuning: the models are untrained (seeded).

Goal (issue 4): measured speedup >= 0.8x the MACs ratio at batch 32 for the CNNs. Two columns say why a row
falls short or beats it: the share of batch-32 time in the MAC-carrying ops (convolutions, matrix products;
the rest, with batch norm folded away, is activations, adds, concatenation copies, pooling, softmax, layer
norm and per-op dispatch, which shrink only linearly in channels or not at all), and the MACs per second the
kernels reach at the pruned widths (oneDNN's convolutions run faster per MAC at some channel counts than at
others, so a ratio can exceed the MACs ratio as well as fall short of it).

    flock /tmp/autocompress-bench.lock env PYTHONPATH=. python -m experiments.bench_speedup [--repeats 60] [--runs 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from torch import nn

from autocompress.compress import prune
from autocompress.measure import compare_latency, count_macs, count_params, to_torchscript
from autocompress.space import LayerSetting, Policy, discover_layers
from experiments.models import DenseNetLike, MobileNetV2Like, ResNetLike
from experiments.tasks import text
from experiments.tasks.digits import load_digits_splits

OUT = Path(__file__).parent / "results"
SPARSITIES = (0.25, 0.5, 0.75)
BATCHES = (1, 32)
#: profiled aten ops that carry the MACs (what `count_macs` counts); everything else is overhead to MACs
MAC_OPS = ("conv", "addmm", "matmul", "mm", "bmm", "linear")


@dataclass(frozen=True)
class Case:
    """A model to prune and the input batch it runs on (the first `batch` rows of `inputs`)."""

    factory: Callable[[], nn.Module]
    inputs: Callable[[int], torch.Tensor]


def _digits(batch: int) -> torch.Tensor:
    x, _ = load_digits_splits()["test"]
    return x[:batch].clone()


def _sentences(batch: int) -> torch.Tensor:
    x, _ = text.text_splits()["test"]
    return x[:batch].clone()


CASES: dict[str, Case] = {
    "resnet": Case(ResNetLike, _digits),
    "mobilenet": Case(MobileNetV2Like, _digits),
    "densenet": Case(DenseNetLike, _digits),
    "transformer": Case(text.text_transformer, _sentences),
}


@dataclass(frozen=True)
class Row:
    """One pruned variant against its baseline. Speedups are baseline time / variant time at batch 1 and at
    the largest batch ("b32"), by wall clock and by the calling thread's CPU time (see `CLOCKS`)."""

    model: str
    sparsity: float
    round_to: int | None
    macs_ratio: float
    params_ratio: float
    speedup_b1: float
    speedup_b32: float
    cpu_speedup_b1: float
    cpu_speedup_b32: float
    #: cpu_speedup_b32 / macs_ratio: 1.0 means compute time fell exactly as MACs did
    efficiency_b32: float
    #: share of batch-32 time in MAC-carrying ops
    mac_share_b32: float
    #: MACs executed per CPU second at batch 32 (billions): how efficiently the kernels run at these widths
    gmacs_per_s_b32: float
    latency_ms_b1: float
    latency_ms_b32: float
    #: lowest and highest cpu_speedup_b32 over repeated runs (`combine_runs`); equal for a single run
    cpu_speedup_b32_range: tuple[float, float] = (math.nan, math.nan)


#: wall time is what a user waits; thread CPU time leaves out preemption by other work on a shared machine
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def uniform_policy(model: nn.Module, example: torch.Tensor, sparsity: float) -> Policy:
    """`sparsity` on every prunable layer (L1), the others untouched."""
    layers = discover_layers(model, example)
    return Policy.from_mapping({i.name: LayerSetting(sparsity if i.prunable else 0.0) for i in layers}, "l1")


def mac_share(script: torch.jit.ScriptModule, inputs: torch.Tensor, runs: int = 20) -> float:
    """Fraction of self CPU time spent in the aten ops of `MAC_OPS`, over `runs` profiled calls."""
    with torch.inference_mode():
        script(inputs)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                script(inputs)
    total = mac = 0.0
    for event in prof.key_averages():
        total += event.self_cpu_time_total
        if event.key.startswith("aten::") and any(op in event.key for op in MAC_OPS):
            mac += event.self_cpu_time_total
    return mac / total if total else 0.0


def bench_model(
    name: str,
    case: Case,
    *,
    sparsities: tuple[float, ...] = SPARSITIES,
    round_tos: tuple[int | None, ...] = (None, 8, 16),
    batches: tuple[int, ...] = BATCHES,
    repeats: int = 40,
    warmup: int = 5,
) -> list[Row]:
    """Prune `case`'s model at each sparsity and rounding, time all variants against the baseline in one run.

    A variant whose widths equal an earlier one's (rounding changed nothing) or the baseline's (rounding
    kept every channel) is dropped.
    """
    torch.manual_seed(0)
    base = case.factory().eval()
    x1 = case.inputs(1)
    variants: dict[str, tuple[float, int | None, nn.Module]] = {"baseline": (0.0, None, base)}
    widths = {tuple(tuple(p.shape) for p in base.parameters())}
    for sparsity in sparsities:
        policy = uniform_policy(base, x1, sparsity)
        for round_to in round_tos:
            model = prune(copy.deepcopy(base), policy, x1, round_to=round_to)
            shape = tuple(tuple(p.shape) for p in model.parameters())
            if shape not in widths:
                widths.add(shape)
                variants[f"{sparsity:g}/{round_to}"] = (sparsity, round_to, model)
    scripts = {key: to_torchscript(model, x1) for key, (_, _, model) in variants.items()}
    ms = {
        (clock_name, b): compare_latency(
            scripts, case.inputs(b), threads=1, warmup=warmup, repeats=repeats, clock=clock
        )
        for b in batches
        for clock_name, clock in CLOCKS.items()
    }
    small, big = min(batches), max(batches)
    base_macs, base_params = sum(count_macs(base, x1).values()), count_params(base)
    rows = []
    for key, (sparsity, round_to, model) in variants.items():
        speedup = {(c, b): ms[c, b]["baseline"] / ms[c, b][key] for c in CLOCKS for b in batches}
        macs_ratio = base_macs / sum(count_macs(model, x1).values())
        rows.append(
            Row(
                model=name,
                sparsity=sparsity,
                round_to=round_to,
                macs_ratio=macs_ratio,
                params_ratio=base_params / count_params(model),
                speedup_b1=speedup["wall", small],
                speedup_b32=speedup["wall", big],
                cpu_speedup_b1=speedup["cpu", small],
                cpu_speedup_b32=speedup["cpu", big],
                efficiency_b32=speedup["cpu", big] / macs_ratio,
                mac_share_b32=mac_share(scripts[key], case.inputs(big)),
                gmacs_per_s_b32=base_macs / macs_ratio * big / ms["cpu", big][key] / 1e6,
                latency_ms_b1=ms["wall", small][key],
                latency_ms_b32=ms["wall", big][key],
            )
        )
    return rows


def combine_runs(runs: list[list[Row]]) -> list[Row]:
    """One row per variant: the median of every measured field over `runs` (same variants, same order), and
    the range of the b32 CPU-time speedup, which shows how much the shared machine moved the ratios."""
    measured = [
        f.name for f in fields(Row) if f.type == "float" and f.name not in ("sparsity", "macs_ratio", "params_ratio")
    ]
    combined = []
    for variants in zip(*runs, strict=True):
        speedups = [v.cpu_speedup_b32 for v in variants]
        medians = {name: statistics.median(getattr(v, name) for v in variants) for name in measured}
        combined.append(replace(variants[0], **medians, cpu_speedup_b32_range=(min(speedups), max(speedups))))
    return combined


def table(rows: list[Row]) -> str:
    head = (
        "| model | channels removed | round_to | MACs ratio | params ratio | speedup b1 wall / cpu "
        "| speedup b32 wall / cpu | b32 cpu speedup / MACs ratio | MAC-op time share b32 | GMAC/s b32 "
        "| b32 cpu speedup range over runs | b1 ms | b32 ms |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        goal = "" if r.sparsity == 0 or r.model == "transformer" or r.efficiency_b32 >= 0.8 else " (below 0.8)"
        lines.append(
            f"| {r.model} | {r.sparsity:.0%} | {r.round_to or '-'} | {r.macs_ratio:.2f}x | {r.params_ratio:.2f}x "
            f"| {r.speedup_b1:.2f}x / {r.cpu_speedup_b1:.2f}x | {r.speedup_b32:.2f}x / {r.cpu_speedup_b32:.2f}x "
            f"| {r.efficiency_b32:.2f}{goal} | {r.mac_share_b32:.0%} | {r.gmacs_per_s_b32:.1f} "
            f"| {r.cpu_speedup_b32_range[0]:.2f}-{r.cpu_speedup_b32_range[1]:.2f}x "
            f"| {r.latency_ms_b1:.3f} | {r.latency_ms_b32:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3, help="whole measurements per model, medians reported")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows: list[Row] = []
    started = time.perf_counter()
    for name in args.models.split(","):
        start = time.perf_counter()
        model_rows = combine_runs([bench_model(name, CASES[name], repeats=args.repeats) for _ in range(args.runs)])
        rows.extend(model_rows)
        print(table(model_rows), f"\n({time.perf_counter() - start:.0f} s)", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {
        "repeats": args.repeats,
        "runs": args.runs,
        "threads": 1,
        "batches": list(BATCHES),
        "torch": torch.__version__,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (OUT / "bench_speedup.json").write_text(
        json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2) + "\n"
    )
    (OUT / "bench_speedup.md").write_text(
        "# bench_speedup: MACs ratio vs measured speedup of uniform L1 channel pruning\n\n"
        f"TorchScript, 1 thread, baseline and pruned variants interleaved in one run, median of {args.repeats} "
        f"repeats; each figure is the median over {args.runs} such runs (the range column shows their spread); "
        "untrained (seeded) models, no fine-tuning. The machine (2 cores) was shared with other "
        "work (load average 3-7 on 2 cores during the run): ratios are same-run, absolute milliseconds are "
        "not comparable across runs. Each speedup is given by wall clock and by the CPU time of the measuring "
        "thread: under oversubscription, wall time inflates calls longer than a scheduler slice (the larger "
        "model) more than short ones, so wall ratios lean optimistic; CPU-time ratios leave preemption out "
        "and are the ones judged. Goal: b32 CPU-time speedup >= 0.8x the MACs ratio on the CNNs. MAC-op time "
        "share: fraction of the batch-32 time spent in convolutions and matrix products (torch.profiler self "
        "time); the rest does not shrink with MACs. GMAC/s: MACs per CPU second, the kernels' efficiency at "
        "those widths.\n\n" + table(rows) + "\n"
    )


if __name__ == "__main__":
    main()
