"""Revisions, oldest first: 0001 the tables as they were before Alembic, 0002 leases, host
bindings and the run's error."""
