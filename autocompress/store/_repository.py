"""The study store's repository: study and trial life cycle, each state change one transaction.

Everything above the store sees frozen `StudyRecord`/`TrialRecord` values, never ORM rows. Only the search
loop writes; readers (leaderboard, report, export) open their own short read transactions.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, defer, selectinload

from autocompress.errors import UserError
from autocompress.store._engine import WRITE, default_storage, open_engine, sqlite_path
from autocompress.store._models import ArtefactRow, IntermediateValueRow, MetricRow, StudyRow, TrialRow, utcnow
from autocompress.store._ranking import RankedTrial, rank_feasible, total_violation

#: trial states: running (a worker has it), queued (to be re-run: its controller died or was interrupted)
RUNNING, QUEUED, COMPLETE, FAILED = "running", "queued", "complete", "failed"
FINISHED = (COMPLETE, FAILED)


class StaleControllerState(Exception):
    """Another process changed the study's controller state since this one read it (or took the last
    trial of the budget): reload the controller from the store and try again."""


def _event_count(state: dict[str, Any]) -> int:
    return len(state.get("events", ()))


def _check_fresh(study: StudyRow, expected_events: int | None) -> None:
    if expected_events is not None and _event_count(study.controller_state) != expected_events:
        raise StaleControllerState(
            f"controller state has {_event_count(study.controller_state)} events, expected {expected_events}"
        )


@dataclass(frozen=True)
class Artefact:
    kind: str
    path: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class TrialRecord:
    number: int
    state: str
    policy: dict[str, Any]
    finetune_epochs: float
    metrics: dict[str, Any]
    violations: dict[str, float]
    error: str
    worker: str
    attempts: int
    started_at: datetime
    finished_at: datetime | None
    artefacts: tuple[Artefact, ...] = ()

    @property
    def runtime(self) -> str:
        """The runtime the trial's figures (and so its shipped model) come from; TorchScript for a trial
        stored before deploy targets existed."""
        return str(self.metrics.get("runtime", "torchscript"))

    def shipped_artefacts(self) -> list[Artefact]:
        """The files of the model the trial ships, on `runtime`: kind ``RUNTIME-model``, one row per file
        (``.xml`` and ``.bin`` for OpenVINO); ``model`` is a TorchScript file stored before deploy targets."""
        runtime = self.runtime
        return [
            a for a in self.artefacts if a.kind == f"{runtime}-model" or (runtime, a.kind) == ("torchscript", "model")
        ]

    def as_mapping(self) -> dict[str, Any]:
        return {"number": self.number, "state": self.state, "metrics": self.metrics, "violations": self.violations}


@dataclass(frozen=True)
class StudyRecord:
    name: str
    task: str
    strategy: str
    seed: int
    space: dict[str, Any]
    space_text: str
    budgets: dict[str, Any]
    spent: dict[str, Any]
    controller_state: dict[str, Any]
    baseline: dict[str, Any]
    status: str
    stop_reason: str
    created_at: datetime
    counts: dict[str, int] = field(default_factory=dict)


def _trial_record(row: TrialRow) -> TrialRecord:
    return TrialRecord(
        number=row.number,
        state=row.state,
        policy=row.policy,
        finetune_epochs=row.finetune_epochs,
        metrics=row.metrics,
        violations=row.violations,
        error=row.error,
        worker=row.worker,
        attempts=row.attempts,
        started_at=row.started_at,
        finished_at=row.finished_at,
        artefacts=tuple(Artefact(a.kind, a.path, a.sha256, a.size_bytes) for a in row.artefacts),
    )


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: what `check_artefact` finds: the file as stored, gone, or with other bytes than its stored sha256
ARTEFACT_OK, ARTEFACT_MISSING, ARTEFACT_DAMAGED = "ok", "missing", "damaged"


@dataclass(frozen=True)
class ArtefactCheck:
    """One stored artefact of a trial checked against its stored sha256 (`status`: ok, missing or damaged)."""

    trial: int
    artefact: Artefact
    path: Path
    status: str

    @property
    def problem(self) -> str:
        """One line for a bad artefact (empty when ok): the file, the trial and what is wrong."""
        if self.status == ARTEFACT_MISSING:
            return f"{self.path}: {self.artefact.kind} artefact of trial {self.trial} is missing"
        if self.status == ARTEFACT_DAMAGED:
            return (
                f"{self.path}: {self.artefact.kind} artefact of trial {self.trial} is damaged "
                f"(sha256 differs from the stored {self.artefact.sha256[:12]}...)"
            )
        return ""


class StudyStore:
    """A study store at a SQLAlchemy URL (default ``sqlite:///autocompress.db`` or ``$AUTOCOMPRESS_STORAGE``).

    ``create=False`` opens an existing store only (for readers); it never creates a file or a schema.
    """

    def __init__(self, url: str | None = None, *, create: bool = False) -> None:
        self.url = url or default_storage()
        self.engine = open_engine(self.url, create=create)
        self._writer = self.engine.execution_options(**{WRITE: True})

    def close(self) -> None:
        self.engine.dispose()

    @property
    def artifacts_root(self) -> Path:
        """Where trial artefacts live: beside a SQLite file, else ``$AUTOCOMPRESS_ARTIFACTS`` or the cwd."""
        env = os.environ.get("AUTOCOMPRESS_ARTIFACTS")
        if env:
            return Path(env)
        path = sqlite_path(self.url)
        return (path.resolve().parent if path else Path.cwd()) / "autocompress-artifacts"

    @contextmanager
    def _session(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction. Writers lock what they change (the study row on PostgreSQL, the database on
        SQLite, taken at BEGIN) so concurrent writers queue; readers take no lock and see a snapshot."""
        bind = self._writer if write else self.engine
        with Session(bind, expire_on_commit=False) as session, session.begin():
            yield session

    def _study_row(self, session: Session, name: str, *, lock: bool = False, full: bool = False) -> StudyRow:
        """The study row; its large JSON columns (controller state, space) load only when touched, unless
        `full`: a 100k-trial study's event log is megabytes that a leaderboard has no use for."""
        query = select(StudyRow).where(StudyRow.name == name)
        if not full:
            query = query.options(defer(StudyRow.controller_state), defer(StudyRow.space), defer(StudyRow.space_text))
        if lock:
            query = query.with_for_update()
        row = session.scalars(query).one_or_none()
        if row is None:
            known = session.scalars(select(StudyRow.name).order_by(StudyRow.name).limit(10)).all()
            hint = f"; known: {', '.join(known)}" if known else "; the store has no studies yet"
            raise UserError(f"study {name!r}", f"not found in {self._where()}{hint}")
        return row

    def _where(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    # -- studies ------------------------------------------------------------------------------------------
    def create_study(
        self,
        *,
        name: str,
        task: str,
        strategy: str,
        seed: int,
        space: dict[str, Any],
        space_text: str,
        budgets: dict[str, Any],
        baseline: dict[str, Any],
        controller_state: dict[str, Any],
    ) -> StudyRecord:
        row = StudyRow(
            name=name,
            task=task,
            strategy=strategy,
            seed=seed,
            space=space,
            space_text=space_text,
            budgets=budgets,
            spent={"trials": 0, "wall_s": 0.0, "cpu_s": 0.0},
            controller_state=controller_state,
            baseline=baseline,
            status="running",
            stop_reason="",
            objectives=space.get("objectives"),
            constraints=space.get("constraints"),
        )
        try:
            with self._session(write=True) as session:
                session.add(row)
        except IntegrityError:
            raise UserError(f"--study {name}", "a study of that name exists; resume it or pick another name") from None
        return self.study(name)

    def study_exists(self, name: str) -> bool:
        with self._session() as session:
            return session.scalar(select(func.count()).where(StudyRow.name == name)) == 1

    def check_study(self, name: str) -> None:
        """Raise `UserError` naming the known studies when study `name` is not in the store."""
        with self._session() as session:
            self._study_row(session, name)

    def study(self, name: str) -> StudyRecord:
        with self._session() as session:
            row = self._study_row(session, name, full=True)
            counts = dict(
                session.execute(
                    select(TrialRow.state, func.count()).where(TrialRow.study_id == row.id).group_by(TrialRow.state)
                ).all()
            )
            return self._study_record(row, counts)

    def trial_counts(self, name: str) -> dict[str, int]:
        """Trials per state, every process's included (cheap: no JSON column is read)."""
        with self._session() as session:
            row = self._study_row(session, name)
            return dict(
                session.execute(  # type: ignore[arg-type]
                    select(TrialRow.state, func.count()).where(TrialRow.study_id == row.id).group_by(TrialRow.state)
                ).all()
            )

    def studies(self) -> list[StudyRecord]:
        with self._session() as session:
            rows = session.scalars(select(StudyRow).order_by(StudyRow.created_at)).all()
            counts: dict[int, dict[str, int]] = {}
            for study_id, state, count in session.execute(
                select(TrialRow.study_id, TrialRow.state, func.count()).group_by(TrialRow.study_id, TrialRow.state)
            ):
                counts.setdefault(study_id, {})[state] = count
            return [self._study_record(row, counts.get(row.id, {})) for row in rows]

    @staticmethod
    def _study_record(row: StudyRow, counts: dict[str, int]) -> StudyRecord:
        return StudyRecord(
            row.name,
            row.task,
            row.strategy,
            row.seed,
            row.space,
            row.space_text,
            row.budgets,
            row.spent,
            row.controller_state,
            row.baseline,
            row.status,
            row.stop_reason,
            row.created_at,
            counts,
        )

    def update_study(self, name: str, **values: Any) -> None:
        """Set study columns (status, stop_reason, budgets, spent, controller_state) in one transaction."""
        with self._session(write=True) as session:
            row = self._study_row(session, name, lock=True)
            for key, value in values.items():
                setattr(row, key, value)

    # -- trials -------------------------------------------------------------------------------------------
    def trials(
        self, name: str, states: tuple[str, ...] | None = None, numbers: list[int] | None = None
    ) -> list[TrialRecord]:
        """Trials of study `name` by number, optionally only those in `states` or with `numbers`."""
        with self._session() as session:
            study = self._study_row(session, name)
            query = select(TrialRow).where(TrialRow.study_id == study.id).options(selectinload(TrialRow.artefacts))
            if states:
                query = query.where(TrialRow.state.in_(states))
            if numbers is not None:
                query = query.where(TrialRow.number.in_(numbers))
            return [_trial_record(r) for r in session.scalars(query.order_by(TrialRow.number))]

    def trial(self, name: str, number: int) -> TrialRecord:
        with self._session() as session:
            study = self._study_row(session, name)
            row = session.scalars(
                select(TrialRow)
                .where(TrialRow.study_id == study.id, TrialRow.number == number)
                .options(selectinload(TrialRow.artefacts))
            ).one_or_none()
            if row is None:
                raise UserError(f"--trial {number}", f"study {name!r} has no trial {number}")
            return _trial_record(row)

    def check_artefacts(self, name: str) -> list[ArtefactCheck]:
        """Every stored artefact of study `name`, by trial number, checked against its stored sha256."""
        return [self.check_artefact(t.number, a) for t in self.trials(name) for a in t.artefacts]

    def controller_state(self, name: str) -> dict[str, Any]:
        with self._session() as session:
            return self._study_row(session, name, full=True).controller_state

    def start_trial(
        self,
        name: str,
        number: int,
        policy: dict[str, Any],
        finetune_epochs: float,
        controller_state: dict[str, Any],
        owner: str = "",
        expected_events: int | None = None,
    ) -> None:
        """Record trial `number` as running (a new row, or a queued one re-run) with the controller state
        that asked for it, in one transaction. `owner` names the controller process until a worker reports.

        The number comes from the caller's controller. Processes sharing a study share one controller state:
        each asks from the stored state and writes it back with `expected_events`, so a number is never taken
        twice.

        With `expected_events`, the write is a compare-and-swap on the shared controller state: it raises
        `StaleControllerState` when the stored state has another number of events (another process asked or
        told since), and for a new trial when the study's trial budget is already taken."""
        with self._session(write=True) as session:
            study = self._study_row(session, name, lock=True, full=expected_events is not None)
            _check_fresh(study, expected_events)
            row = session.scalars(
                select(TrialRow).where(TrialRow.study_id == study.id, TrialRow.number == number)
            ).one_or_none()
            now = utcnow()
            if row is None and expected_events is not None and study.budgets.get("trials") is not None:
                taken = session.scalar(select(func.count()).where(TrialRow.study_id == study.id))
                if taken >= study.budgets["trials"]:
                    raise StaleControllerState("the study's trial budget is taken")
            if row is None:
                session.add(
                    TrialRow(
                        study_id=study.id,
                        number=number,
                        state=RUNNING,
                        policy=policy,
                        finetune_epochs=finetune_epochs,
                        metrics={},
                        violations={},
                        error="",
                        worker=owner,
                        attempts=1,
                        started_at=now,
                        heartbeat_at=now,
                    )
                )
            elif row.state == RUNNING and row.worker.startswith("controller:") and row.worker != owner:
                raise RuntimeError(
                    f"trial {number} of {name!r} is running under {row.worker}; processes that share a study "
                    "ask from the shared controller state (start_trial with expected_events)"
                )
            elif row.state in (QUEUED, RUNNING):
                row.state, row.attempts, row.started_at, row.heartbeat_at = RUNNING, row.attempts + 1, now, now
                row.worker = owner
            else:
                raise RuntimeError(f"trial {number} of {name!r} is already {row.state}")
            study.controller_state = controller_state

    def finish_trial(
        self,
        name: str,
        number: int,
        *,
        state: str,
        metrics: dict[str, Any],
        violations: dict[str, float],
        error: str,
        worker: str,
        intermediate: list[tuple[int, str, float]],
        artefacts: list[Artefact],
        controller_state: dict[str, Any],
        spent: dict[str, Any],
        expected_events: int | None = None,
    ) -> None:
        """Record a finished trial, its metrics, artefacts, the controller state after its tell and the budget
        spent, all in one transaction: a crash leaves either all of it or none.

        The store owns the shared counts: ``spent["trials"]`` and ``spent["failed"]`` are counted from the
        trial rows and ``spent["cpu_s"]`` grows by this trial's ``cpu_s``, under the study row's lock, so two
        processes writing one study never double-count; other keys of `spent` (``wall_s``) keep the larger
        of the stored and the given value. `expected_events` makes the controller-state write a
        compare-and-swap, as in `start_trial`."""
        assert state in FINISHED
        with self._session(write=True) as session:
            study = self._study_row(session, name, lock=True, full=expected_events is not None)
            _check_fresh(study, expected_events)
            row = session.scalars(
                select(TrialRow).where(TrialRow.study_id == study.id, TrialRow.number == number)
            ).one()
            if row.state in FINISHED:
                raise RuntimeError(f"trial {number} of {name!r} is already {row.state}")
            row.state, row.metrics, row.violations, row.error, row.worker = state, metrics, violations, error, worker
            row.finished_at = row.heartbeat_at = utcnow()
            row.violation = total_violation(violations) if state == COMPLETE else None
            session.add_all(
                MetricRow(trial_id=row.id, name=k, value=float(v))
                for k, v in metrics.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            )
            for step, metric, value in intermediate:
                session.add(IntermediateValueRow(trial_id=row.id, step=step, name=metric, value=value))
            for art in artefacts:
                session.add(
                    ArtefactRow(
                        trial_id=row.id, kind=art.kind, path=art.path, sha256=art.sha256, size_bytes=art.size_bytes
                    )
                )
            study.controller_state = controller_state
            session.flush()
            counts = dict(
                session.execute(
                    select(TrialRow.state, func.count())
                    .where(TrialRow.study_id == study.id, TrialRow.state.in_(FINISHED))
                    .group_by(TrialRow.state)
                ).all()
            )
            merged = dict(study.spent)
            for key, value in spent.items():
                merged[key] = max(merged.get(key, value), value) if isinstance(value, int | float) else value
            merged["trials"] = counts.get(COMPLETE, 0) + counts.get(FAILED, 0)
            merged["failed"] = counts.get(FAILED, 0)
            merged["cpu_s"] = study.spent.get("cpu_s", 0.0) + float(metrics.get("cpu_s", 0.0))
            study.spent = merged

    def add_metrics(self, name: str, number: int, metrics: dict[str, float]) -> None:
        """Add metrics measured after a trial finished (its test-split figure, read once the search is over)
        to the complete trial `number`; a metric it already has is left as it is."""
        with self._session(write=True) as session:
            study = self._study_row(session, name, lock=True)
            row = session.scalars(
                select(TrialRow).where(TrialRow.study_id == study.id, TrialRow.number == number)
            ).one()
            if row.state != COMPLETE:
                raise RuntimeError(f"trial {number} of {name!r} is {row.state}, not complete")
            new = {k: float(v) for k, v in metrics.items() if k not in row.metrics}
            row.metrics = {**row.metrics, **new}
            session.add_all(MetricRow(trial_id=row.id, name=k, value=v) for k, v in new.items())

    def ranked(self, name: str, top: int | None = None, feasible_only: bool = False) -> list[RankedTrial]:
        """The first `top` (default all) of `rank_rows` over every trial of study `name`, computed from narrow
        indexed queries: objective values (metrics table) of feasible trials only, infeasible trials sorted
        by total violation in SQL, unfinished ones by number, each cut to what `top` still needs."""
        with self._session() as session:
            study = self._study_row(session, name)
            objectives = study.objectives or study.space["objectives"]
            joined = [aliased(MetricRow, name=f"m{i}") for i in range(len(objectives))]
            values = [m.value if d == "max" else -m.value for m, d in zip(joined, objectives.values(), strict=True)]
            query = select(TrialRow.number, *values).where(
                TrialRow.study_id == study.id, TrialRow.state == COMPLETE, TrialRow.violation <= 0
            )
            for m, metric in zip(joined, objectives, strict=True):
                query = query.outerjoin(m, (m.trial_id == TrialRow.id) & (m.name == metric))
            found = session.execute(query).all()
            points = [tuple(row[1:]) for row in found]
            points = [p if None not in p else tuple(-math.inf if v is None else v for v in p) for p in points]
            ranked = rank_feasible([row[0] for row in found], points, top)
            if feasible_only or (top is not None and len(ranked) >= top):
                return ranked
            left = None if top is None else top - len(ranked)
            infeasible = session.execute(
                select(TrialRow.number, TrialRow.violation)
                .where(TrialRow.study_id == study.id, TrialRow.state == COMPLETE, TrialRow.violation > 0)
                .order_by(TrialRow.violation, TrialRow.number)
                .limit(left)
            ).all()
            ranked += [
                RankedTrial(n, len(ranked) + i + 1, False, None, v or 0.0)  # v > 0: never None
                for i, (n, v) in enumerate(infeasible)
            ]
            if top is not None and len(ranked) >= top:
                return ranked
            rest = session.scalars(
                select(TrialRow.number)
                .where(TrialRow.study_id == study.id, TrialRow.state != COMPLETE)
                .order_by(TrialRow.number)
                .limit(None if top is None else top - len(ranked))
            ).all()
            return ranked + [RankedTrial(n, len(ranked) + i + 1, False, None, math.inf) for i, n in enumerate(rest)]

    def queue_unfinished(
        self, name: str, abandoned: Callable[[str, datetime], bool] | None = None
    ) -> list[TrialRecord]:
        """Mark running trials as queued (to be re-run) and return all queued trials.

        `abandoned(owner, heartbeat_at)` selects which running trials to take over (default: all); a live
        controller's trials must not be taken, so resume passes a test of owner liveness and heartbeat age.
        """
        with self._session(write=True) as session:
            study = self._study_row(session, name, lock=True)
            for row in session.scalars(
                select(TrialRow).where(TrialRow.study_id == study.id, TrialRow.state == RUNNING)
            ):
                if abandoned is None or abandoned(row.worker, row.heartbeat_at):
                    row.state = QUEUED
        return self.trials(name, (QUEUED,))

    def heartbeat(self, name: str, numbers: list[int]) -> None:
        if not numbers:
            return
        with self._session(write=True) as session:
            study = self._study_row(session, name)
            for row in session.scalars(
                select(TrialRow).where(TrialRow.study_id == study.id, TrialRow.number.in_(numbers))
            ):
                row.heartbeat_at = utcnow()

    def write_artefact(self, name: str, number: int, kind: str, data: bytes, suffix: str) -> Artefact:
        """Write bytes under the artefacts root and describe them.

        The bytes go to a temp file, are flushed to disk, then renamed into place, so the final name only
        ever holds a whole file. Any `OSError` (a full disk: ``[Errno 28] No space left on device``) removes
        the temp file and propagates; no artefact row exists yet, so the store never points at a partial file.
        """
        folder = self.artifacts_root / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"trial-{number}-{kind}{suffix}"
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        relative = path.relative_to(self.artifacts_root).as_posix()  # the store and its folder may move together
        return Artefact(kind, relative, hashlib.sha256(data).hexdigest(), len(data))

    def remove_artefacts(self, name: str, number: int, kind: str) -> None:
        """Forget trial `number`'s artefacts of `kind` and delete their files (the row first: the store never
        points at a deleted file; a file left by a crash in between is only unreferenced)."""
        with self._session(write=True) as session:
            study = self._study_row(session, name)
            rows = session.scalars(
                select(ArtefactRow)
                .join(TrialRow)
                .where(TrialRow.study_id == study.id, TrialRow.number == number, ArtefactRow.kind == kind)
            ).all()
            removed = [Artefact(r.kind, r.path, r.sha256, r.size_bytes) for r in rows]
            for row in rows:
                session.delete(row)
        for artefact in removed:
            self.artefact_file(artefact).unlink(missing_ok=True)

    def artefact_file(self, artefact: Artefact) -> Path:
        """Where an artefact's file is now. Paths are stored relative to `artifacts_root`; a store written
        before that holds absolute ones, used as they are while they exist, else looked up as
        ``<study>/<file>`` under the root (the layout `write_artefact` has always used), so a moved old store
        still finds its files."""
        path = Path(artefact.path)
        if not path.is_absolute():
            return self.artifacts_root / path
        if path.exists():
            return path
        return self.artifacts_root / path.parent.name / path.name

    def check_artefact(self, trial: int, artefact: Artefact) -> ArtefactCheck:
        """Check one artefact's file against its stored sha256 (and size, which is cheaper to tell first)."""
        path = self.artefact_file(artefact)
        if not path.is_file():
            return ArtefactCheck(trial, artefact, path, ARTEFACT_MISSING)
        if path.stat().st_size != artefact.size_bytes or sha256_file(path) != artefact.sha256:
            return ArtefactCheck(trial, artefact, path, ARTEFACT_DAMAGED)
        return ArtefactCheck(trial, artefact, path, ARTEFACT_OK)
