"""MiniLM: fixed compression policies measured the way a trial measures them (`run_trial`).

Complements the search (``python -m experiments.run minilm``) with the policies that explain it, against the
issue's bar (>= 2x faster at batch 32 with mean cosine >= 0.98 to the original model): dynamic int8 on every
Linear; on all but the FFN output layers (whose inputs reach |x| ~ 25); on all but the FFN output layers of
the first two encoder layers (where float keeps the most cosine, one layer at a time); and the latter with
one attention head removed from each of the last three layers plus 2 epochs of distillation. Latency is
interleaved with the float baseline in one process, 1 thread.
Writes experiments/results/bench_minilm.{json,md}.
"""

from __future__ import annotations

import json
from pathlib import Path

from autocompress.runtime import run_trial
from autocompress.space import Policy

TASK = "experiments.tasks.minilm:handwritten"  # its layer names: the re-implemented encoder
MEASURE = {"threads": 1, "warmup": 3, "repeats": 15}
LINEARS = ("q", "k", "v", "out", "ffn_in", "ffn_out")
LAYERS = 6
OUT = Path(__file__).resolve().parent / "results"


def policy(float_ffn_out: tuple[int, ...] = (), heads: tuple[int, ...] = ()) -> Policy:
    """Dynamic int8 on every Linear except the FFN output of the layers in `float_ffn_out`; one head removed
    from each layer in `heads`."""
    layers = {}
    for i in range(LAYERS):
        for name in LINEARS:
            float_layer = name == "ffn_out" and i in float_ffn_out
            sparsity = 1 / 12 if name == "v" and i in heads else 0.0
            layers[f"layers.{i}.{name}"] = {"weight_bits": 32 if float_layer else 8, "channel_sparsity": sparsity}
    return Policy.from_mapping(layers, quantizer="dynamic")


CASES = {
    "int8 all Linear": (policy(), 0.0),
    "int8 all but ffn_out": (policy(tuple(range(LAYERS))), 0.0),
    "int8 all but ffn_out of layers 0-1": (policy((0, 1)), 0.0),
    "that, minus 1 head in layers 3-5, 2 ep distil": (policy((0, 1), heads=(3, 4, 5)), 2.0),
}


def main() -> None:
    rows = []
    for name, (pol, epochs) in CASES.items():
        m = run_trial(TASK, pol, epochs, measure=MEASURE).metrics
        rows.append(
            {
                "policy": name,
                "finetune_epochs": epochs,
                **{
                    k: m[k]
                    for k in (
                        "accuracy",
                        "speedup",
                        "speedup_b32",
                        "latency_ms",
                        "latency_ms_b32",
                        "baseline_latency_ms",
                        "baseline_latency_ms_b32",
                        "params",
                        "size_bytes",
                    )
                },
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    (OUT / "bench_minilm.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "# MiniLM (all-MiniLM-L6-v2): fixed policies, dynamic int8",
        "",
        "Mean cosine to the original model's embeddings on the validation sentences (seq len 48); latency median",
        "of 15, 1 thread (CPU time), interleaved with the float TorchScript baseline in the same run.",
        "",
        "| policy | cosine | speedup b1 | speedup b32 | ms b1 | ms b32 | base ms b1 | base ms b32 | params |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['policy']} | {r['accuracy']:.4f} | {r['speedup']:.2f}x | {r['speedup_b32']:.2f}x | "
            f"{r['latency_ms']:.1f} | {r['latency_ms_b32']:.1f} | {r['baseline_latency_ms']:.1f} | "
            f"{r['baseline_latency_ms_b32']:.1f} | {r['params']:.0f} |"
        )
    (OUT / "bench_minilm.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
