"""The one table the metrics add: acknowledgements of incidents (SQLAlchemy Core).

Incidents themselves are not stored: they are derived from the record every time
(:mod:`infra_automation.metrics.incidents`), so they can never disagree with it. What the
record cannot know is that someone looked at one: ``infra incidents ack ID`` (or the portal)
writes a row here. The table lives on its own :data:`metadata` until it becomes an Alembic
revision; :func:`create_metrics_tables` creates it where missing.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Engine

from infra_automation.events import utcnow
from infra_automation.exceptions import RecordError
from infra_automation.metrics.history import Acknowledgement
from infra_automation.record import SEQ, Timestamp, describe_failure

metadata = sa.MetaData()

acknowledgements = sa.Table(
    "infra_incident_acks",
    metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(200), nullable=False, index=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("at", Timestamp, nullable=False),
)


def create_metrics_tables(engine: Engine) -> None:
    """Create the acknowledgements table where missing (until its Alembic revision)."""
    try:
        metadata.create_all(engine, checkfirst=True)
    except sa.exc.SQLAlchemyError as exc:
        raise RecordError(describe_failure(exc, engine)) from None


def add_acknowledgement(
    engine: Engine,
    incident_id: str,
    actor: str,
    *,
    comment: str | None = None,
    at: datetime | None = None,
) -> Acknowledgement:
    """Record that ``actor`` acknowledged ``incident_id`` (now, or ``at``)."""
    ack = Acknowledgement(incident_id, actor, at or utcnow(), comment)
    create_metrics_tables(engine)
    row = {"incident_id": incident_id, "actor": actor, "comment": comment, "at": ack.at}
    try:
        with engine.begin() as conn:
            conn.execute(acknowledgements.insert(), row)
    except sa.exc.SQLAlchemyError as exc:
        raise RecordError(describe_failure(exc, engine)) from None
    return ack
