"""The landscape benchmark's own logic (benchmarks/landscape.py); the benchmark itself runs the
landscape on the lab and is run by hand."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import landscape


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("backup=false", ("backup", False)),
        ("web_vms=3", ("web_vms", 3)),
        ("site_title=Shop: new", ("site_title", "Shop: new")),
        ("database=postgresql", ("database", "postgresql")),
        ("site_title=", ("site_title", "")),
        ("site_title=[x", ("site_title", "[x")),
    ],
)
def test_a_request_param_is_name_and_yaml_value(text: str, expected: tuple[str, object]) -> None:
    assert landscape.request_param(text) == expected


@pytest.mark.parametrize("text", ["backup", "=false", ""])
def test_a_request_param_without_name_or_value_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected NAME=VALUE"):
        landscape.request_param(text)
