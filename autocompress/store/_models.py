"""SQLAlchemy 2 tables of the study store. JSON columns for structured values, never pickle.

Schema changes go through an Alembic migration in ``autocompress/store/migrations/versions``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class StudyRow(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    task: Mapped[str] = mapped_column(String(500))
    strategy: Mapped[str] = mapped_column(String(100))
    seed: Mapped[int] = mapped_column(Integer)
    space: Mapped[dict[str, Any]]
    space_text: Mapped[str] = mapped_column(Text)
    budgets: Mapped[dict[str, Any]]
    spent: Mapped[dict[str, Any]]
    controller_state: Mapped[dict[str, Any]]
    baseline: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20))
    objectives: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    constraints: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    stop_reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    trials: Mapped[list[TrialRow]] = relationship(back_populates="study", order_by="TrialRow.number")


class TrialRow(Base):
    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("study_id", "number", name="uq_trial_number"),
        Index("ix_trials_study_state_violation", "study_id", "state", "violation"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20), index=True)
    policy: Mapped[dict[str, Any]]
    finetune_epochs: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    violations: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: total normalised violation of a complete trial (0 = feasible); null for other states
    violation: Mapped[float | None] = mapped_column(Float, default=None)
    error: Mapped[str] = mapped_column(Text, default="")
    worker: Mapped[str] = mapped_column(String(200), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    study: Mapped[StudyRow] = relationship(back_populates="trials")
    artefacts: Mapped[list[ArtefactRow]] = relationship(back_populates="trial")


class IntermediateValueRow(Base):
    __tablename__ = "intermediate_values"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)


class MetricRow(Base):
    """One numeric metric of a trial, so ranking and queries read indexed columns instead of JSON."""

    __tablename__ = "trial_metrics"

    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[float | None] = mapped_column(Float)


class ArtefactRow(Base):
    __tablename__ = "artefacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(50))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)

    trial: Mapped[TrialRow] = relationship(back_populates="artefacts")
