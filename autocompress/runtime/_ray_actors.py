"""Ray actors of the runtime: the trial worker and the core gate that keeps latency measurement alone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray

from autocompress.runtime._executors import Job, execute
from autocompress.runtime._trial import Gate, TrialResult


@ray.remote(num_cpus=0)
class CoreGate:
    """A writer-preferring readers/writer gate over the machine's cores.

    Trials hold it shared while they compute (prune, fine-tune, quantize, evaluate) and exclusively while
    they measure latency. A pending measurement stops new compute from starting, and running fine-tunes
    pause at their next step (`checkpoint`), so a measurement never shares the cores with another trial's
    work. A computing trial silent for `patience_s` (no checkpoint: hung, or in a long phase without steps)
    no longer holds measurements back; a measurer silent for `lease_s` (its worker died) loses the gate;
    the executor calls `forget` for workers it kills.
    """

    def __init__(self, patience_s: float = 5.0, lease_s: float = 120.0) -> None:
        self._computing: dict[str, float] = {}
        self._measurer: str | None = None
        self._measurer_since = 0.0
        self._waiting_measurers: set[str] = set()
        self._patience_s = patience_s
        self._lease_s = lease_s

    def _expire(self) -> None:
        now = time.monotonic()
        for owner, since in list(self._computing.items()):
            if now - since > self._patience_s:
                del self._computing[owner]
        if self._measurer is not None and now - self._measurer_since > self._lease_s:
            self._measurer = None

    async def forget(self, owner: str) -> None:
        self._computing.pop(owner, None)
        self._waiting_measurers.discard(owner)
        if self._measurer == owner:
            self._measurer = None

    def _measurement_due(self) -> bool:
        return self._measurer is not None or bool(self._waiting_measurers)

    async def enter_compute(self, owner: str) -> None:
        while True:
            self._expire()
            if not self._measurement_due():
                self._computing[owner] = time.monotonic()
                return
            await asyncio.sleep(0.002)

    async def leave_compute(self, owner: str) -> None:
        self._computing.pop(owner, None)

    async def checkpoint(self, owner: str) -> None:
        """Called between training steps: step aside while a measurement waits or runs."""
        if not self._measurement_due():
            self._computing[owner] = time.monotonic()
            return
        self._computing.pop(owner, None)
        await self.enter_compute(owner)

    async def acquire_measure(self, owner: str) -> None:
        self._computing.pop(owner, None)
        self._waiting_measurers.add(owner)
        try:
            while True:
                self._expire()
                if self._measurer is None and not self._computing:
                    self._measurer, self._measurer_since = owner, time.monotonic()
                    return
                await asyncio.sleep(0.002)
        finally:
            self._waiting_measurers.discard(owner)

    async def release_measure(self, owner: str) -> None:
        if self._measurer == owner:
            self._measurer = None


class _RayGate(Gate):
    """The worker-side handle on `CoreGate`, shaped like `runtime.Gate`."""

    def __init__(self, gate: Any, owner: str) -> None:
        self._gate, self._owner = gate, owner

    @contextmanager
    def computing(self) -> Iterator[None]:
        ray.get(self._gate.enter_compute.remote(self._owner))
        try:
            yield
        finally:
            ray.get(self._gate.leave_compute.remote(self._owner))

    @contextmanager
    def measuring(self) -> Iterator[None]:
        ray.get(self._gate.acquire_measure.remote(self._owner))
        try:
            yield
        finally:
            ray.get(self._gate.release_measure.remote(self._owner))

    def checkpoint(self) -> None:
        ray.get(self._gate.checkpoint.remote(self._owner))


@ray.remote(num_cpus=1, max_restarts=0)
class TrialWorker:
    """Runs trials with one torch thread (its one CPU); keeps the task and baseline cached between trials."""

    def __init__(self, gate: Any, name: str) -> None:
        self._gate = _RayGate(gate, name)

    def ready(self) -> bool:
        return True

    def run(self, job: Job, memory: int | None = None) -> TrialResult:
        return execute(job, train_threads=1, gate=self._gate, memory=memory)
