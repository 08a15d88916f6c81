"""Which worker ran a step, from which queue (``infra worker``, :mod:`infra_automation.workers`).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("infra_steps") as batch:
        batch.add_column(sa.Column("worker", sa.String(255)))
        batch.add_column(sa.Column("queue", sa.String(100)))


def downgrade() -> None:
    with op.batch_alter_table("infra_steps") as batch:
        batch.drop_column("queue")
        batch.drop_column("worker")
