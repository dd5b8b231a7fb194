"""Measurement: real latency (same run, interleaved, fixed threads) and static counters."""

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
from autocompress.measure._latency import compare_latency, torch_threads

__all__ = [
    "compare_latency",
    "count_bops",
    "count_macs",
    "count_packed_bytes",
    "count_params",
    "count_sparse_bytes",
    "count_weight_sparsity",
    "layer_weights",
    "serialize",
    "to_torchscript",
    "torch_threads",
]
