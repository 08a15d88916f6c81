"""The portal's pure parts: the form from a JSON Schema, the form's values back, the
picture, and the vendored assets' pins."""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from infra_automation.catalog import Service
from infra_automation.exceptions import ConfigurationError
from infra_automation.portal import forms, vendor
from infra_automation.portal.picture import nodes_of, svg

SERVICE = Service.model_validate(
    {
        "name": "form-test",
        "description": "d",
        "owner": "o",
        "params": {
            "size": {"type": "string", "enum": ["small", "large"], "default": "small"},
            "vms": {"type": "integer", "default": 2, "minimum": 1, "maximum": 8},
            "pause": {"type": "number", "default": 0.5, "minimum": 0},
            "backup": {"type": "boolean", "default": True},
            "title": {"type": "string", "pattern": "[a-z]+"},
            "tags": {"type": "list", "items": {"type": "string"}, "default": []},
        },
        "steps": [{"id": "a", "executor": "core.noop"}],
    }
)


def test_the_schema_names_enums_and_patterns_the_validators_check() -> None:
    props = forms.params_schema(SERVICE)["properties"]
    assert props["size"]["enum"] == ["small", "large"]
    assert props["title"]["pattern"] == "[a-z]+"


def test_fields_follow_the_schema() -> None:
    fields = {f.name: f for f in forms.form_fields(forms.params_schema(SERVICE))}
    assert fields["size"].widget == "select" and fields["size"].choices == ("small", "large")
    assert fields["backup"].widget == "switch"
    assert (fields["vms"].widget, fields["vms"].minimum, fields["vms"].maximum) == ("number", 1, 8)
    assert fields["vms"].step == "1" and fields["pause"].step == "any"
    assert fields["tags"].widget == "list"
    assert fields["title"].required and not fields["size"].required


def test_posted_strings_become_typed_params() -> None:
    schema = forms.params_schema(SERVICE)
    fields = forms.form_fields(schema)
    posted = {
        "params.size": "large",
        "params.vms": "3",
        "params.pause": "1",
        "params.title": "abc",
        "params.tags": "a, b,,c",
    }
    params = forms.form_params(fields, posted, schema)
    assert params == {
        "size": "large",
        "vms": 3,
        "pause": 1.0,
        "backup": False,  # a switch not posted is off
        "title": "abc",
        "tags": ["a", "b", "c"],
    }
    assert forms.form_params(fields, {"params.vms": "three"}, schema)["vms"] == "three"
    assert "pause" not in forms.form_params(fields, {"params.pause": " "}, schema)


def test_errors_land_on_their_inputs() -> None:
    errors = forms.field_errors(
        [("params.tags.0", "bad"), ("project", "pattern"), ("service", "unknown")]
    )
    assert errors == {"params.tags": ["bad"], "project": ["pattern"], "": ["service: unknown"]}


def test_the_picture_has_a_box_per_step_an_arrow_per_need_and_escapes_names() -> None:
    plan = [
        {"id": "net", "department": "network", "needs": []},
        {"id": "vms", "department": "<vm&ware>", "needs": ["net"]},
        {"id": "os", "department": "os", "needs": ["net", "vms"]},
    ]
    nodes = nodes_of(plan)
    assert [n.wave for n in nodes] == [0, 1, 2]
    drawn = str(svg(nodes, {"net": "success", "vms": "running"}))
    assert drawn.count("<g class=") == 3 and drawn.count('class="edge"') == 3
    assert 'id="node-net" data-status="success"' in drawn
    assert 'id="node-os" data-status="planned"' in drawn
    assert "&lt;vm&amp;ware&gt;" in drawn and "<vm&ware>" not in drawn


def test_the_vendored_assets_are_in_place_and_match_their_pins() -> None:
    assert vendor.problems() == []


def _tarball(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_a_tarball_or_file_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    import base64

    data = b"console.log(1)"
    tarball = _tarball({"package/x.js": data})
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    asset = vendor.Asset("package/x.js", "x.js", hashlib.sha256(data).hexdigest())
    package = vendor.NpmPackage("x", "1.0.0", integrity, (asset,))
    vendor.extract(package, tarball, tmp_path)
    assert (tmp_path / "x.js").read_bytes() == data
    with pytest.raises(ConfigurationError, match="tarball"):
        vendor.extract(replace(package, integrity="sha512-AAAA"), tarball, tmp_path)
    wrong = replace(package, assets=(replace(asset, sha256="0" * 64),))
    with pytest.raises(ConfigurationError, match="not the pinned file"):
        vendor.extract(wrong, tarball, tmp_path / "other")
    assert not (tmp_path / "other" / "x.js").exists()
