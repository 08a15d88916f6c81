"""The as-built state of each project (its docs ledger) in the database, no longer a file.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from infra_automation.migrations.coltypes import DOCUMENT, TIMESTAMP

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "infra_project_state",
        sa.Column("project", sa.String(100), primary_key=True),
        sa.Column("ledger", DOCUMENT, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("infra_project_state")
