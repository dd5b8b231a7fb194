"""Ray actors of the runtime: the trial worker and the latency-measurement lock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray

from autocompress.runtime._executors import Job, execute
from autocompress.runtime._trial import TrialResult, worker_id


@ray.remote(num_cpus=0)
class LatencyLock:
    """One holder at a time; a holder that has not released within `lease_s` (it died) loses the lock."""

    def __init__(self, lease_s: float = 120.0) -> None:
        self._holder: str | None = None
        self._since = 0.0
        self._lease_s = lease_s

    async def acquire(self, owner: str) -> None:
        while self._holder is not None and time.monotonic() - self._since < self._lease_s:
            await asyncio.sleep(0.002)
        self._holder, self._since = owner, time.monotonic()

    async def release(self, owner: str) -> None:
        if self._holder == owner:
            self._holder = None


@ray.remote(num_cpus=1, max_restarts=0)
class TrialWorker:
    """Runs trials with one torch thread (its one CPU); keeps the task and baseline cached between trials."""

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self._owner = worker_id()

    @contextmanager
    def _measuring(self) -> Iterator[None]:
        ray.get(self._lock.acquire.remote(self._owner))
        try:
            yield
        finally:
            ray.get(self._lock.release.remote(self._owner))

    def run(self, job: Job) -> TrialResult:
        return execute(job, train_threads=1, lock=self._measuring)
