"""Secrets: read from the environment or a secrets backend, never from the command line.

Every secret value that is read is remembered by the process-wide :data:`REDACTOR`;
the run record, the logs and the generated docs pass text through :func:`redact`
before writing it, so a secret that leaks into a diff or an error message is masked.

Where secrets come from is an extension point (one Protocol, one registry)::

    INFRA_SECRET_<NAME>               always first (CI injects secrets this way)
    INFRA_SECRETS_BACKEND=file        default: <inventory>/generated/secrets.yml
    INFRA_SECRETS_BACKEND=vault       HashiCorp Vault (or OpenBao) KV v2: VAULT_ADDR, VAULT_TOKEN,
                                      INFRA_VAULT_MOUNT (default "secret"), INFRA_VAULT_PATH
                                      (default "infra"); one KV secret whose keys are the names

A secret shorter than :data:`MIN_SECRET_LENGTH` characters is refused with an error naming
it: masking ``ab`` everywhere would garble every record, and not masking it would leak it.
A secrets file is read with every value as written (``00001234`` stays ``00001234``, ``yes``
stays ``yes``), so what is masked is exactly what reaches a target; a file that does not
parse is reported by file, line and column, never by its content.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from infra_automation import yamlio
from infra_automation.exceptions import ConfigurationError

MASK = "********"
ENV_PREFIX = "INFRA_SECRET_"
BACKEND_VARIABLE = "INFRA_SECRETS_BACKEND"
MIN_SECRET_LENGTH = 4


class Redactor:
    """Masks known secret values in text and nested data."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        """Remember ``value``; shorter than MIN_SECRET_LENGTH is ignored (Secrets refuses those)."""
        if len(value) < MIN_SECRET_LENGTH:  # masking tiny strings would garble every record
            return
        with self._lock:
            if value not in self._values:
                self._values.add(value)
                alternatives = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in alternatives))

    def text(self, value: str) -> str:
        pattern = self._pattern
        return pattern.sub(MASK, value) if pattern is not None else value

    def data(self, value: Any, *, keys: bool = True) -> Any:
        """Mask known secret values; with ``keys``, also whole values under secret-looking keys."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {
                k: MASK if keys and _secret_key(str(k)) else self.data(v, keys=keys)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [self.data(v, keys=keys) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        shown = str(value)  # a Path, an exception, a model: masked if its text holds a secret
        masked = self.text(shown)
        return masked if masked != shown else value


# Keys whose values are never shown, whatever they hold (records, logs, docs alike).
SECRET_WORDS = ("password", "passwd", "secret", "token", "private_key", "api_key", "credential")


def _secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(w in lowered for w in SECRET_WORDS)


REDACTOR = Redactor()


def remember(value: str) -> None:
    """Mask ``value`` from now on (a token or password that is not a named secret)."""
    REDACTOR.add(value)


def redact(value: Any, *, keys: bool = True) -> Any:
    """Mask every known secret in ``value`` (str, mapping, list, or any value's text).

    ``keys=False`` masks by value only: for data whose key names are not secrets by
    construction (a validated request, whose ``token_ttl: 300`` must survive for resume).
    """
    return REDACTOR.data(value, keys=keys)


def safe_url(url: str) -> str:
    """A database (or any SQLAlchemy) URL fit to print: the password and secret-looking
    query values are replaced by ``***``; a URL that does not parse loses its user part."""
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return re.sub(r"//[^/?#]*@", "//***@", url)
    hidden = {k: "***" for k in parsed.query if _secret_key(k)}
    if hidden:
        parsed = parsed.update_query_dict(hidden)
    shown = parsed.render_as_string(hide_password=True)
    return shown.replace("=%2A%2A%2A", "=***") if hidden else shown


def remember_url_password(url: str) -> None:
    """Register the password of a database URL for masking (error messages quote URLs)."""
    try:
        password = sa.engine.make_url(url).password
    except (sa.exc.ArgumentError, ValueError):
        return
    if password:
        remember(str(password))


def check_secret(name: str, value: object, where: str) -> str:
    """``value`` if it can be a secret (a string of MIN_SECRET_LENGTH or more characters)."""
    if not isinstance(value, str):
        raise ConfigurationError(f"secret {name!r} in {where} must be a string")
    if len(value) < MIN_SECRET_LENGTH:
        raise ConfigurationError(
            f"secret {name!r} in {where} is shorter than {MIN_SECRET_LENGTH} characters: "
            f"it could not be masked in logs and records; use a longer secret"
        )
    return value


def register_all(values: Mapping[str, object], where: str) -> dict[str, str]:
    """Check every value of a backend and register it for masking (before any is used)."""
    checked = {str(k): check_secret(str(k), v, where) for k, v in values.items()}
    for value in checked.values():
        REDACTOR.add(value)
    return checked


# --- backends: one Protocol, one registry ------------------------------------------------


class SecretsBackend(Protocol):
    """Where named secrets are kept. ``find`` returns None for an unknown name."""

    def find(self, name: str) -> str | None: ...

    def where(self) -> str:
        """Where a missing secret should be added (for the error message)."""
        ...


@dataclass(frozen=True)
class BackendOptions:
    """What a backend factory is given: the inventory's secrets files and the environment."""

    files: tuple[Path, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


BACKENDS: dict[str, Callable[[BackendOptions], SecretsBackend]] = {}


def register_backend(
    kind: str, factory: Callable[[BackendOptions], SecretsBackend], *, replace: bool = False
) -> None:
    if kind in BACKENDS and not replace:
        raise ConfigurationError(f"secrets backend {kind!r} is already registered")
    BACKENDS[kind] = factory


def backend_for(options: BackendOptions) -> SecretsBackend:
    """The backend named by ``INFRA_SECRETS_BACKEND`` (default ``file``)."""
    kind = options.env.get(BACKEND_VARIABLE) or "file"
    factory = BACKENDS.get(kind)
    if factory is None:
        known = ", ".join(sorted(BACKENDS))
        raise ConfigurationError(
            f"{BACKEND_VARIABLE}: unknown secrets backend {kind!r} (known: {known})"
        )
    return factory(options)


class FileBackend:
    """Secrets from YAML files (``<inventory>/generated/secrets.yml``), each value literal."""

    def __init__(self, files: tuple[Path, ...]) -> None:
        self.files = files
        self._values: dict[str, str] | None = None

    def find(self, name: str) -> str | None:
        return self._load().get(name)

    def where(self) -> str:
        return ", ".join(str(f) for f in self.files) or "no secrets file"

    def _load(self) -> dict[str, str]:
        if self._values is None:
            values: dict[str, str] = {}
            for path in self.files:
                if path.exists() or path.is_symlink():
                    values.update(self._read(path))
            self._values = values
        return self._values

    @staticmethod
    def _read(path: Path) -> dict[str, str]:
        data = yamlio.load_mapping(
            path, literal=True, aliases=False, secret=True, max_bytes=yamlio.SECRETS_MAX_BYTES
        )
        return register_all(data, str(path))


def _vault_backend(options: BackendOptions) -> SecretsBackend:
    from infra_automation.secrets_vault import VaultBackend  # hvac only when chosen

    return VaultBackend.from_env(options.env)


register_backend("file", lambda options: FileBackend(options.files))
register_backend("vault", _vault_backend)


class Secrets:
    """Named secrets from ``INFRA_SECRET_<NAME>`` variables, then from the chosen backend.

    ``backend`` defaults to the one ``INFRA_SECRETS_BACKEND`` (in ``env``) names, given
    ``files`` for the file backend; it is created on first use.
    """

    def __init__(
        self,
        files: tuple[Path, ...] = (),
        env: Mapping[str, str] | None = None,
        backend: SecretsBackend | None = None,
    ):
        self._files = files
        self._env = os.environ if env is None else env
        self._backend = backend

    @property
    def backend(self) -> SecretsBackend:
        if self._backend is None:
            self._backend = backend_for(BackendOptions(self._files, self._env))
        return self._backend

    def get(self, name: str) -> str:
        value = self.find(name)
        if value is None:
            raise ConfigurationError(
                f"secret {name!r} is not set: "
                f"export {ENV_PREFIX}{name.upper()} or add it to {self.backend.where()}"
            )
        return value

    def find(self, name: str) -> str | None:
        variable = ENV_PREFIX + name.upper()
        value = self._env.get(variable)
        if value is not None:
            value = check_secret(name, value, f"${variable}")
        else:
            value = self.backend.find(name)
            if value is not None:
                value = check_secret(name, value, self.backend.where())
        if value is not None:
            REDACTOR.add(value)
        return value
