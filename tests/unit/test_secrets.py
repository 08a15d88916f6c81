"""Secrets: literal values from files, short secrets refused, parse errors that never quote
the file, the backend registry, and one helper that hides database passwords."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra_automation import secrets
from infra_automation.exceptions import ConfigurationError
from infra_automation.secrets import MASK, Secrets, safe_url


@pytest.fixture(autouse=True)
def own_redactor(monkeypatch: pytest.MonkeyPatch) -> secrets.Redactor:
    redactor = secrets.Redactor()
    monkeypatch.setattr(secrets, "REDACTOR", redactor)
    return redactor


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "secrets.yml"
    path.write_text(text)
    return path


def test_a_typo_in_the_secrets_file_names_file_and_line_never_the_secret(tmp_path: Path) -> None:
    path = _file(tmp_path, 'vcenter_password: v-long-secret\ndb_password: "Tr0ub4dor-and-3\n')
    with pytest.raises(ConfigurationError) as info:
        Secrets(files=(path,), env={}).get("vcenter_password")
    message = str(info.value)
    assert str(path) in message and "line 2, column 14" in message
    assert "Tr0ub4dor" not in message and "v-long-secret" not in message


def test_values_are_read_as_written_and_masked_as_written(tmp_path: Path) -> None:
    path = _file(tmp_path, "pin: 00001234\nflag: 'true'\nword: true\nhex: 0x1F2E\n")
    store = Secrets(files=(path,), env={})
    assert store.get("pin") == "00001234"  # YAML 1.1 would make it 668
    assert store.get("word") == "true" and store.get("hex") == "0x1F2E"
    # every value of the file is masked from the first read on, even those not asked for
    assert (
        secrets.redact("pin=00001234 hex=0x1F2E word=true") == f"pin={MASK} hex={MASK} word={MASK}"
    )


@pytest.mark.parametrize("value", ["yes", "ab", "1", ""])
def test_short_secrets_are_refused_naming_the_secret(tmp_path: Path, value: str) -> None:
    path = _file(tmp_path, f"good: long-enough\nshort: '{value}'\n")
    with pytest.raises(ConfigurationError, match=r"secret 'short' in .*shorter than 4") as info:
        Secrets(files=(path,), env={}).get("good")
    assert f"'{value}'" not in str(info.value).replace("'short'", "")
    with pytest.raises(ConfigurationError, match=r"secret 'pw' in \$INFRA_SECRET_PW is shorter"):
        Secrets(env={"INFRA_SECRET_PW": value}).get("pw")


def test_non_string_values_are_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, "nested: {a: b}\n")
    with pytest.raises(ConfigurationError, match=r"secret 'nested' .* must be a string"):
        Secrets(files=(path,), env={}).find("nested")


def test_a_secrets_fifo_or_duplicate_is_an_error(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigurationError, match="not a regular file"):
        Secrets(files=(fifo,), env={}).find("x")
    path = _file(tmp_path, "a: first-value\na: second-value\n")
    with pytest.raises(ConfigurationError, match="duplicate key 'a'"):
        Secrets(files=(path,), env={}).find("a")


def test_environment_first_then_backend_and_missing_names_where(tmp_path: Path) -> None:
    path = _file(tmp_path, "pw: from-the-file\n")
    store = Secrets(files=(path,), env={"INFRA_SECRET_PW": "from-the-env"})
    assert store.get("pw") == "from-the-env"
    assert Secrets(files=(path,), env={}).get("pw") == "from-the-file"
    with pytest.raises(ConfigurationError, match=r"export INFRA_SECRET_NOPE or add it to .*yml"):
        store.get("nope")
    assert Secrets(files=(tmp_path / "absent.yml",), env={}).find("pw") is None


def test_the_backend_registry(tmp_path: Path) -> None:
    class Static:
        def find(self, name: str) -> str | None:
            return {"token": "static-token-1"}.get(name)

        def where(self) -> str:
            return "static"

    secrets.register_backend("static", lambda options: Static(), replace=True)
    try:
        store = Secrets(env={"INFRA_SECRETS_BACKEND": "static"})
        assert isinstance(store.backend, Static) and store.get("token") == "static-token-1"
        assert secrets.redact("x static-token-1") == f"x {MASK}"
        with pytest.raises(ConfigurationError, match="already registered"):
            secrets.register_backend("static", lambda options: Static())
    finally:
        del secrets.BACKENDS["static"]
    with pytest.raises(ConfigurationError, match=r"unknown secrets backend 'nope' .*file, vault"):
        Secrets(env={"INFRA_SECRETS_BACKEND": "nope"}).find("x")
    assert isinstance(Secrets(env={}).backend, secrets.FileBackend)


def test_the_vault_backend_needs_its_address_and_token() -> None:
    with pytest.raises(ConfigurationError, match="needs VAULT_ADDR"):
        Secrets(env={"INFRA_SECRETS_BACKEND": "vault"}).find("x")
    with pytest.raises(ConfigurationError, match="needs VAULT_TOKEN"):
        Secrets(env={"INFRA_SECRETS_BACKEND": "vault", "VAULT_ADDR": "http://127.0.0.1:1"}).find(
            "x"
        )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://infra:s3cr3t-pw@db:5432/runs", "postgresql+psycopg://infra:***@db:5432/runs"),
        ("postgresql://db/runs?user=infra&password=s3cr3t-pw", "postgresql://db/runs?password=***&user=infra"),
        ("sqlite:////tmp/runs.db", "sqlite:////tmp/runs.db"),
        ("not a url://infra:s3cr3t-pw@db", "not a url://***@db"),
    ],
)  # fmt: skip
def test_safe_url_never_shows_a_password(url: str, shown: str) -> None:
    assert safe_url(url) == shown


def test_a_database_password_is_masked_wherever_it_is_quoted() -> None:
    secrets.remember_url_password("postgresql://infra:s3cr3t-pw@db/runs")
    assert secrets.redact("cannot open postgresql://infra:s3cr3t-pw@db/runs") == (
        f"cannot open postgresql://infra:{MASK}@db/runs"
    )
