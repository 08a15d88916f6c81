"""An index on the runs' status for the queue sweep: the queued runs, oldest first.

The server's sweep (``status = 'queued' ORDER BY started_at, id``) and the schedulers'
(``status IN ('queued', 'running')``) read it instead of the whole runs table.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_infra_runs_status_started"


def upgrade() -> None:
    op.create_index(INDEX, "infra_runs", ["status", "started_at", "id"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="infra_runs")
