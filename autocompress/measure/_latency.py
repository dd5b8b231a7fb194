"""Latency, measured: fixed thread count, warm-up, median of repeats, candidates interleaved.

Interleaving (A, B, A, B, ...) rather than timing A fully then B makes a same-run ratio robust to drift in
machine load and clock frequency during the measurement.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch


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
    inputs: torch.Tensor,
    *,
    threads: int = 1,
    warmup: int = 5,
    repeats: int = 30,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median milliseconds per call of each model on `inputs`, measured interleaved in one run.

    `clock` is wall time by default. On a machine shared with other work, ``time.thread_time`` (CPU time of
    the calling thread, which runs every op when `threads` is 1) leaves out the time the thread waited
    preempted: wall time inflates calls longer than a scheduler slice more than short ones, which biases a
    ratio in favour of the smaller model.
    """
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch_threads(threads):
        for _ in range(warmup):
            for model in models.values():
                model(inputs)
        for _ in range(repeats):
            for name, model in models.items():
                start = clock()
                model(inputs)
                times[name].append((clock() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}
