"""Catalog files: valid services load, invalid ones are refused naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_helpers import step, write_service

from infra_automation.catalog import load_catalog, load_service
from infra_automation.exceptions import CatalogError

REPO = Path(__file__).resolve().parents[2]


def test_repository_catalog_loads() -> None:
    catalog = load_catalog(REPO / "catalog")
    demo = catalog.get("demo-chain")
    assert demo.owner == "platform-team"
    assert [s.id for s in demo.steps][:3] == ["prepare", "left", "right"]
    assert demo.step("left").department == "network"
    assert demo.step("prepare").department == "core"  # default: the executor's prefix
    assert demo.params["pause"].type == "number"


def test_unknown_service_names_known_ones(root: Path) -> None:
    write_service(root, "alpha", [step("a")])
    with pytest.raises(CatalogError, match=r"no service 'beta'.*alpha"):
        load_catalog(root / "catalog").get("beta")


@pytest.mark.parametrize(
    ("steps", "params", "message"),
    [
        ([step("a"), step("a")], {}, "step id 'a' is used twice"),
        ([step("a", executor="noop")], {}, r"steps\.0\.executor"),
        ([step("Bad-Id")], {}, r"steps\.0\.id"),
        ([step("a", needs=["b", "b"])], {}, "lists a dependency twice"),
        ([step("a")], {"n": {"type": "integer", "default": "x"}}, r"params\.n.*default 'x'"),
        ([step("a")], {"n": {"type": "string", "pattern": "("}}, r"params\.n\.pattern"),
        ([step("a")], {"n": {"type": "float"}}, r"params\.n\.type"),
        ([step("a")], {"n": {"type": "string", "items": {}}}, "only allowed for type 'list'"),
        ([step("a")], {"Bad": {}}, "parameter names must match"),
        ([], {}, r"steps: List should have at least 1 item"),
    ],
)
def test_invalid_service_is_refused(
    root: Path, steps: list[dict[str, object]], params: dict[str, object], message: str
) -> None:
    path = write_service(root, "broken", steps, params)
    with pytest.raises(CatalogError, match=message) as info:
        load_service(path)
    assert str(path) in str(info.value)


def test_duplicate_service_names(root: Path) -> None:
    write_service(root, "alpha", [step("a")])
    (root / "catalog" / "alpha-copy.yml").write_text((root / "catalog" / "alpha.yml").read_text())
    with pytest.raises(CatalogError, match="service 'alpha' is also in"):
        load_catalog(root / "catalog")


def test_missing_folder_and_bad_yaml(root: Path) -> None:
    with pytest.raises(CatalogError, match="no catalog folder"):
        load_catalog(root / "nope")
    (root / "catalog" / "bad.yml").write_text("name: [unclosed\n")
    with pytest.raises(CatalogError, match=r"bad\.yml"):
        load_catalog(root / "catalog")
