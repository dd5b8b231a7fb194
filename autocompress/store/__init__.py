"""The study store: SQLAlchemy 2 schema with Alembic migrations, repository and ranking."""

from autocompress.store._engine import DEFAULT_STORAGE, default_storage, head_revision, open_engine
from autocompress.store._ranking import (
    RankedTrial,
    RankRow,
    dominates,
    hypervolume_2d,
    oriented,
    pareto_fronts,
    rank_rows,
    rank_trials,
    total_violation,
)
from autocompress.store._repository import (
    COMPLETE,
    FAILED,
    FINISHED,
    QUEUED,
    RUNNING,
    Artefact,
    StaleControllerState,
    StudyRecord,
    StudyStore,
    TrialRecord,
    sha256_file,
)

__all__ = [
    "COMPLETE",
    "DEFAULT_STORAGE",
    "FAILED",
    "FINISHED",
    "QUEUED",
    "RUNNING",
    "Artefact",
    "RankRow",
    "RankedTrial",
    "StaleControllerState",
    "StudyRecord",
    "StudyStore",
    "TrialRecord",
    "default_storage",
    "dominates",
    "head_revision",
    "hypervolume_2d",
    "open_engine",
    "oriented",
    "pareto_fronts",
    "rank_rows",
    "rank_trials",
    "sha256_file",
    "total_violation",
]
