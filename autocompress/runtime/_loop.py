"""The search loop: the only writer of the store.

It asks the controller for proposals while workers are free and budget is left, submits them, and records
each finished trial together with the controller's state in one transaction. Resuming is the same loop
started on a study whose controller is rebuilt from the store; trials left running by a dead controller are
re-run first, under their old numbers.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from autocompress.runtime._executors import Executor, Finished, Job
from autocompress.space import Policy, Space
from autocompress.store import COMPLETE, FAILED, StaleControllerState, StudyStore
from autocompress.store._models import utcnow
from autocompress.strategies import Controller, Outcome, Proposal

#: a running trial whose controller has not written a heartbeat for this long is taken over by a resume
LEASE_S = 60.0
HEARTBEAT_S = 10.0


@dataclass(frozen=True)
class Budget:
    """Totals for a study (not increments), summed over every session that worked on it.

    ``trials``: finished trials (complete or failed); ``time_s``: wall-clock seconds of search;
    ``cpu_s``: CPU seconds used by trials; ``max_failures``: failed trials before the study stops;
    ``max_retries``: re-runs of a trial whose worker process died before it is recorded failed;
    ``on_budget``: what happens to running trials when a budget runs out: ``finish`` (default) lets them
    finish and records them, ``cancel`` stops them and queues them for the next resume.
    """

    trials: int | None = None
    time_s: float | None = None
    cpu_s: float | None = None
    max_failures: int | None = None
    max_retries: int = 2
    on_budget: Literal["finish", "cancel"] = "finish"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Budget:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def violations(metrics: dict[str, float], constraints: dict[str, float]) -> dict[str, float]:
    """Each named constraint's normalised violation: > 0 broken (by that fraction of its limit), <= 0 met."""
    out = {}
    for name, limit in constraints.items():
        if name == "max_accuracy_drop":
            out[name] = (metrics["accuracy_drop"] - limit) / max(limit, 0.01)
        elif name == "min_speedup":
            out[name] = (limit - metrics["speedup"]) / limit
        elif name == "min_speedup_b32":
            out[name] = (limit - metrics["speedup_b32"]) / limit
        elif name == "max_latency_ms":
            out[name] = (metrics["latency_ms"] - limit) / limit
        elif name == "max_size_bytes":
            out[name] = (metrics["size_bytes"] - limit) / limit
        elif name == "max_macs":
            out[name] = (metrics["macs"] - limit) / limit
    return out


@dataclass
class Progress:
    """What the loop reports after every finished trial (for progress bars and logs)."""

    finished: int
    budget_trials: int | None
    elapsed_s: float
    time_left_s: float | None
    best_feasible: float | None
    last_number: int
    last_state: str


def controller_id() -> str:
    return f"controller:{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def abandoned(owner: str, heartbeat_at: datetime) -> bool:
    """A running trial may be taken over when its controller is known dead (same host, no such process) or
    has not written a heartbeat within `LEASE_S`."""
    kind, _, rest = owner.partition(":")
    host, _, pid = rest.rpartition(":")
    if kind == "controller" and host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid():
        return not _pid_alive(int(pid))
    return utcnow() - heartbeat_at > timedelta(seconds=LEASE_S)


class SearchLoop:
    """Drives one study from one process.

    Several processes may drive the same study (``autocompress resume NAME`` on more machines): then
    `rebuild` turns the store's controller state into a controller, and every write of the controller
    state is a compare-and-swap on its event count. A process that finds the shared state moved on (the
    other process asked or told) rebuilds its controller from the store and asks or tells again, so all
    processes share one history and one sequence of trial numbers, and the trial budget is checked in the
    same transaction that starts a trial.
    """

    def __init__(
        self,
        store: StudyStore,
        study: str,
        space: Space,
        controller: Controller,
        executor: Executor,
        budget: Budget,
        on_progress: Callable[[Progress], None] | None = None,
        log: logging.Logger | None = None,
        rebuild: Callable[[dict[str, Any]], Controller] | None = None,
    ) -> None:
        self.store, self.study, self.space = store, study, space
        self.rebuild = rebuild
        self.controller, self.executor, self.budget = controller, executor, budget
        self.on_progress = on_progress or (lambda progress: None)
        self.log = log or logging.getLogger("autocompress.loop")
        self.owner = controller_id()
        record = store.study(study)
        self._seed = record.seed
        self._spent = {"trials": 0, "failed": 0, "wall_s": 0.0, "cpu_s": 0.0, **record.spent}
        self._finished = self._failed = self._taken = 0
        self._count(record.counts)
        self._best = self._best_feasible(store, study)
        self._retries: dict[int, int] = {}

    def _count(self, counts: dict[str, int]) -> None:
        """Trial counts of the whole study (all processes): finished, failed, and taken (every row)."""
        self._finished = counts.get(COMPLETE, 0) + counts.get(FAILED, 0)
        self._failed = counts.get(FAILED, 0)
        self._taken = sum(counts.values())

    def _final_spent(self) -> dict[str, Any]:
        """What the study has spent, for the last write of a session: the store's counts and CPU time (other
        processes may have added to them) with this session's wall time."""
        stored = dict(self.store.study(self.study).spent)
        stored["wall_s"] = max(stored.get("wall_s", 0.0), self._spent["wall_s"])
        return stored

    def _expected(self) -> int | None:
        return self.controller.event_count if self.rebuild else None

    def _reload(self) -> None:
        assert self.rebuild is not None
        self.controller = self.rebuild(self.store.controller_state(self.study))

    @staticmethod
    def _best_feasible(store: StudyStore, study: str) -> float | None:
        values = [
            t.metrics["accuracy"]
            for t in store.trials(study, (COMPLETE,))
            if all(v <= 0 for v in t.violations.values())
        ]
        return max(values) if values else None

    def _stop_reason(self, wall_s: float) -> str | None:
        b = self.budget
        if b.trials is not None and self._finished >= b.trials:
            return f"trial budget reached ({self._finished}/{b.trials} trials)"
        if b.time_s is not None and wall_s >= b.time_s:
            return f"time budget reached ({wall_s:.0f}/{b.time_s:g} s)"
        if b.cpu_s is not None and self._spent["cpu_s"] >= b.cpu_s:
            return f"cpu budget reached ({self._spent['cpu_s'] / 3600:.3g}/{b.cpu_s / 3600:g} cpu-hours)"
        if b.max_failures is not None and self._failed >= b.max_failures:
            return f"failure budget reached ({self._failed}/{b.max_failures} failed trials)"
        return None

    def run(self) -> str:
        """Run until a budget is spent; return why it stopped. On KeyboardInterrupt (or any crash of the
        loop), running trials are queued for the next resume and the exception propagates."""
        redo = []
        for record in self.store.queue_unfinished(self.study, abandoned):
            proposal = self.controller.pending.get(record.number)
            if proposal is None or proposal.policy != Policy.from_dict(record.policy):
                raise RuntimeError(f"trial {record.number}: restored controller disagrees with the store")
            redo.append(proposal)
        if redo:
            self.log.info("re-running trials left unfinished: %s", [p.number for p in redo])
        start = time.monotonic()
        wall_before = self._spent["wall_s"]
        last_beat = start
        reason: str | None = None
        try:
            while True:
                self._spent["wall_s"] = wall_before + time.monotonic() - start
                self._count(self.store.trial_counts(self.study))
                reason = self._stop_reason(self._spent["wall_s"])
                in_flight = len(self.executor.running())
                if reason and in_flight and self.budget.on_budget == "cancel":
                    self.log.info("%s: cancelling running trials %s", reason, self.executor.running())
                    self.executor.shutdown()
                    self.store.queue_unfinished(self.study, lambda owner, _: owner == self.owner)
                    break
                taken = self._taken  # every trial row of the study, left-over ones included
                while (
                    reason is None
                    and in_flight < self.executor.slots
                    and (redo or self.budget.trials is None or taken < self.budget.trials)
                ):
                    new = not redo
                    if not self._submit(redo):
                        break
                    in_flight += 1
                    taken += new
                if in_flight == 0:
                    break
                for finished in self.executor.wait(timeout=1.0):
                    self._spent["wall_s"] = wall_before + time.monotonic() - start
                    self._record(finished, start)
                if time.monotonic() - last_beat > HEARTBEAT_S:
                    self.store.heartbeat(self.study, self.executor.running())
                    last_beat = time.monotonic()
        except BaseException:
            self.executor.shutdown()
            self.store.queue_unfinished(self.study, lambda owner, _: owner == self.owner)
            self._spent["wall_s"] = wall_before + time.monotonic() - start
            self.store.update_study(
                self.study,
                status="interrupted",
                spent=self._final_spent(),
                stop_reason="interrupted; run 'autocompress resume' to go on",
            )
            self.log.info("interrupted after %d finished trials", self._finished)
            raise
        self.executor.shutdown()
        self._spent["wall_s"] = wall_before + time.monotonic() - start
        reason = reason or self._stop_reason(self._spent["wall_s"]) or "no more proposals"
        self.store.update_study(self.study, status="finished", stop_reason=reason, spent=self._final_spent())
        self.log.info("stopped: %s", reason)
        return reason

    def _submit(self, redo: list[Proposal]) -> bool:
        """Start the next trial (a left-over one first); False when another process took the last of the
        trial budget meanwhile."""
        while True:
            before = self._expected()
            proposal = redo[0] if redo else self.controller.ask()
            try:
                self.store.start_trial(
                    self.study,
                    proposal.number,
                    proposal.policy.to_dict(),
                    proposal.finetune_epochs,
                    self.controller.state_dict(),
                    owner=self.owner,
                    expected_events=before,
                )
            except StaleControllerState:
                self._reload()
                self._count(self.store.trial_counts(self.study))
                if self.budget.trials is not None and self._taken >= self.budget.trials and not redo:
                    return False
                continue
            if redo:
                redo.pop(0)
            self.executor.submit(self._job(proposal))
            return True

    def _promotion(self, number: int) -> dict[str, float]:
        """Multi-fidelity bookkeeping stored with the trial: its rung and the trial it was promoted from."""
        promotion_of = getattr(self.controller, "promotion_of", None)
        if promotion_of is None:
            return {}
        rung, parent = promotion_of(number)
        return {"rung": float(rung)} | ({"promoted_from": float(parent)} if parent is not None else {})

    def _job(self, proposal: Proposal) -> Job:
        return Job(
            proposal.number,
            self.space.task,
            proposal.policy.to_dict(),
            proposal.finetune_epochs,
            dict(self.space.measure),
            self._seed + proposal.number,
        )

    def _record(self, finished: Finished, start: float) -> None:
        number = finished.job.number
        if finished.retryable and self._retries.get(number, 0) < self.budget.max_retries:
            self._retries[number] = self._retries.get(number, 0) + 1
            self.log.warning(
                "trial %d: %s; retry %d/%d", number, finished.error, self._retries[number], self.budget.max_retries
            )
            self.executor.submit(finished.job)
            return
        artefacts, metrics, viol, error = [], {}, {}, finished.error
        if finished.result is not None:
            metrics = {**finished.result.metrics, **self._promotion(number)}
            viol = violations(metrics, self.space.constraints)
            for shipped in finished.result.artefacts:  # kind RUNTIME-model, one file per suffix (.xml and .bin)
                for file, data in shipped.files.items():
                    kind, suffix = f"{shipped.runtime}-{Path(file).stem}", Path(file).suffix
                    artefacts.append(self.store.write_artefact(self.study, number, kind, data, suffix))
            self._spent["cpu_s"] += metrics.get("cpu_s", 0.0)
        elif self._retries.get(number):
            error = f"{error} (after {self._retries[number]} retries)"
        outcome = Outcome("complete" if finished.result else "failed", metrics, viol)
        self._finished += 1
        self._failed += outcome.state == FAILED
        self._spent["trials"], self._spent["failed"] = self._finished, self._failed
        while True:
            before = self._expected()
            self.controller.tell(number, outcome)
            try:
                self.store.finish_trial(
                    self.study,
                    number,
                    state=outcome.state,
                    metrics=metrics,
                    violations=viol,
                    error=error,
                    worker=finished.result.worker if finished.result else "",
                    intermediate=finished.result.intermediate if finished.result else [],
                    artefacts=artefacts,
                    controller_state=self.controller.state_dict(),
                    spent=dict(self._spent),
                    expected_events=before,
                )
                break
            except StaleControllerState:
                self._reload()  # the reloaded controller still has this trial pending: tell it again
        if outcome.feasible:
            self._best = max(self._best or 0.0, metrics["accuracy"])
        if outcome.state == COMPLETE:
            self.log.info(
                "trial %d complete: accuracy %.4f speedup %.2fx feasible %s",
                number,
                metrics["accuracy"],
                metrics["speedup"],
                outcome.feasible,
            )
        else:
            self.log.warning("trial %d failed: %s", number, error)
        time_left = None if self.budget.time_s is None else max(0.0, self.budget.time_s - self._spent["wall_s"])
        self.on_progress(
            Progress(
                self._finished,
                self.budget.trials,
                time.monotonic() - start,
                time_left,
                self._best,
                number,
                outcome.state,
            )
        )
