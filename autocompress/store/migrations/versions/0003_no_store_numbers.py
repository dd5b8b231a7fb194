"""Trial numbers come from the shared controller state (compare-and-swap in `start_trial`), not from the
store: the unused ``studies.next_number`` column of revision 0002 goes.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a plain ALTER (SQLite >= 3.35, PostgreSQL): a batch copy of `studies` would drop the old table, and with
    # foreign keys on, its ON DELETE CASCADE would delete every trial with it
    op.execute("ALTER TABLE studies DROP COLUMN next_number")


def downgrade() -> None:
    op.add_column("studies", sa.Column("next_number", sa.Integer, nullable=False, server_default="0"))
    op.execute(
        "UPDATE studies SET next_number = (SELECT COALESCE(MAX(number) + 1, 0) FROM trials WHERE study_id = studies.id)"
    )
