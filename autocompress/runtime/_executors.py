"""Executors run trials: `InlineExecutor` in this process, `RayExecutor` on long-lived Ray actors.

An executor never touches the store; it hands finished trials back to the loop, which records them.
"""

from __future__ import annotations

import os
import resource
import socket
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from autocompress.errors import SearchStopped, UserError
from autocompress.runtime._trial import Continuation, Gate, TrialResult, run_trial
from autocompress.space import Policy


@dataclass(frozen=True)
class Job:
    number: int
    task_ref: str
    policy: dict[str, Any]
    finetune_epochs: float
    measure: dict[str, int]
    seed: int
    #: a promoted trial's start (`run_trial`'s ``continue_from``) and whether to return the fine-tuned weights
    continue_from: Continuation | None = None
    keep_weights: bool = False
    #: the fine-tune this trial's training is a stretch of (`run_trial`'s ``schedule_epochs``)
    schedule_epochs: float | None = None


@dataclass(frozen=True)
class Finished:
    """A job's end: a result, or an error with its reason. ``retryable`` when the worker process died."""

    job: Job
    result: TrialResult | None = None
    error: str = ""
    retryable: bool = False


class TrialMemoryError(MemoryError):
    """A trial tried to use more memory than its limit (``--trial-memory``)."""


def format_bytes(size: float) -> str:
    return f"{size / 2**30:.3g} GB" if size >= 2**30 else f"{size / 2**20:.3g} MB"


@contextmanager
def memory_limit(limit: int | None) -> Iterator[None]:
    """Let the block grow this process's address space by at most `limit` bytes (None: no limit).

    The soft ``RLIMIT_AS`` is set to the process's current size plus `limit` and restored afterwards, so the
    limit counts what the trial adds, not what the worker (Python, torch, Ray) already holds. An allocation past
    it fails in the trial's own process (torch: "can't allocate memory", Python: `MemoryError`) instead of
    the kernel's OOM killer taking a process, or the machine, down."""
    if not limit:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        size = int(statm.read().split()[0]) * resource.getpagesize()
    cap = size + limit if hard == resource.RLIM_INFINITY else min(size + limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def execute(
    job: Job, train_threads: int | None = None, gate: Gate | None = None, memory: int | None = None
) -> TrialResult:
    """Run `job`, its memory capped at `memory` bytes; past the cap it raises `TrialMemoryError`."""
    try:
        with memory_limit(memory):
            return run_trial(
                job.task_ref,
                Policy.from_dict(job.policy),
                job.finetune_epochs,
                measure=job.measure,
                seed=job.seed,
                train_threads=train_threads,
                gate=gate or Gate(),
                continue_from=job.continue_from,
                keep_weights=job.keep_weights,
                schedule_epochs=job.schedule_epochs,
            )
    except (MemoryError, RuntimeError) as exc:
        if memory and (isinstance(exc, MemoryError) or "can't allocate memory" in str(exc)):
            raise TrialMemoryError(f"exceeded the {format_bytes(memory)} memory limit") from None
        raise


def describe_exception(exc: BaseException) -> str:
    """One line: the exception type and message, with the innermost frame of the traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}{where}"


class Executor(ABC):
    """Runs up to `slots` jobs at once. `wait` returns the jobs finished within `timeout` seconds."""

    slots: int

    @abstractmethod
    def submit(self, job: Job) -> None: ...

    @abstractmethod
    def wait(self, timeout: float) -> list[Finished]: ...

    @abstractmethod
    def running(self) -> list[int]: ...

    def shutdown(self) -> None:  # noqa: B027 - a no-op default: executors without workers have nothing to release
        """Release workers; jobs still running are abandoned (the loop re-queues them)."""


class InlineExecutor(Executor):
    """Runs each job synchronously in this process; for debugging and for tests of pure logic."""

    slots = 1

    def __init__(self, trial_memory: int | None = None) -> None:
        self._queue: list[Job] = []
        self._memory = trial_memory

    def submit(self, job: Job) -> None:
        self._queue.append(job)

    def running(self) -> list[int]:
        return [job.number for job in self._queue]

    def wait(self, timeout: float) -> list[Finished]:
        if not self._queue:
            return []
        job = self._queue.pop(0)
        try:
            return [Finished(job, result=execute(job, memory=self._memory))]
        except Exception as exc:  # a trial's own failure is data, not a crash of the loop
            return [Finished(job, error=describe_exception(exc))]


def check_ray_address(address: str) -> None:
    """Fail fast, with a one-line error, when nothing listens at a ``host:port`` Ray address (ray.init
    itself retries for a minute before giving up)."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if address == "auto":
        return
    if not sep or not port.isdigit() or not host:
        raise UserError("--ray-address", f"{address!r} is not host:port (e.g. 127.0.0.1:6379) or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        raise UserError(
            "--ray-address",
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); "
            "start one with 'ray start --head' or drop --ray-address for a local one",
        ) from None


def _ray_env() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


#: how long a replacement worker may wait for a free CPU in the cluster before the executor gives its slot up
WORKER_START_S = 120.0


class RayExecutor(Executor):
    """K long-lived Ray actors, one CPU each; model loading and process start are paid once per worker.

    A worker that dies (its process killed, or its whole node lost) is replaced and its job reported
    `retryable`; jobs submitted while no worker is free wait for one. A replacement that no node can host
    within `WORKER_START_S` (the lost node took its CPUs with it) is given up and `slots` shrinks by one, so the
    study goes on with the nodes that are left; with none left it stops (`SearchStopped`). A job past
    `trial_timeout` seconds has its worker killed and is reported failed; one that allocates more than
    `trial_memory` bytes is failed with that reason, its worker lives on (`memory_limit`). A `CoreGate` actor,
    pinned to the driver's node so that losing another node cannot take it, keeps every latency measurement
    alone on the machine: other trials' compute pauses while one measures.
    """

    def __init__(
        self,
        workers: int,
        *,
        address: str | None = None,
        trial_timeout: float | None = None,
        trial_memory: int | None = None,
    ) -> None:
        import ray

        _ray_env()
        if address:
            check_ray_address(address)
        self.slots = workers
        self._trial_timeout = trial_timeout
        self._memory = trial_memory
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            # Workers import the task by path and share our cache and artefact settings.
            env = {k: v for k, v in os.environ.items() if k.startswith("AUTOCOMPRESS_")}
            env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)
            try:
                if address:
                    ray.init(
                        address=address, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env}
                    )
                else:
                    ray.init(
                        address="local",
                        num_cpus=workers,
                        include_dashboard=False,
                        log_to_driver=False,
                        runtime_env={"env_vars": env},
                    )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                reason = str(exc).splitlines()[0]
                raise UserError("--ray-address", f"cannot join Ray at {address!r}: {reason}") from None
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from autocompress.runtime._ray_actors import CoreGate, TrialWorker

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self._gate = CoreGate.options(scheduling_strategy=here).remote()  # type: ignore[attr-defined]
        self._actor_cls = TrialWorker
        self._names: dict[Any, str] = {}
        self._idle = [self._new_worker() for _ in range(workers)]
        self._busy: dict[Any, tuple[Job, Any, float]] = {}  # ref -> (job, actor, start)
        self._starting: dict[Any, tuple[Any, float]] = {}  # ready ref -> (replacement actor, since)
        self._waiting: list[Job] = []  # submitted while no worker was free
        ray.get([actor.ready.remote() for actor in self._idle])  # start-up is paid here, not by trial 0

    def _new_worker(self) -> Any:
        name = f"worker-{len(self._names)}"
        actor = self._actor_cls.remote(self._gate, name)  # type: ignore[attr-defined]
        self._names[actor] = name
        return actor

    def _replace(self, actor: Any) -> None:
        """Drop a dead or killed worker (and its hold on the core gate) and start a fresh one; it takes jobs
        once it is ready (`_place`)."""
        self._gate.forget.remote(self._names.pop(actor))
        fresh = self._new_worker()
        self._starting[fresh.ready.remote()] = (fresh, time.monotonic())

    def _place(self) -> None:
        """Move replacements that started to the idle workers, give up those no node could host, and hand
        waiting jobs to idle workers."""
        import ray

        if self._starting:
            ready, _ = ray.wait(list(self._starting), num_returns=len(self._starting), timeout=0)
            for ref in ready:
                self._idle.append(self._starting.pop(ref)[0])
            for ref, (actor, since) in list(self._starting.items()):
                if time.monotonic() - since > WORKER_START_S:
                    del self._starting[ref]
                    ray.kill(actor)
                    self._gate.forget.remote(self._names.pop(actor))
                    self.slots -= 1
        if self.slots < 1:
            raise SearchStopped(
                f"no Ray node could host a trial worker for {WORKER_START_S:g} s (its nodes were lost); "
                "add nodes to the cluster and run 'autocompress resume'"
            )
        while self._waiting and self._idle:
            self._start(self._waiting.pop(0), self._idle.pop())

    def _start(self, job: Job, actor: Any) -> None:
        self._busy[actor.run.remote(job, self._memory)] = (job, actor, time.monotonic())

    def submit(self, job: Job) -> None:
        if self._idle:
            self._start(job, self._idle.pop())
        else:
            self._waiting.append(job)

    def running(self) -> list[int]:
        return [job.number for job, _, _ in self._busy.values()] + [job.number for job in self._waiting]

    def wait(self, timeout: float) -> list[Finished]:
        import ray
        from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

        self._place()
        if not self._busy:
            if self._waiting and self._starting:  # only replacements that have not started yet
                ray.wait(list(self._starting), num_returns=1, timeout=timeout)
            return []
        ready, rest = ray.wait(list(self._busy), num_returns=1, timeout=timeout)
        if ready and rest:  # collect whatever else is done too, without waiting
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        finished = []
        for ref in ready:
            job, actor, _ = self._busy.pop(ref)
            try:
                finished.append(Finished(job, result=ray.get(ref)))
                self._idle.append(actor)
            except RayTaskError as exc:
                cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                finished.append(Finished(job, error=describe_exception(cause)))
                self._idle.append(actor)
            except (RayActorError, WorkerCrashedError) as exc:
                reason = str(exc).strip().splitlines()[0][:300]
                finished.append(Finished(job, error=f"worker died: {reason}", retryable=True))
                self._replace(actor)
        if self._trial_timeout:
            now = time.monotonic()
            for ref, (job, actor, start) in list(self._busy.items()):
                if now - start > self._trial_timeout:
                    ray.kill(actor)
                    del self._busy[ref]
                    finished.append(Finished(job, error=f"timed out after {self._trial_timeout:g} s"))
                    self._replace(actor)
        self._place()
        return finished

    def shutdown(self) -> None:
        import ray

        for _, actor, _ in self._busy.values():
            ray.kill(actor)
        for actor in [*self._idle, *(actor for actor, _ in self._starting.values())]:
            ray.kill(actor)
        self._busy.clear()
        self._idle.clear()
        self._starting.clear()
        self._waiting.clear()
        if self._owns_ray:
            ray.shutdown()
