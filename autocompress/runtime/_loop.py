"""The search loop: the only writer of the store.

It asks the controller for proposals while workers are free and budget is left, submits them, and records
each finished trial together with the controller's state in one transaction. Resuming is the same loop
started on a study whose controller is rebuilt from the store; trials left running are re-run first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from autocompress.runtime._executors import Executor, Finished, Job
from autocompress.search import Controller, Outcome, Proposal
from autocompress.space import Policy, Space
from autocompress.store import COMPLETE, FAILED, QUEUED, StudyStore


@dataclass(frozen=True)
class Budget:
    """Totals for a study (not increments): finished trials and wall-clock seconds, summed over sessions.

    ``max_retries``: how often a trial whose worker process died is re-run before it is recorded failed.
    """

    trials: int | None = None
    time_s: float | None = None
    max_retries: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Budget:
        return cls(**{k: data.get(k) for k in ("trials", "time_s")}, max_retries=data.get("max_retries", 2))


def violations(metrics: dict[str, float], constraints: dict[str, float]) -> dict[str, float]:
    """Each named constraint's normalised violation: > 0 broken (by that fraction of its limit), <= 0 met."""
    out = {}
    for name, limit in constraints.items():
        if name == "max_accuracy_drop":
            out[name] = (metrics["accuracy_drop"] - limit) / max(limit, 0.01)
        elif name == "min_speedup":
            out[name] = (limit - metrics["speedup"]) / limit
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
    best_feasible: float | None
    last_number: int
    last_state: str


class SearchLoop:
    def __init__(self, store: StudyStore, study: str, space: Space, controller: Controller, executor: Executor,
                 budget: Budget, on_progress: Callable[[Progress], None] | None = None) -> None:
        self.store, self.study, self.space = store, study, space
        self.controller, self.executor, self.budget = controller, executor, budget
        self.on_progress = on_progress or (lambda progress: None)
        record = store.study(study)
        self._seed = record.seed
        self._spent = dict(record.spent)
        self._finished = sum(record.counts.get(s, 0) for s in (COMPLETE, FAILED))
        self._best = self._best_feasible(store, study)
        self._attempts: dict[int, int] = {}

    @staticmethod
    def _best_feasible(store: StudyStore, study: str) -> float | None:
        values = [t.metrics["accuracy"] for t in store.trials(study, (COMPLETE,))
                  if all(v <= 0 for v in t.violations.values())]
        return max(values) if values else None

    def _stop_reason(self, elapsed: float) -> str | None:
        if self.budget.trials is not None and self._finished >= self.budget.trials:
            return f"trial budget reached ({self._finished}/{self.budget.trials})"
        if self.budget.time_s is not None and self._spent.get("wall_s", 0.0) + elapsed >= self.budget.time_s:
            return f"time budget reached ({self.budget.time_s:g} s)"
        return None

    def run(self) -> str:
        """Run until a budget is spent; return why it stopped. On KeyboardInterrupt, running trials are
        queued for the next resume and the interrupt propagates."""
        queued = self.store.queue_unfinished(self.study)
        redo = [self.controller.pending[t.number] for t in queued]
        for proposal, record in zip(redo, queued, strict=True):
            if proposal.policy != Policy.from_dict(record.policy):
                raise RuntimeError(f"trial {record.number}: restored controller disagrees with the store")
        start = time.monotonic()
        wall_before = self._spent.get("wall_s", 0.0)
        try:
            while True:
                elapsed = time.monotonic() - start
                reason = self._stop_reason(elapsed)
                in_flight = len(self.executor.running())
                while reason is None and in_flight < self.executor.slots and (
                    self.budget.trials is None or self._finished + in_flight < self.budget.trials
                ):
                    proposal = redo.pop(0) if redo else self.controller.ask()
                    self._submit(proposal)
                    in_flight += 1
                if in_flight == 0:
                    break
                for finished in self.executor.wait(timeout=1.0):
                    self._spent["wall_s"] = wall_before + time.monotonic() - start
                    self._record(finished, start)
        except BaseException:
            self.executor.shutdown()
            self.store.queue_unfinished(self.study)
            self._spent["wall_s"] = wall_before + time.monotonic() - start
            self.store.update_study(self.study, status="interrupted", spent=self._spent,
                                    stop_reason="interrupted; run 'autocompress resume' to go on")
            raise
        self.executor.shutdown()
        self._spent["wall_s"] = wall_before + time.monotonic() - start
        reason = self._stop_reason(time.monotonic() - start) or "no more proposals"
        self.store.update_study(self.study, status="finished", stop_reason=reason, spent=self._spent)
        return reason

    def _submit(self, proposal: Proposal) -> None:
        self.store.start_trial(self.study, proposal.number, proposal.policy.to_dict(), proposal.finetune_epochs,
                               self.controller.state_dict())
        self.executor.submit(self._job(proposal))

    def _job(self, proposal: Proposal) -> Job:
        return Job(proposal.number, self.space.task, proposal.policy.to_dict(), proposal.finetune_epochs,
                   dict(self.space.measure), self._seed + proposal.number)

    def _record(self, finished: Finished, start: float) -> None:
        number = finished.job.number
        if finished.retryable and self._attempts.get(number, 0) < self.budget.max_retries:
            self._attempts[number] = self._attempts.get(number, 0) + 1
            self.executor.submit(finished.job)
            return
        artefacts, metrics, viol, error = [], {}, {}, finished.error
        if finished.result is not None:
            metrics = finished.result.metrics
            viol = violations(metrics, self.space.constraints)
            artefacts.append(self.store.write_artefact(self.study, number, "model", finished.result.artefact,
                                                       ".pt"))
            self._spent["cpu_s"] = self._spent.get("cpu_s", 0.0) + metrics.get("cpu_s", 0.0)
        outcome = Outcome(COMPLETE if finished.result else FAILED, metrics, viol)
        self.controller.tell(number, outcome)
        self._finished += 1
        self._spent["trials"] = self._finished
        self.store.finish_trial(
            self.study, number, state=outcome.state, metrics=metrics, violations=viol, error=error,
            worker=finished.result.worker if finished.result else "",
            intermediate=finished.result.intermediate if finished.result else [],
            artefacts=artefacts, controller_state=self.controller.state_dict(), spent=dict(self._spent),
        )
        if outcome.feasible:
            self._best = max(self._best or 0.0, metrics["accuracy"])
        self.on_progress(Progress(self._finished, self.budget.trials, time.monotonic() - start, self._best,
                                  number, outcome.state))


__all__ = ["QUEUED", "Budget", "Progress", "SearchLoop", "violations"]
