"""DDL types of the migrations, fixed here so that a revision never changes with the code."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

TIMESTAMP = sa.String(40).with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")
DOCUMENT = sa.Text().with_variant(postgresql.JSONB(), "postgresql")
SEQUENCE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
