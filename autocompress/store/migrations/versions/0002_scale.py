"""Store at scale: store-allocated trial numbers, declared objectives and constraints per study, a total
violation per trial and a metrics table, so that ranking runs on narrow indexed columns.

Existing rows are backfilled from the JSON columns of revision 0001.

Revision ID: 0002
Revises: 0001
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _json(value):  # type: ignore[no-untyped-def]
    return json.loads(value) if isinstance(value, str) else value


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("next_number", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("objectives", sa.JSON, nullable=True))
        batch.add_column(sa.Column("constraints", sa.JSON, nullable=True))
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("violation", sa.Float, nullable=True))
    op.create_index("ix_trials_study_state_violation", "trials", ["study_id", "state", "violation"])
    op.create_table(
        "trial_metrics",
        sa.Column("trial_id", sa.Integer, sa.ForeignKey("trials.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("value", sa.Float, nullable=True),
    )

    conn = op.get_bind()
    studies = conn.execute(sa.text("SELECT id, space FROM studies")).all()
    for study_id, space in studies:
        space = _json(space)
        top = conn.execute(sa.text("SELECT MAX(number) FROM trials WHERE study_id = :s"), {"s": study_id}).scalar()
        conn.execute(
            sa.text("UPDATE studies SET next_number = :n, objectives = :o, constraints = :c WHERE id = :s"),
            {
                "n": 0 if top is None else top + 1,
                "o": json.dumps(space.get("objectives", {})),
                "c": json.dumps(space.get("constraints", {})),
                "s": study_id,
            },
        )
    for trial_id, state, metrics, violations in conn.execute(
        sa.text("SELECT id, state, metrics, violations FROM trials")
    ).all():
        if state == "complete":
            total = sum(max(0.0, float(v)) for v in _json(violations).values())
            conn.execute(sa.text("UPDATE trials SET violation = :v WHERE id = :t"), {"v": total, "t": trial_id})
        rows = [
            {"t": trial_id, "n": k, "v": float(v)}
            for k, v in _json(metrics).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        if rows:
            conn.execute(sa.text("INSERT INTO trial_metrics (trial_id, name, value) VALUES (:t, :n, :v)"), rows)


def downgrade() -> None:
    op.drop_table("trial_metrics")
    op.drop_index("ix_trials_study_state_violation", "trials")
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("violation")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("constraints")
        batch.drop_column("objectives")
        batch.drop_column("next_number")
