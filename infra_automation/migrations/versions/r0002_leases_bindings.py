"""Leases (project and device locks), host bindings, the error of a run, and the indexes of
the run list (newest first, by project, by requester) and of a run's events after a seq.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from infra_automation.migrations.coltypes import TIMESTAMP

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "infra_leases",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("acquired_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False, index=True),
        sa.Column("heartbeat", TIMESTAMP, nullable=False),
    )
    op.create_table(
        "infra_host_bindings",
        sa.Column("vm", sa.String(100), primary_key=True),
        sa.Column("host", sa.String(100), nullable=False),
        sa.Column("group", sa.String(100), nullable=False),
        sa.Column("bound_at", TIMESTAMP, nullable=False),
        sa.UniqueConstraint("group", "host", name="uq_host_binding_host"),
    )
    with op.batch_alter_table("infra_runs") as batch:
        batch.add_column(sa.Column("error", sa.Text))
    op.create_index("ix_infra_runs_started", "infra_runs", ["started_at", "id"])
    op.create_index("ix_infra_runs_project_started", "infra_runs", ["project", "started_at"])
    op.create_index("ix_infra_runs_requester_started", "infra_runs", ["requester", "started_at"])
    op.create_index("ix_infra_events_run_seq", "infra_events", ["run_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_infra_events_run_seq", "infra_events")
    for name in ("requester_started", "project_started", "started"):
        op.drop_index(f"ix_infra_runs_{name}", "infra_runs")
    with op.batch_alter_table("infra_runs") as batch:
        batch.drop_column("error")
    op.drop_table("infra_host_bindings")
    op.drop_table("infra_leases")
