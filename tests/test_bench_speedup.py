"""The core of experiments/bench_speedup.py on one small case: real pruning, counting and timing run end to
end and the ratios are those of the pruned widths (timings themselves are not judged here)."""

from __future__ import annotations

from dataclasses import replace

import torch

from experiments.bench_speedup import Case, bench_model, combine_runs, table
from experiments.models import ResNetLike


def test_half_the_channels_of_a_small_resnet_give_a_quarter_of_the_macs() -> None:
    case = Case(lambda: ResNetLike(width=16), lambda batch: torch.randn(batch, 1, 16, 16))
    rows = bench_model("resnet", case, sparsities=(0.5,), round_tos=(None, 8), batches=(1, 4), repeats=2, warmup=0)
    # 16 -> 8 channels is already a multiple of 8: the rounded variant changes no width and is dropped
    assert [(r.sparsity, r.round_to) for r in rows] == [(0.0, None), (0.5, None)]
    baseline, pruned = rows
    assert baseline.macs_ratio == baseline.params_ratio == baseline.speedup_b1 == baseline.cpu_speedup_b32 == 1.0
    # every conv but the stem's input and the classifier's output halves both sides: MACs and params ~ 1/4
    assert 3.5 < pruned.macs_ratio < 4.0 and 3.5 < pruned.params_ratio < 4.0
    assert pruned.latency_ms_b1 > 0 and pruned.latency_ms_b32 > 0
    assert 0 < pruned.mac_share_b32 <= 1
    assert abs(pruned.efficiency_b32 - pruned.cpu_speedup_b32 / pruned.macs_ratio) < 1e-9

    # repeated runs: the median of each measured field and the spread of the b32 CPU-time speedup
    runs = [[replace(r, cpu_speedup_b32=k, latency_ms_b1=10 * k) for r in rows] for k in (3.0, 1.0, 2.0)]
    combined = combine_runs(runs)
    assert [(r.sparsity, r.round_to) for r in combined] == [(0.0, None), (0.5, None)]
    assert combined[1].cpu_speedup_b32 == 2.0 and combined[1].latency_ms_b1 == 20.0
    assert combined[1].cpu_speedup_b32_range == (1.0, 3.0)
    assert combined[1].macs_ratio == pruned.macs_ratio
    assert "| resnet | 50% | - |" in table(combined) and "| 1.00-3.00x |" in table(combined)
