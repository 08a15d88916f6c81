"""Identities of the service: users, API tokens and portal sessions (SQLAlchemy Core).

The tables live on their own :data:`metadata` (not the run record's) until they become an
Alembic revision; :func:`create_identity_tables` creates them where missing.

- A **user** has a name, one role (:class:`Role`), a password hash and, for a ``tam``, the
  projects she is assigned to.
- An **API token** reads ``infra_<id>_<secret>``: ``id`` finds the row, ``secret`` is checked
  against its argon2 hash. The full token is returned once, by :meth:`IdentityStore.create_token`;
  a revoked token stops working at once.
- A **session** (password login of the portal) is a token of the same shape with an expiry.

Passwords are hashed with argon2id (argon2-cffi defaults); tokens and session secrets are 256
random bits, hashed with a cheaper argon2id setting (guessing them is hopeless anyway, and
every API call checks one).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine

from infra_automation.events import utcnow
from infra_automation.exceptions import ConfigurationError
from infra_automation.record import Timestamp
from infra_automation.validation import NAME_RE

USER_RE = re.compile(r"^[a-z][a-z0-9._-]{1,62}$")
TOKEN_RE = re.compile(r"^infra_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
SESSION_HOURS = 8
MIN_PASSWORD = 8
PASSWORDS = PasswordHasher()
SECRETS = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class Role(StrEnum):
    VIEWER = "viewer"
    TAM = "tam"
    ENGINEER = "engineer"
    APPROVER = "approver"
    ADMIN = "admin"


metadata = sa.MetaData()

users = sa.Table(
    "infra_users",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("password_hash", sa.String(200)),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
)

user_projects = sa.Table(
    "infra_user_projects",
    metadata,
    sa.Column("user", sa.String(64), sa.ForeignKey("infra_users.name"), primary_key=True),
    sa.Column("project", sa.String(100), primary_key=True),
)

tokens = sa.Table(
    "infra_tokens",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("user", sa.String(64), sa.ForeignKey("infra_users.name"), nullable=False),
    sa.Column("kind", sa.String(10), nullable=False),  # api | session
    sa.Column("label", sa.String(100), nullable=False),
    sa.Column("secret_hash", sa.String(200), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp),
    sa.Column("revoked_at", Timestamp),
    sa.Index("ix_infra_tokens_user", "user"),
)


def create_identity_tables(engine: Engine) -> None:
    """Create the identity tables that do not exist yet."""
    metadata.create_all(engine, checkfirst=True)


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    projects: tuple[str, ...] = ()
    disabled: bool = False


@dataclass(frozen=True)
class TokenInfo:
    """A token without its secret (what listings show)."""

    id: str
    user: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class IssuedToken:
    """A token just created: ``value`` is shown once and stored only as a hash."""

    info: TokenInfo
    value: str


def check_user_name(name: str) -> str:
    if not USER_RE.fullmatch(name):
        raise ConfigurationError(
            f"user name {name!r}: must match {USER_RE.pattern} (lower-case, 2-63 characters)"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ConfigurationError(f"password: must be at least {MIN_PASSWORD} characters")
    return password


def _check_projects(projects: Iterable[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(projects))
    bad = [p for p in out if not NAME_RE.fullmatch(p)]
    if bad:
        raise ConfigurationError(f"project {bad[0]!r}: not a project name ({NAME_RE.pattern})")
    return out


class IdentityStore:
    """Users, tokens and sessions in the database of ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- users --------------------------------------------------------------------------

    def add_user(
        self, name: str, role: Role, password: str | None, projects: Sequence[str] = ()
    ) -> User:
        """A new user (ConfigurationError if the name is taken or a value is invalid)."""
        check_user_name(name)
        assigned = _check_projects(projects)
        digest = PASSWORDS.hash(check_password(password)) if password is not None else None
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    users.insert().values(
                        name=name,
                        role=role.value,
                        password_hash=digest,
                        created_at=utcnow(),
                        disabled=False,
                    )
                )
                if assigned:
                    conn.execute(
                        user_projects.insert(), [{"user": name, "project": p} for p in assigned]
                    )
        except sa.exc.IntegrityError:
            raise ConfigurationError(f"user {name!r} exists already") from None
        return User(name, role, assigned)

    def set_password(self, name: str, password: str) -> None:
        """Replace the password of user ``name`` (ConfigurationError if there is none)."""
        digest = PASSWORDS.hash(check_password(password))
        with self.engine.begin() as conn:
            done = conn.execute(
                users.update().where(users.c.name == name).values(password_hash=digest)
            )
        if not done.rowcount:
            raise ConfigurationError(f"no user {name!r}")

    def get_user(self, name: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.name == name)).first()
            if row is None:
                return None
            return self._user(conn, row._mapping)

    def list_users(self) -> list[User]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(users).order_by(users.c.name)).all()
            return [self._user(conn, r._mapping) for r in rows]

    @staticmethod
    def _user(conn: sa.Connection, row: sa.RowMapping) -> User:
        query = sa.select(user_projects.c.project).where(user_projects.c.user == row["name"])
        projects = tuple(sorted(conn.execute(query).scalars()))
        return User(row["name"], Role(row["role"]), projects, bool(row["disabled"]))

    def check_password(self, name: str, password: str) -> User | None:
        """The user if ``password`` is hers (None otherwise, also for unknown users)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.name == name)).first()
            digest = row._mapping["password_hash"] if row is not None else None
            if row is None or digest is None:
                _burn(password)  # the same time for unknown users: no name oracle
                return None
            if not _verify(PASSWORDS, digest, password):
                return None
            user = self._user(conn, row._mapping)
        return None if user.disabled else user

    # --- tokens and sessions ----------------------------------------------------------------

    def create_token(self, user: str, label: str = "") -> IssuedToken:
        """A new API token of ``user``; the value is returned once, here."""
        return self._issue(user, "api", label or "api token", expires_at=None)

    def create_session(self, user: str) -> IssuedToken:
        expires = utcnow() + timedelta(hours=SESSION_HOURS)
        return self._issue(user, "session", "portal session", expires_at=expires)

    def _issue(self, user: str, kind: str, label: str, expires_at: datetime | None) -> IssuedToken:
        if self.get_user(user) is None:
            raise ConfigurationError(f"no user {user!r}")
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = utcnow()
        label = label[:100]
        values = {
            "id": token_id,
            "user": user,
            "kind": kind,
            "label": label,
            "secret_hash": SECRETS.hash(secret),
            "created_at": now,
            "expires_at": expires_at,
        }
        with self.engine.begin() as conn:
            conn.execute(tokens.insert().values(**values))
        info = TokenInfo(token_id, user, label, now, expires_at, None)
        return IssuedToken(info, f"infra_{token_id}_{secret}")

    def user_for_token(self, value: str, kind: str = "api") -> User | None:
        """The user a valid, unrevoked, unexpired token of ``kind`` belongs to."""
        match = TOKEN_RE.fullmatch(value)
        if match is None:
            return None
        token_id, secret = match.groups()
        with self.engine.connect() as conn:
            query = sa.select(tokens).where(tokens.c.id == token_id, tokens.c.kind == kind)
            row = conn.execute(query).first()
            if row is None:
                return None
            data = row._mapping
            expired = data["expires_at"] is not None and data["expires_at"] <= utcnow()
            if data["revoked_at"] is not None or expired:
                return None
            if not _verify(SECRETS, data["secret_hash"], secret):
                return None
            user_row = conn.execute(sa.select(users).where(users.c.name == data["user"])).first()
            if user_row is None:
                return None
            user = self._user(conn, user_row._mapping)
        return None if user.disabled else user

    def revoke(self, token_id: str, *, user: str | None = None) -> bool:
        """Revoke a token (only ``user``'s when given); False if there is no such token."""
        query = tokens.update().where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
        if user is not None:
            query = query.where(tokens.c.user == user)
        with self.engine.begin() as conn:
            return conn.execute(query.values(revoked_at=utcnow())).rowcount > 0

    def end_session(self, value: str) -> None:
        match = TOKEN_RE.fullmatch(value)
        if match is not None:
            self.revoke(match.group(1))

    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        """API tokens (of ``user``, or everyone's), newest first."""
        query = sa.select(tokens).where(tokens.c.kind == "api").order_by(tokens.c.created_at.desc())
        if user is not None:
            query = query.where(tokens.c.user == user)
        with self.engine.connect() as conn:
            return [_token_info(r._mapping) for r in conn.execute(query)]


def _token_info(row: sa.RowMapping) -> TokenInfo:
    return TokenInfo(
        id=row["id"],
        user=row["user"],
        label=row["label"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )


def _verify(hasher: PasswordHasher, digest: str, value: str) -> bool:
    try:
        return hasher.verify(digest, value)
    except (VerificationError, InvalidHashError):
        return False


@cache
def _dummy_hash() -> str:
    return PASSWORDS.hash(secrets.token_urlsafe(16))


def _burn(password: str) -> None:
    _verify(PASSWORDS, _dummy_hash(), password)
