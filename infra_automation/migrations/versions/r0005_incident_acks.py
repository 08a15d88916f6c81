"""Acknowledgements of incidents (:mod:`infra_automation.metrics`): who responded, when.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from infra_automation.metrics.store import metadata as metrics_tables

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    metrics_tables.create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    metrics_tables.drop_all(op.get_bind(), checkfirst=True)
