"""Model coverage: every torchvision classification builder through the real pipeline, or refused up front.

For each architecture of ``torchvision.models.list_models(module=torchvision.models)`` (random init, 10
classes, 3x64x64 unless it needs more: `experiments.tasks.zoo.INPUT_SIZE`): its layers are discovered, a space
file asking 50 % channel sparsity (round_to 8) on every prunable layer and int8 weights on every layer is
resolved against them (the checks that refuse a space before any trial), and that one policy runs as a real
trial (`run_trial`: physical pruning, int8, lowered to every deploy runtime of ``--runtimes``, latency
interleaved with the float baseline on each in the same process, 1 thread, no fine-tuning; the speedup is the
baseline on its fastest float runtime over the candidate on its fastest). The artefact of the runtime the trial
ships on is then reloaded with that runtime's loader and re-evaluated (same rule as `autocompress export`'s
verification, here in the same process). The metric is the mean cosine of the compressed model's logits to the
float model's on synthetic test images. ``--timm`` adds the timm architectures of `zoo.TIMM_MODELS`.

A model whose channels torch-pruning cannot follow (its layers are all unprunable, with the reason named by
layer discovery) still runs the int8 trial: it is reported as "int8 only" with that reason. An exception
anywhere is recorded as "crash" with its stage: the goal is none.

    taskset -c 1 python -m experiments.bench_zoo [--only resnet18,vit_b_16] [--largest-first] [--timm] [--fresh]

Each model runs in its own process, killed above ``--max-memory-gb`` resident memory or after ``--max-minutes``
(recorded as a crash at the stage it reached): one model's blow-up is its row, not the end of the run.

Results are written after every model (resumable: finished models are skipped unless --fresh or --only) to
experiments/results/bench_zoo.{json,md}; a second process with --largest-first on another core shares the work.
Models run smallest of each family first (`run_order`), by torchvision's published parameter counts.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

from autocompress import import_torchvision
from autocompress.deploy import get_runtime
from autocompress.errors import UserError
from autocompress.export import VERIFY_TOLERANCE
from autocompress.measure import count_macs
from autocompress.runtime import run_trial
from autocompress.space import LayerSetting, Policy, discover_layers, parse_space, resolve_space
from autocompress.task import load_task
from experiments.tasks import zoo

OUT = Path(__file__).resolve().parent / "results"
#: the deploy runtimes a trial lowers to (the space's ``measure.runtimes``): all three
RUNTIMES = "openvino, onnxruntime, torchscript"
PATH = OUT / "bench_zoo.json"
SPACE = """
task: experiments.tasks.zoo:{arch}
objectives: {{accuracy: max, latency_ms: min}}
fidelity: {{finetune_epochs: [0]}}
defaults: {{channel_sparsity: [0.5], weight_bits: [8], round_to: 8}}
measure: {{threads: 1, repeats: 3, warmup: 1, runtimes: [{runtimes}]}}
"""


@cache
def published_params(arch: str) -> int:
    """The parameter count torchvision publishes for the architecture's pretrained weights (1000 classes), read
    from the weights' metadata: nothing is downloaded or built; it orders the run smallest first. A timm model
    is built (random init, 10 classes) and counted."""
    if arch.startswith(zoo.TIMM_PREFIX):
        return sum(p.numel() for p in zoo.build(arch).parameters())
    torchvision = import_torchvision()
    return int(next(iter(torchvision.models.get_model_weights(arch))).meta["num_params"])


def bench_one(arch: str, runtimes: str = RUNTIMES, progress: Path | None = None) -> dict[str, Any]:
    """One architecture through discovery, the space checks, one trial and the reload; a row of the table.
    The row so far is written to `progress` at each stage, so a process killed mid-way still tells where."""
    ref = f"experiments.tasks.zoo:{arch}"
    row: dict[str, Any] = {"arch": arch, "input": zoo.input_size(arch), "status": "crash", "stage": "build"}
    row["runtimes"] = runtimes
    start = time.perf_counter()

    def reach(stage: str) -> None:
        row["stage"] = stage
        if progress is not None:
            progress.write_text(json.dumps(row))

    try:
        reach("build")
        task = load_task(ref)
        model, x1 = task.baseline_model(), task.example_input(1)
        row["params"] = sum(p.numel() for p in model.parameters())
        reach("discover")
        layers = discover_layers(model, x1)
        prunable = [info for info in layers if info.prunable]
        row.update(layers=len(layers), prunable=len(prunable))
        reach("space")
        space = resolve_space(
            parse_space(SPACE.format(arch=arch, runtimes=runtimes), f"bench_zoo:{arch}"), layers, f"bench_zoo:{arch}"
        )
        if not prunable:
            reasons = {info.reason for info in layers} - {"its output is the model's output"}
            row["refused"] = "; ".join(sorted(reasons))
        policy = Policy.from_mapping(
            {name: LayerSetting(max(c.channel_sparsity), min(c.weight_bits)) for name, c in space.layers.items()},
            space.criterion,
            round_to=space.round_to,
        )
        reach("trial")
        result = run_trial(ref, policy, 0.0, measure=space.measure)
        m = result.metrics
        row.update(
            cosine=m["accuracy"],
            macs_ratio=m["macs"] / sum(count_macs(model, x1).values()),
            params_after=int(m["params"]),
            latency_ms=m["latency_ms"],
            baseline_ms=m["baseline_latency_ms"],
            speedup=m["speedup"],
            runtime=m["runtime"],
            baseline_runtime=m["baseline_runtime"],
        )
        reach("reload")
        shipped = {a.runtime: a for a in result.artefacts}[m["runtime"]]
        reloaded = task.evaluate(get_runtime(shipped.runtime).load(shipped), "val")  # the split trials rank on
        row["reloads"] = abs(reloaded - m["accuracy"]) <= VERIFY_TOLERANCE
        row["status"] = "int8 only" if not prunable else "compressed"
        reach("done")
    except UserError as exc:
        row.update(status="refused", refused=str(exc))
    except Exception as exc:
        row.update(error=f"{type(exc).__name__}: {exc}".splitlines()[0][:300], trace=traceback.format_exc()[-2000:])
    row["wall_s"] = round(time.perf_counter() - start, 1)
    if progress is not None:
        progress.write_text(json.dumps(row))
    return row


def isolated(arch: str, runtimes: str, max_gb: float, max_minutes: float) -> dict[str, Any]:
    """`bench_one` in a child process, killed above `max_gb` of resident memory or after `max_minutes`; the row
    records the peak memory seen (polled each second) and, for a killed or dead child, the stage it reached."""
    with tempfile.TemporaryDirectory() as tmp:
        progress = Path(tmp) / "row.json"
        command = [sys.executable, "-m", "experiments.bench_zoo", "--child", arch, "--runtimes", runtimes]
        child = subprocess.Popen([*command, "--progress", str(progress)], stdout=subprocess.DEVNULL)
        start, peak, killed = time.monotonic(), 0.0, ""
        while child.poll() is None:
            peak = max(peak, _resident_gb(child.pid))
            if peak > max_gb:
                killed = f"above {max_gb:g} GB of resident memory"
            elif time.monotonic() - start > 60 * max_minutes:
                killed = f"still running after {max_minutes:g} min"
            if killed:
                child.kill()
                child.wait()
                break
            time.sleep(1.0)
        row = json.loads(progress.read_text()) if progress.exists() else {"arch": arch, "stage": "build"}
    row.setdefault("input", zoo.input_size(arch))
    row["peak_gb"] = round(peak, 1)
    if killed or row["stage"] != "done" and "error" not in row and "refused" not in row:
        row.update(status="crash", error=f"killed: {killed}" if killed else f"process died (exit {child.returncode})")
        row["wall_s"] = round(time.monotonic() - start, 1)
    return row


def _resident_gb(pid: int) -> float:
    """The process's resident memory (VmRSS of /proc/PID/status), 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return kib / 2**20


def write(rows: list[dict[str, Any]]) -> None:
    """The json (every field) and the markdown table, rewritten after each model."""
    PATH.write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "# bench_zoo: torchvision classification models (and timm's, `timm_` rows) through the real pipeline",
        "",
        "Random init, 10 classes, synthetic 3xNxN inputs (N = 64 unless noted). One trial each: 50 % channels",
        "(round_to 8) on every prunable layer + int8 weights on every layer, no fine-tuning; latency at batch 1,",
        "1 thread, median of 3, interleaved with the float baseline on every deploy runtime in the same process;",
        "speedup: the baseline on its fastest float runtime over the candidate on its fastest runtime (rows",
        "without runtimes were measured against float TorchScript only, before the deploy runtimes; rows marked",
        "`*` lowered to OpenVINO and ONNX Runtime only, `--runtimes 'openvino, onnxruntime'`, to fit the",
        "session: float TorchScript was never the fastest baseline on any model measured). cosine:",
        "compressed vs float logits on the synthetic test images (random weights, no fine-tune: a",
        "function check, not accuracy). `python -m experiments.bench_zoo`.",
        "",
        *(
            summary(source, [r for r in rows if r["arch"].startswith(zoo.TIMM_PREFIX) == (source == "timm")])
            for source in ("torchvision", "timm")
        ),
        "",
        "| model | N | params | layers | prunable groups | status | MACs after | cosine | reloads | ms b1 | "
        "base ms b1 | speedup b1 | runtimes (candidate / baseline) | peak GB | reason / error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        why = r.get("error") or r.get("refused") or ""
        lines.append(
            f"| {r['arch']} | {r['input']} | {_num(r, 'params', ',')} | {_num(r, 'layers', 'd')} | "
            f"{_num(r, 'prunable', 'd')} | {r['status']}{' (' + r['stage'] + ')' if r['status'] == 'crash' else ''} | "
            f"{_num(r, 'macs_ratio', '.2f')} | "
            f"{_num(r, 'cosine', '.3f')} | {'yes' if r.get('reloads') else 'no' if 'reloads' in r else '–'} | "
            f"{_num(r, 'latency_ms', '.2f')} | {_num(r, 'baseline_ms', '.2f')} | {_num(r, 'speedup', '.2f')} | "
            f"{_runtimes(r)} | "
            f"{_num(r, 'peak_gb', '.1f')} | {why.replace('|', '/')} |"
        )
    (OUT / "bench_zoo.md").write_text("\n".join(lines) + "\n")


def summary(source: str, rows: list[dict[str, Any]]) -> str:
    """One line of counts for the models of one source, out of all it lists (a partial run says so)."""
    listed = len(zoo.timm_models() if source == "timm" else zoo.classification_models())
    done = sum(r["status"] == "compressed" and bool(r.get("reloads")) for r in rows)
    count = Counter(r["status"] for r in rows)
    return (
        f"- {source}: **{done} of {listed} compressed end to end** (pruned + int8 + exported + reloaded); "
        f"{count['int8 only']} int8 only (pruning refused up front, reason named); {count['refused']} refused; "
        f"{count['crash']} crash; {count['not run']} not run (listed as too large); "
        f"{listed - len(rows)} not reached yet."
    )


def _runtimes(row: dict[str, Any]) -> str:
    """The runtimes the candidate and its baseline were fastest on; `*` where TorchScript was not among those
    measured, 'torchscript only' for the rows from before the deploy runtimes."""
    if "runtime" not in row:
        return "torchscript only"
    star = "*" if "torchscript" not in row.get("runtimes", RUNTIMES) else ""
    return f"{row['runtime']} / {row['baseline_runtime']}{star}"


def _num(row: dict[str, Any], key: str, spec: str) -> str:
    return format(row[key], spec) if key in row else "–"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated architectures, re-run (default: all not done)")
    parser.add_argument("--largest-first", action="store_true", help="run the largest models first")
    parser.add_argument("--shard", default="0/1", help="K/N: run every N-th model from the K-th (N processes)")
    parser.add_argument(
        "--max-params", type=float, default=None, help="list larger models as 'not run' (memory of this machine)"
    )
    parser.add_argument("--runtimes", default=RUNTIMES, help="deploy runtimes the trial lowers to")
    parser.add_argument("--timm", action="store_true", help="also the timm architectures of zoo.TIMM_MODELS")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    parser.add_argument("--max-memory-gb", type=float, default=10.0, help="kill a model's process above this")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="kill a model's process after this")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one model, in the process `isolated` starts
    parser.add_argument("--progress", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        bench_one(args.child, args.runtimes, args.progress)
        return
    archs = (
        args.only.split(",") if args.only else zoo.classification_models() + (zoo.timm_models() if args.timm else [])
    )
    if args.fresh:
        PATH.unlink(missing_ok=True)
    shard, shards = (int(part) for part in args.shard.split("/"))
    for arch in run_order(archs, args.largest_first)[shard::shards]:
        if not args.only and arch in done_archs():  # another process (or an earlier run) has it
            continue
        if args.max_params and published_params(arch) > args.max_params:
            row = {"arch": arch, "input": zoo.input_size(arch), "status": "not run", "stage": "build"}
            row["refused"] = f"{published_params(arch):,} parameters: above --max-params {args.max_params:g}"
        else:
            row = isolated(arch, args.runtimes, args.max_memory_gb, args.max_minutes)
        print(json.dumps({k: v for k, v in row.items() if k != "trace"}), flush=True)
        write(merged(row))


def run_order(archs: list[str], largest_first: bool) -> list[str]:
    """Smallest of each family first (resnet18, efficientnet_b0, vit_b_32, ...), then the second of each, ...:
    a partial run still covers every family. A family is the name up to its first digit."""
    by_size = sorted(archs, key=published_params, reverse=largest_first)
    rank: dict[str, int] = {}
    order = []
    for arch in by_size:
        family = re.sub(r"\d.*$", "", arch)
        rank[family] = rank.get(family, -1) + 1
        order.append((rank[family], arch))
    return [arch for _, arch in sorted(order, key=lambda item: item[0])]


def done_archs() -> set[str]:
    return {r["arch"] for r in json.loads(PATH.read_text())} if PATH.exists() else set()


def merged(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The stored rows with `row` in place of any earlier one of its model (re-read: two processes may share
    the file, one from each end of the list), by model name."""
    rows = json.loads(PATH.read_text()) if PATH.exists() else []
    return sorted([r for r in rows if r["arch"] != row["arch"]] + [row], key=lambda r: r["arch"])


if __name__ == "__main__":
    main()
