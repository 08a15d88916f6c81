"""The tables as they were before Alembic: runs, steps, events, IPAM allocations.

Databases created before Alembic already have them: only the missing ones are created, so
such a database is adopted as it is.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

from infra_automation.migrations.coltypes import DOCUMENT, SEQUENCE, TIMESTAMP

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _runs() -> None:
    op.create_table(
        "infra_runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("project", sa.String(100), nullable=False, index=True),
        sa.Column("requester", sa.String(200)),
        sa.Column("check_mode", sa.Boolean, nullable=False),
        sa.Column("parallel", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("resumed_from", sa.String(64)),
        sa.Column("pid", sa.Integer),
        sa.Column("host", sa.String(255)),
        sa.Column("changed", sa.Boolean, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP),
        sa.Column("request", DOCUMENT, nullable=False),
        sa.Column("plan", DOCUMENT, nullable=False),
    )


def _steps() -> None:
    op.create_table(
        "infra_steps",
        sa.Column("run_id", sa.String(64), sa.ForeignKey("infra_runs.id"), primary_key=True),
        sa.Column("step_id", sa.String(100), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("department", sa.String(100), nullable=False),
        sa.Column("executor", sa.String(100), nullable=False),
        sa.Column("needs", DOCUMENT, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("changed", sa.Boolean, nullable=False),
        sa.Column("reused", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("error_kind", sa.String(20)),
        sa.Column("diff", sa.Text, nullable=False),
        sa.Column("outputs", DOCUMENT, nullable=False),
        sa.Column("targets", DOCUMENT, nullable=False),
        sa.Column("artifacts", DOCUMENT, nullable=False),
        sa.Column("started_at", TIMESTAMP),
        sa.Column("finished_at", TIMESTAMP),
        sa.Column("duration", sa.Float),
    )


def _events() -> None:
    op.create_table(
        "infra_events",
        sa.Column("seq", SEQUENCE, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False, index=True),
        sa.Column("step_id", sa.String(100)),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("data", DOCUMENT, nullable=False),
    )


def _ipam() -> None:
    op.create_table(
        "ipam_allocations",
        sa.Column("project", sa.String(64), primary_key=True),
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("vlan_id", sa.Integer, nullable=False),
        sa.Column("subnet", sa.String(43), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("allocated_at", sa.String(40), nullable=False),
        sa.UniqueConstraint("vlan_id", name="uq_ipam_vlan"),
        sa.UniqueConstraint("subnet", name="uq_ipam_subnet"),
    )


TABLES: dict[str, Callable[[], None]] = {
    "infra_runs": _runs,
    "infra_steps": _steps,
    "infra_events": _events,
    "ipam_allocations": _ipam,
}


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, create in TABLES.items():
        if name not in existing:
            create()


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
