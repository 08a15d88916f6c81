"""Requests: typed params with defaults; every bad field is named; nothing smuggles lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from infra_automation.catalog import Catalog, Service
from infra_automation.exceptions import RequestValidationError
from infra_automation.request import load_request, read_request, validate_request

DATA = Path(__file__).parent / "data"

SERVICE = Service.model_validate(
    {
        "name": "web",
        "params": {
            "vm_count": {"type": "integer", "default": 2, "minimum": 1, "maximum": 5},
            "cpu": {"type": "number", "default": 1.5, "minimum": 0.5},
            "hostname": {"type": "string", "pattern": "[a-z][a-z0-9-]*", "max_length": 20},
            "label": {"type": "string", "pattern": ".*", "default": "web"},
            "os": {"type": "string", "enum": ["debian12", "debian13"], "default": "debian12"},
            "backup": {"type": "boolean", "default": False},
            "tags": {
                "type": "list",
                "items": {"type": "string", "pattern": "[a-z]+"},
                "max_length": 3,
                "default": [],
            },
            "ports": {
                "type": "list",
                "items": {"type": "integer", "maximum": 65535},
                "default": [80],
            },
        },
        "steps": [{"id": "a", "executor": "core.noop"}],
    }
)
CATALOG = Catalog({"web": SERVICE}, {})


def _request(**params: Any) -> dict[str, Any]:
    return {"service": "web", "project": "shop", "params": {"hostname": "web1", **params}}


def test_defaults_are_filled_and_types_kept() -> None:
    req = validate_request(_request(vm_count=3, tags=["a", "b"]), CATALOG)
    assert req.params == {
        "vm_count": 3,
        "cpu": 1.5,
        "hostname": "web1",
        "label": "web",
        "os": "debian12",
        "backup": False,
        "tags": ["a", "b"],
        "ports": [80],
    }
    assert req.project == "shop" and req.requester is None


def test_every_bad_field_is_named_at_once() -> None:
    bad = {
        "service": "web",
        "project": "Shop!",
        "requester": "x\ny",
        "params": {
            "hostname": "Web_1",
            "vm_count": 9,
            "os": "windows",
            "backup": "yes",
            "tags": ["ok", "NO"],
            "unknown": 1,
        },
    }
    with pytest.raises(RequestValidationError) as info:
        validate_request(bad, CATALOG)
    fields = {e.field: e.message for e in info.value.errors}
    assert set(fields) == {
        "project",
        "requester",
        "params.hostname",
        "params.vm_count",
        "params.os",
        "params.backup",
        "params.tags.1",
        "params.unknown",
    }
    assert "less than or equal to 5" in fields["params.vm_count"]
    assert "one of 'debian12', 'debian13'" in fields["params.os"]
    assert "Extra inputs" in fields["params.unknown"]


@pytest.mark.parametrize(
    "value",
    [
        "a\nb",
        "line\r",
        "{{ 7*7 }}",
        "{% if %}",
        "{# c #}",
        "a; rm -rf /",
        "tab\there",
        "x`id`",
        "$(id)",
        "end!",
    ],
)
def test_safe_text_applies_even_to_permissive_patterns(value: str) -> None:
    with pytest.raises(RequestValidationError) as info:
        validate_request(_request(label=value), CATALOG)
    assert [e.field for e in info.value.errors] == ["params.label"]


def test_booleans_are_not_integers_and_strings_not_numbers() -> None:
    with pytest.raises(RequestValidationError) as info:
        validate_request(_request(vm_count=True, cpu="2"), CATALOG)
    assert {e.field for e in info.value.errors} == {"params.vm_count", "params.cpu"}


def test_unknown_service() -> None:
    with pytest.raises(RequestValidationError, match=r"no service 'mail'.*known: web"):
        validate_request({"service": "mail", "project": "shop"}, CATALOG)


def test_required_param_missing() -> None:
    with pytest.raises(RequestValidationError) as info:
        validate_request({"service": "web", "project": "shop"}, CATALOG)
    assert [(e.field, e.message) for e in info.value.errors] == [
        ("params.hostname", "Field required")
    ]


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    (tmp_path / "list.yml").write_text("- a\n")
    (tmp_path / "bad.yml").write_text("service: [\n")
    for name in ("list.yml", "bad.yml", "missing.yml"):
        with pytest.raises(RequestValidationError):
            read_request(tmp_path / name)


CASES = sorted((DATA / "requests" / "invalid").glob("*.yml"))


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_invalid_request_files(case: Path, tmp_path: Path) -> None:
    """Data-driven: each file holds a request and the fields that must be reported."""
    spec = yaml.safe_load(case.read_text())
    path = tmp_path / "request.yml"
    path.write_text(yaml.safe_dump(spec["request"]))
    with pytest.raises(RequestValidationError) as info:
        load_request(path, CATALOG)
    assert sorted(e.field for e in info.value.errors) == sorted(spec["fields"])
    assert info.value.source == str(path)


def test_read_request_names_the_line_of_a_duplicate_key(tmp_path: Path) -> None:
    path = tmp_path / "dup.yml"
    path.write_text("service: chain\nproject: shop\nproject: evil\n")
    with pytest.raises(RequestValidationError) as info:
        read_request(path)
    (error,) = info.value.errors
    assert error.field == "file"
    assert error.message == "line 3, column 1: duplicate key 'project' (first on line 2)"
