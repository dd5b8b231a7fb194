"""The search loop: the only writer of the store.

It asks the controller for proposals while workers are free, budget is left and the strategy has more
(`Controller.exhausted`), submits them, and records each finished trial together with the controller's state in
one transaction. Resuming is the same loop started on a study whose controller is rebuilt from the store; trials
left running by a dead controller are re-run first, under their old numbers.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy.exc import DBAPIError

from autocompress.errors import SearchStopped
from autocompress.runtime._executors import Executor, Finished, Job
from autocompress.runtime._trial import (
    PARENT_DAMAGED,
    PARENT_MISSING,
    Continuation,
    evaluate_test,
    timings_of,
)
from autocompress.space import Policy, Space, violations
from autocompress.store import (
    ARTEFACT_DAMAGED,
    ARTEFACT_OK,
    COMPLETE,
    FAILED,
    FINISHED,
    RUNNING,
    StaleControllerState,
    StudyStore,
    is_transient,
)
from autocompress.store._models import utcnow
from autocompress.strategies import Controller, Outcome, Proposal

#: a running trial whose controller has not written a heartbeat for this long is taken over by a resume
LEASE_S = 60.0
HEARTBEAT_S = 10.0
#: artefact writes failing one after another (a full or read-only disk) before the loop stops: each such trial
#: is failed with the reason, but a disk that takes nothing would otherwise fail the whole budget
ARTEFACT_WRITE_FAILURES = 3
#: artefact kind of a trial's fine-tuned float weights (safetensors), kept while a proposal may go on from them
WEIGHTS_KIND = "finetuned-weights"
#: first and longest wait between retries of a store call that failed on a transient database error
STORE_BACKOFF_S, STORE_BACKOFF_MAX_S = 0.5, 8.0

T = TypeVar("T")


@dataclass(frozen=True)
class Budget:
    """Totals for a study (not increments), summed over every session that worked on it.

    ``trials``: finished trials (complete or failed); ``time_s``: wall-clock seconds of search;
    ``cpu_s``: CPU seconds used by trials; ``max_failures``: failed trials before the study stops;
    ``max_retries``: re-runs of a trial whose worker process died before it is recorded failed;
    ``store_retry_s``: how long a store call is retried on transient database errors (server restarting,
    connection refused or reset, serialization conflict, SQLite busy) before the search stops;
    ``on_budget``: what happens to running trials when a budget runs out: ``finish`` (default) lets them
    finish and records them, ``cancel`` stops them and queues them for the next resume.
    """

    trials: int | None = None
    time_s: float | None = None
    cpu_s: float | None = None
    max_failures: int | None = None
    max_retries: int = 2
    store_retry_s: float = 60.0
    on_budget: Literal["finish", "cancel"] = "finish"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Budget:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


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
        self._write_failures = 0  # artefact writes failed in a row
        #: trials whose fine-tuned weights are stored, released once no proposal may go on from them
        self._holding = {t.number for t in store.trials(study) if any(a.kind == WEIGHTS_KIND for a in t.artefacts)}

    def _count(self, counts: dict[str, int]) -> None:
        """Trial counts of the whole study (all processes): finished, failed, and taken (every row)."""
        self._finished = counts.get(COMPLETE, 0) + counts.get(FAILED, 0)
        self._failed = counts.get(FAILED, 0)
        self._taken = sum(counts.values())

    def _final_spent(self) -> dict[str, Any]:
        """What the study has spent, for the last write of a session: the store's counts and CPU time (other
        processes may have added to them) with this session's wall time."""
        stored = dict(self._store(lambda: self.store.study(self.study)).spent)
        stored["wall_s"] = max(stored.get("wall_s", 0.0), self._spent["wall_s"])
        return stored

    def _expected(self) -> int | None:
        return self.controller.event_count if self.rebuild else None

    def _reload(self) -> None:
        assert self.rebuild is not None
        self.controller = self.rebuild(self._store(lambda: self.store.controller_state(self.study)))

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
        for record in self._store(lambda: self.store.queue_unfinished(self.study, abandoned)):
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
                self._count(self._store(lambda: self.store.trial_counts(self.study)))
                reason = self._stop_reason(self._spent["wall_s"])
                in_flight = len(self.executor.running())
                if reason and in_flight and self.budget.on_budget == "cancel":
                    self.log.info("%s: cancelling running trials %s", reason, self.executor.running())
                    self.executor.shutdown()
                    self._store(lambda: self.store.queue_unfinished(self.study, lambda owner, _: owner == self.owner))
                    break
                taken = self._taken  # every trial row of the study, left-over ones included
                while reason is None and in_flight < self.executor.slots and (redo or self._may_propose(taken)):
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
                    self._store(partial(self.store.heartbeat, self.study, self.executor.running()))
                    last_beat = time.monotonic()
        except BaseException as exc:
            self.executor.shutdown()
            self._spent["wall_s"] = wall_before + time.monotonic() - start
            why = str(exc) if isinstance(exc, SearchStopped) else "interrupted; run 'autocompress resume' to go on"
            try:  # no retries here: when the database is what failed, resume re-queues these trials instead
                self.store.queue_unfinished(self.study, lambda owner, _: owner == self.owner)
                stored = dict(self.store.study(self.study).spent)
                stored["wall_s"] = max(stored.get("wall_s", 0.0), self._spent["wall_s"])
                self.store.update_study(self.study, status="interrupted", spent=stored, stop_reason=why)
            except DBAPIError as db_error:
                if not is_transient(db_error):
                    raise
                self.log.warning("the store is unreachable: running trials stay for resume to re-run")
            self.log.info("interrupted after %d finished trials: %s", self._finished, why)
            raise
        self.executor.shutdown()
        self._spent["wall_s"] = wall_before + time.monotonic() - start
        reason = reason or self._stop_reason(self._spent["wall_s"])
        if reason is None:
            exhausted = self.controller.exhausted
            reason = f"{self.controller.name} is done: {exhausted}" if exhausted else "no more proposals"
        self._test_front()
        spent = self._final_spent()
        self._store(lambda: self.store.update_study(self.study, status="finished", stop_reason=reason, spent=spent))
        self.log.info("stopped: %s", reason)
        return reason

    def _store(self, call: Callable[[], T], applied: Callable[[], bool] | None = None) -> T:
        """Run one store call (one transaction), retrying transient database errors (`is_transient`) with
        doubling waits for up to ``budget.store_retry_s``; then raise `SearchStopped`.

        A write whose commit may have landed before the connection broke passes `applied`, a read that tells
        whether it did: it is asked before each retry, so no state change is written twice. Finished results
        wait in memory meanwhile (and in Ray's object store for trials that finish during the wait)."""
        first: float | None = None
        delay = STORE_BACKOFF_S
        while True:
            try:
                if first is not None and applied is not None and applied():
                    self.log.info("the store's last write had landed before the connection broke")
                    return None  # type: ignore[return-value]  # only writes, which return None, pass `applied`
                value = call()
                if first is not None:
                    self.log.warning("the study store answers again after %.1f s", time.monotonic() - first)
                return value
            except DBAPIError as exc:
                if not is_transient(exc):
                    raise
                reason = (str(exc.orig or exc).strip().splitlines() or [type(exc).__name__])[0]
                now = time.monotonic()
                if first is None:
                    first = now
                    self.log.warning(
                        "the study store failed (%s); retrying for up to %g s", reason, self.budget.store_retry_s
                    )
                if now - first >= self.budget.store_retry_s:
                    where = self.store.engine.url.render_as_string(hide_password=True)
                    raise SearchStopped(
                        f"the study store at {where} failed for {now - first:.0f} s ({reason}); finished trials "
                        f"not yet stored will be re-run by 'autocompress resume {self.study}' once it answers"
                    ) from None
                time.sleep(min(delay, first + self.budget.store_retry_s - now))
                delay = min(2 * delay, STORE_BACKOFF_MAX_S)

    def _started_here(self, number: int) -> bool:
        """Whether trial `number` is stored as running under this loop (a retried `start_trial` had landed)."""
        found = self.store.trials(self.study, numbers=[number])
        return bool(found) and (found[0].state, found[0].worker) == (RUNNING, self.owner)

    def _finished_already(self, number: int) -> bool:
        """Whether trial `number` is stored as finished (a retried `finish_trial` had landed)."""
        found = self.store.trials(self.study, numbers=[number])
        return bool(found) and found[0].state in FINISHED

    def _test_front(self) -> None:
        """Once the search has chosen, read the test split for its choice: every trial of the feasible Pareto
        front (or, with none feasible, the closest trial), stored as ``test_accuracy``. Ranking and
        constraints never see it; the leaderboard, report and export show it beside the validation figure.
        The baseline's test figure, the reference for those, is read here too."""
        baseline = self.store.study(self.study).baseline
        if baseline and "test_accuracy" not in baseline:
            baseline = {**baseline, "test_accuracy": evaluate_test(self.space.task)}
            self.store.update_study(self.study, baseline=baseline)
        ranked = self.store.ranked(self.study)
        chosen = [r.number for r in ranked if r.feasible and r.pareto_front == 0]
        if not chosen:
            chosen = [r.number for r in ranked[:1]]  # a failed one is dropped below: it has no model
        for trial in self.store.trials(self.study, (COMPLETE,), numbers=chosen):
            models = trial.shipped_artefacts()
            if "test_accuracy" in trial.metrics or not models:
                continue
            files = {f"model{Path(a.path).suffix}": self.store.artefact_file(a).read_bytes() for a in models}
            test = evaluate_test(self.space.task, trial.runtime, files)
            self.store.add_metrics(self.study, trial.number, {"test_accuracy": test})
            self.log.info("trial %d on the front: test accuracy %.4f", trial.number, test)

    def _may_propose(self, taken: int) -> bool:
        """Whether a new trial may start when `taken` trials of the study have: trial budget is left and the
        strategy has more to propose."""
        return self.controller.exhausted is None and (self.budget.trials is None or taken < self.budget.trials)

    def _submit(self, redo: list[Proposal]) -> bool:
        """Start the next trial (a left-over one first); False when another process took the last of the
        trial budget meanwhile, or its trials left the strategy with nothing more to propose."""
        while True:
            before = self._expected()
            proposal = redo[0] if redo else self.controller.ask()
            try:
                self._store(
                    partial(
                        self.store.start_trial,
                        self.study,
                        proposal.number,
                        proposal.policy.to_dict(),
                        proposal.finetune_epochs,
                        self.controller.state_dict(),
                        owner=self.owner,
                        expected_events=before,
                    ),
                    applied=partial(self._started_here, proposal.number),
                )
            except StaleControllerState:
                self._reload()
                self._count(self._store(lambda: self.store.trial_counts(self.study)))
                if not redo and not self._may_propose(self._taken):
                    return False
                continue
            if redo:
                redo.pop(0)
            self.executor.submit(self._job(proposal))
            return True

    def _lineage(self, number: int) -> dict[str, float]:
        """Stored with pending trial `number`: the trial whose weights it went on from (``continued_from``) and,
        under multi-fidelity search, its rung and the trial it was promoted from."""
        parent = self.controller.pending[number].parent
        lineage = {} if parent is None else {"continued_from": float(parent)}
        promotion_of = getattr(self.controller, "promotion_of", None)
        if promotion_of is not None:
            rung, promoted_from = promotion_of(number)
            lineage["rung"] = float(rung)
            if promoted_from is not None:
                lineage["promoted_from"] = float(promoted_from)
        return lineage

    def _job(self, proposal: Proposal) -> Job:
        """The trial's job: it keeps its fine-tuned weights when the proposal asks (a later proposal may go on from
        them), and starts from its parent's (`_continuation`) when it names one."""
        start = None if proposal.parent is None else self._continuation(proposal.parent, proposal.policy)
        return Job(
            proposal.number,
            self.space.task,
            proposal.policy.to_dict(),
            proposal.finetune_epochs,
            {**self.space.measure, **self.space.shipping()},
            self._seed + proposal.number,
            start,
            proposal.keep_weights,
            proposal.schedule_epochs,
        )

    def _continuation(self, parent: int, policy: Policy) -> Continuation | None:
        """Where a trial of `policy` that goes on from trial `parent` starts: the parent's stored fine-tuned
        weights, checked against their sha256, with the parent's policy when it differs (the trial prunes further);
        when they are gone or damaged, the reason (it then fine-tunes from the baseline, and its
        ``parent_weights`` metric says why). None when the parent was not fine-tuned at all."""
        record = self._store(lambda: self.store.trials(self.study, numbers=[parent]))[0]
        epochs = float(record.metrics.get("finetune_epochs", 0.0))
        if not epochs:
            return None
        parent_policy = Policy.from_dict(record.policy)
        same_network = parent_policy == policy
        timings = timings_of(record.metrics) if same_network else None
        stored = [a for a in record.artefacts if a.kind == WEIGHTS_KIND]
        check = self.store.check_artefact(parent, stored[0]) if stored else None
        if check is None or check.status != ARTEFACT_OK:
            why = PARENT_DAMAGED if check is not None and check.status == ARTEFACT_DAMAGED else PARENT_MISSING
            self.log.warning(
                "weights of trial %d are %s (%s): trial going on from them fine-tunes from the baseline",
                parent,
                why,
                check.problem if check else "never stored",
            )
            return Continuation(epochs, None, why, timings=timings)
        seed = record.metrics.get("finetune_seed")
        return Continuation(
            epochs,
            check.path.read_bytes(),
            policy=None if same_network else parent_policy,
            seed=None if seed is None else int(seed),
            timings=timings,
        )

    def _release_weights(self) -> None:
        """Delete the stored weights of every trial no proposal may still go on from (`Controller.weights_needed`)."""
        for number in sorted(self._holding - self.controller.weights_needed()):
            self._store(partial(self.store.remove_artefacts, self.study, number, WEIGHTS_KIND))
            self._holding.discard(number)

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
        result, lineage = finished.result, self._lineage(number)
        if result is not None:
            try:
                for shipped in result.artefacts:  # kind RUNTIME-model, one file per suffix (.xml and .bin)
                    for file, data in shipped.files.items():
                        kind, suffix = f"{shipped.runtime}-{Path(file).stem}", Path(file).suffix
                        artefacts.append(self.store.write_artefact(self.study, number, kind, data, suffix))
                if result.weights is not None:
                    artefacts.append(
                        self.store.write_artefact(self.study, number, WEIGHTS_KIND, result.weights, ".safetensors")
                    )
                self._write_failures = 0
            except OSError as exc:  # the trial ran, but what it made cannot be kept: it fails with the reason
                for written in artefacts:  # no file of a half-written model is left behind
                    self.store.artefact_file(written).unlink(missing_ok=True)
                self._write_failures += 1
                artefacts, result, error = [], None, f"artefact write failed: {exc}"
        if result is not None:
            metrics = {**result.metrics, **lineage}
            viol = violations(metrics, self.space.constraints)
            self._spent["cpu_s"] += metrics.get("cpu_s", 0.0)
        elif self._retries.get(number):
            error = f"{error} (after {self._retries[number]} retries)"
        outcome = Outcome("complete" if result else "failed", metrics, viol)
        self._finished += 1
        self._failed += outcome.state == FAILED
        self._spent["trials"], self._spent["failed"] = self._finished, self._failed
        while True:
            before = self._expected()
            self.controller.tell(number, outcome)
            try:
                self._store(
                    partial(
                        self.store.finish_trial,
                        self.study,
                        number,
                        state=outcome.state,
                        metrics=metrics,
                        violations=viol,
                        error=error,
                        worker=result.worker if result else "",
                        intermediate=result.intermediate if result else [],
                        artefacts=artefacts,
                        controller_state=self.controller.state_dict(),
                        spent=dict(self._spent),
                        expected_events=before,
                    ),
                    applied=partial(self._finished_already, number),
                )
                break
            except StaleControllerState:
                self._reload()  # the reloaded controller still has this trial pending: tell it again
        if any(a.kind == WEIGHTS_KIND for a in artefacts):
            self._holding.add(number)
        self._release_weights()
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
        if self._write_failures >= ARTEFACT_WRITE_FAILURES:
            raise SearchStopped(
                f"{self._write_failures} artefact writes in a row failed (last: {error}); make room under "
                f"{self.store.artifacts_root} and run 'autocompress resume {self.study}'"
            )
