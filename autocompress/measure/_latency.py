"""Latency, measured: fixed thread count, warm-up, median of repeats, candidates interleaved.

Interleaving (A, B, A, B, ...) rather than timing A fully then B makes a same-run ratio robust to drift in
machine load and clock frequency during the measurement.

TorchScript modules are timed on a fresh copy (saved and loaded again): the JIT's profiling executor
specialises a graph to the shapes of its first calls, and a module that was evaluated at another batch size
first (accuracy on the test set, say) runs the unspecialised fallback at the measured one. On the ResNet-like
int8 model that fallback took 0.48 ms at batch 1 against 0.25 ms for the same model loaded afresh, which
capped every measured batch-1 speedup. A fresh copy is also how a server that loads the export runs it.
"""

from __future__ import annotations

import io
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

from autocompress._inputs import ModelInputs, call_model
from autocompress.measure._counters import serialize


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@torch.inference_mode()
def compare_latency(
    models: Mapping[str, Callable[[torch.Tensor], object]],
    inputs: ModelInputs,
    *,
    threads: int = 1,
    warmup: int = 5,
    repeats: int = 30,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median milliseconds per call of each model on `inputs` (one tensor, or a tuple: one per model input),
    measured interleaved in one run.

    `clock` is wall time by default. On a machine shared with other work, ``time.thread_time`` (CPU time of
    the calling thread, which runs every op when `threads` is 1) leaves out the time the thread waited
    preempted: wall time inflates calls longer than a scheduler slice more than short ones, which biases a
    ratio in favour of the smaller model.
    """
    models = {name: fresh_copy(model) for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch_threads(threads):
        for _ in range(warmup):
            for model in models.values():
                call_model(model, inputs)
        for _ in range(repeats):
            for name, model in models.items():
                start = clock()
                call_model(model, inputs)
                times[name].append((clock() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def fresh_copy(model: Callable[..., object]) -> Callable[..., object]:
    """A TorchScript module saved and loaded again, so no shape it ran at before shapes how it runs now;
    anything else is returned as it is."""
    if not isinstance(model, torch.jit.ScriptModule):
        return model
    return torch.jit.load(io.BytesIO(serialize(model)))


def cpu_model() -> str:
    """This machine's CPU and whether it has VNNI int8 instructions. Int8 speedups differ between machines
    (MiniLM's all-int8 recipe measured 2.2x in one session's seed, 1.4-1.6x on an AVX2-only EPYC in another's),
    and without VNNI the weights keep 7 bits (`int8_kernels_saturate`), so a measurement records where it ran."""
    from autocompress.compress._quant_base import int8_kernels_saturate

    cpuinfo = Path("/proc/cpuinfo")
    found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text() if cpuinfo.exists() else "", re.M)
    model = found.group(1).strip() if found else platform.processor() or platform.machine()
    return f"{model} ({'no VNNI' if int8_kernels_saturate() else 'VNNI'})"
