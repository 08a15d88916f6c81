"""Secrets: read from the environment or a secrets file, never from the command line.

Every secret value that is read is remembered by the process-wide :data:`REDACTOR`;
the run record, the logs and the generated docs pass text through :func:`redact`
before writing it, so a secret that leaks into a diff or an error message is masked.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from infra_automation.exceptions import ConfigurationError

MASK = "********"
ENV_PREFIX = "INFRA_SECRET_"


class Redactor:
    """Masks known secret values in text and nested data."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        if len(value) < 4:  # masking tiny strings would garble every record
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


def redact(value: Any, *, keys: bool = True) -> Any:
    """Mask every known secret in ``value`` (str, mapping, list, or any value's text).

    ``keys=False`` masks by value only: for data whose key names are not secrets by
    construction (a validated request, whose ``token_ttl: 300`` must survive for resume).
    """
    return REDACTOR.data(value, keys=keys)


class Secrets:
    """Named secrets from ``INFRA_SECRET_<NAME>`` variables, then from YAML files."""

    def __init__(self, files: tuple[Path, ...] = (), env: Mapping[str, str] | None = None):
        self._files = files
        self._env = os.environ if env is None else env
        self._file_values: dict[str, str] | None = None

    def get(self, name: str) -> str:
        value = self.find(name)
        if value is None:
            where = ", ".join(str(f) for f in self._files) or "no secrets file"
            raise ConfigurationError(
                f"secret {name!r} is not set: "
                f"export {ENV_PREFIX}{name.upper()} or add it to {where}"
            )
        return value

    def find(self, name: str) -> str | None:
        value = self._env.get(ENV_PREFIX + name.upper())
        if value is None:
            value = self._load_files().get(name)
        if value is not None:
            REDACTOR.add(value)
        return value

    def _load_files(self) -> dict[str, str]:
        if self._file_values is None:
            values: dict[str, str] = {}
            for path in self._files:
                if path.is_file():
                    data = yaml.safe_load(path.read_text()) or {}
                    if not isinstance(data, dict):
                        raise ConfigurationError(f"{path}: a secrets file must be a mapping")
                    values.update({str(k): str(v) for k, v in data.items()})
            self._file_values = values
            for v in values.values():
                REDACTOR.add(v)
        return self._file_values
