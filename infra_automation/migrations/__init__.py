"""Alembic migrations of the database (script_location ``infra_automation:migrations``).

Run by :func:`infra_automation.record.upgrade_database` (``infra db upgrade``; automatically
on SQLite). Column types come from :mod:`infra_automation.migrations.coltypes`: timestamps
are ``timestamptz`` and documents ``jsonb`` on PostgreSQL, ISO text and JSON text on SQLite.
"""
