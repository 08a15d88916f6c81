"""Rendering of catalog params: native types kept, strings kept as strings, errors named."""

from __future__ import annotations

from pathlib import Path

import pytest

import infra_automation
from infra_automation.exceptions import RenderError
from infra_automation.render import package_templates, render_value

VARS = {"params": {"version": "8.10", "pair": "1,2", "hosts": [1, 2], "n": 3, "a": "1"}}


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("{{ params.version }}", "8.10"),  # a string stays a string (no literal_eval)
        ("{{ params.pair }}", "1,2"),
        ("{{ params.hosts }}", [1, 2]),  # one expression keeps its type
        ("{{ params.n }}", 3),
        ("{{ params.n > 2 }}", True),
        ("x{{ params.n }}", "x3"),
        ("{{ params.a }}{{ params.a }}", "11"),
        ("{{ '{{ 7*7 }}' }}", "{{ 7*7 }}"),  # rendered once, never twice
    ],
)
def test_values_keep_their_type(expression: str, value: object) -> None:
    assert render_value(expression, VARS) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("{{ params.missing }}", "no attribute 'missing'"),
        ("{{ params.n > 'x' }}", "TypeError"),
        ("{{ params.__class__ }}", "unsafe"),
    ],
)
def test_errors_name_the_place(expression: str, message: str) -> None:
    with pytest.raises(RenderError, match=message) as info:
        render_value({"seconds": expression}, VARS, "steps.a.params")
    assert "steps.a.params.seconds" in str(info.value)


def test_names_that_shadow_dict_methods_are_refused_in_the_catalog() -> None:
    from infra_automation.catalog import Service

    with pytest.raises(ValueError, match="items cannot be read"):
        Service.model_validate(
            {"name": "svc", "params": {"items": {"type": "integer"}},
             "steps": [{"id": "a", "executor": "core.noop"}]}
        )  # fmt: skip
    with pytest.raises(ValueError, match="values cannot be read"):
        Service.model_validate(
            {"name": "svc", "steps": [{"id": "values", "executor": "core.noop"}]}
        )


def test_the_package_default_templates_are_package_data(tmp_path: Path) -> None:
    from infra_automation.docs.writer import templates_root

    base = package_templates()
    assert base.is_relative_to(Path(infra_automation.__file__).parent)  # not the checkout root
    for name in ("docs/overview.md.j2", "docs/plan.md.j2", "vmware/vm.yml.j2"):
        assert (base / name).is_file(), name
    assert templates_root(tmp_path) == base  # a root without docs templates uses them
    own = tmp_path / "templates" / "docs"
    own.mkdir(parents=True)
    (own / "overview.md.j2").write_text("# {{ project }}\n")
    assert templates_root(tmp_path) == tmp_path / "templates"  # its own override them
