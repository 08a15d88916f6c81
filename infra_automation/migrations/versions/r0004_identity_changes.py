"""Users, tokens and sessions (:mod:`infra_automation.identity`, the API and the portal) and
change records with their approvals (:mod:`infra_automation.changes`).

The tables are created from those modules' own table definitions, where missing (databases
that ran the service before this revision already have them).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from infra_automation.changes.store import metadata as change_tables
from infra_automation.identity import metadata as identity_tables

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    for metadata in (identity_tables, change_tables):
        metadata.create_all(bind, checkfirst=True)


def downgrade() -> None:
    bind = op.get_bind()
    for metadata in (change_tables, identity_tables):
        metadata.drop_all(bind, checkfirst=True)
