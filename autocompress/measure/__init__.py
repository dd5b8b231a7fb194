"""Measurement: real latency (same run, interleaved, fixed threads), the per-layer latency table, and static
counters."""

from autocompress.measure._counters import (
    count_bops,
    count_macs,
    count_packed_bytes,
    count_params,
    count_sparse_bytes,
    count_weight_sparsity,
    layer_weights,
    serialize,
    to_torchscript,
)
from autocompress.measure._latency import compare_latency, cpu_model, torch_threads
from autocompress.measure._lut import WIDTHS, build_latency_table

__all__ = [
    "WIDTHS",
    "build_latency_table",
    "compare_latency",
    "count_bops",
    "count_macs",
    "count_packed_bytes",
    "count_params",
    "count_sparse_bytes",
    "count_weight_sparsity",
    "cpu_model",
    "layer_weights",
    "serialize",
    "to_torchscript",
    "torch_threads",
]
