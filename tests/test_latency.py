"""`compare_latency`: interleaved timing with the clock the caller chooses."""

from __future__ import annotations

import itertools
import time

import torch

from autocompress.measure import compare_latency


def test_times_come_from_the_given_clock_one_tick_per_call() -> None:
    ticks = itertools.count()  # each reading advances one second: every call spans exactly one tick
    calls: list[str] = []
    models = {"a": lambda x: calls.append("a"), "b": lambda x: calls.append("b")}
    result = compare_latency(models, torch.zeros(1), warmup=1, repeats=3, clock=lambda: float(next(ticks)))
    assert result == {"a": 1000.0, "b": 1000.0}
    assert calls == ["a", "b"] * 4  # warm-up, then interleaved A, B, A, B


def test_thread_cpu_time_excludes_sleeping() -> None:
    models = {"sleeps": lambda x: time.sleep(0.02)}
    assert compare_latency(models, torch.zeros(1), warmup=0, repeats=3, clock=time.thread_time)["sleeps"] < 5
    assert compare_latency(models, torch.zeros(1), warmup=0, repeats=3)["sleeps"] >= 20


def test_trials_read_single_thread_latency_on_thread_cpu_time_and_pools_on_wall_time() -> None:
    from autocompress.runtime._trial import measurement_clock

    assert measurement_clock(1) is time.thread_time
    assert measurement_clock(2) is time.perf_counter


class _CountsCalls(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


def test_torchscript_modules_are_timed_on_a_fresh_copy_not_on_the_one_passed_in() -> None:
    # The JIT specialises a module to the shapes of its first calls; one already run at another batch size
    # (the accuracy evaluation) would be timed on its fallback path. The module handed in must stay untouched.
    script = torch.jit.script(_CountsCalls())
    script(torch.zeros(256, 3))
    compare_latency({"model": script}, torch.zeros(1, 3), warmup=2, repeats=3)
    assert int(script.calls) == 1
