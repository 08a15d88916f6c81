"""The ``vault`` secrets backend: HashiCorp Vault (or OpenBao) KV version 2, through ``hvac``.

Selected with ``INFRA_SECRETS_BACKEND=vault``; configured by Vault's own variables and two of
ours::

    VAULT_ADDR            http(s)://host:8200 (required)
    VAULT_TOKEN           a token allowed to read the secret (required; masked like a secret)
    VAULT_CACERT          optional CA bundle for TLS
    VAULT_NAMESPACE       optional (Vault Enterprise namespaces)
    INFRA_VAULT_MOUNT     the KV v2 mount (default ``secret``)
    INFRA_VAULT_PATH      the KV secret holding the named secrets (default ``infra``)

The KV secret at ``<mount>/<path>`` is read once, on first use; each of its keys is a secret
name (``vcenter_password``), each value a string. Every value is registered for masking
before any is handed out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infra_automation.exceptions import ConfigurationError
from infra_automation.secrets import register_all, remember, safe_url

DEFAULT_MOUNT = "secret"
DEFAULT_PATH = "infra"
TIMEOUT = 10.0


class VaultBackend:
    """Named secrets from one KV v2 secret of a Vault server."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        mount: str = DEFAULT_MOUNT,
        path: str = DEFAULT_PATH,
        verify: bool | str = True,
        namespace: str | None = None,
    ) -> None:
        if not url:
            raise ConfigurationError("the vault secrets backend needs VAULT_ADDR")
        if not token:
            raise ConfigurationError("the vault secrets backend needs VAULT_TOKEN")
        remember(token)
        self.url = url
        self.mount = mount.strip("/")
        self.path = path.strip("/")
        self._token = token
        self._verify = verify
        self._namespace = namespace
        self._values: dict[str, str] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> VaultBackend:
        return cls(
            env.get("VAULT_ADDR", ""),
            env.get("VAULT_TOKEN", ""),
            mount=env.get("INFRA_VAULT_MOUNT") or DEFAULT_MOUNT,
            path=env.get("INFRA_VAULT_PATH") or DEFAULT_PATH,
            verify=env.get("VAULT_CACERT") or True,
            namespace=env.get("VAULT_NAMESPACE") or None,
        )

    def where(self) -> str:
        return f"vault {safe_url(self.url)} KV v2 {self.mount}/{self.path}"

    def find(self, name: str) -> str | None:
        return self._load().get(name)

    def _load(self) -> dict[str, str]:
        if self._values is None:
            self._values = register_all(self._read(), self.where())
        return self._values

    def _read(self) -> Mapping[str, Any]:
        try:
            import hvac
            import hvac.exceptions

            import requests
        except ImportError as exc:
            raise ConfigurationError(
                "the vault secrets backend needs hvac: pip install 'infra-automation[vault]'"
            ) from exc
        client = hvac.Client(
            url=self.url,
            token=self._token,
            verify=self._verify,
            timeout=TIMEOUT,
            namespace=self._namespace,
        )
        try:
            response = client.secrets.kv.v2.read_secret_version(
                path=self.path, mount_point=self.mount, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            return {}  # no such secret yet: every name is "not set", with where to add it
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized) as exc:
            raise ConfigurationError(
                f"{self.where()}: the token may not read this secret ({type(exc).__name__})"
            ) from None
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise ConfigurationError(
                f"{self.where()}: cannot read secrets ({type(exc).__name__})"
            ) from None
        data = response.get("data", {}).get("data") if isinstance(response, dict) else None
        if not isinstance(data, dict):
            raise ConfigurationError(f"{self.where()}: the answer holds no KV v2 data")
        return data
