"""Alembic environment: runs on the connection handed over in ``config.attributes``
(:func:`infra_automation.record.upgrade_database`), or on ``sqlalchemy.url`` when Alembic's
own command line is used. On PostgreSQL an advisory lock serializes concurrent upgrades."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection

MIGRATION_LOCK = 7_210_001  # pg_advisory_xact_lock key of schema upgrades


def _run(connection: Connection) -> None:
    context.configure(connection=connection, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        context.run_migrations()


def _main() -> None:
    given = context.config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    engine = sa.create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


_main()
