"""Escaping of values read from targets, and secret scrubbing (pure functions)."""

from __future__ import annotations

import pytest

from infra_automation.docs.safety import cell, code, fence, link, scrub, slug, text, when
from infra_automation.docs.writer import mermaid_label, tidy


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a|b", "a\\|b"),
        ("line1\nline2\r\nline3", "line1<br>line2<br>line3"),
        ("<script>x</script>", "&lt;script&gt;x&lt;/script&gt;"),
        ("", " "),
        (None, " "),
        (True, "yes"),
        (["a", "b"], "a, b"),
        ("*bold* _x_ [l](u)", "\\*bold\\* \\_x\\_ \\[l\\](u)"),
    ],
)
def test_cell_escapes_table_breakers(value: object, expected: str) -> None:
    assert cell(value) == expected


def test_text_is_one_line() -> None:
    assert text("a\n# heading") == "a \\# heading"


def test_code_survives_backticks_and_pipes() -> None:
    assert code("show ip | json") == "`show ip &#124; json`"
    assert code("a`b") == "``a`b``"
    assert code("`x`") == "`` `x` ``"


def test_fence_is_longer_than_any_backtick_run_inside() -> None:
    body = "```\nnot the end\n````"
    block = fence(body, "diff")
    assert block.startswith("`````diff\n")
    assert block.endswith("\n`````")
    assert fence("x", "di ff;\nrm") == "```diffrm\nx\n```"  # one safe word, no newline


def test_link_only_for_plain_http_urls() -> None:
    assert link("http://127.0.0.1:8080/") == "[http://127.0.0.1:8080/](http://127.0.0.1:8080/)"
    assert link("javascript:alert(1)") == "javascript:alert(1)"
    assert link("http://x/ y") == "http://x/ y"


def test_scrub_drops_secret_keys_recursively() -> None:
    data = {"user": "admin", "Password": "p", "nested": [{"api_token": "t", "ok": 1}]}
    assert scrub(data) == {"user": "admin", "nested": [{"ok": 1}]}


def test_slug_is_a_single_safe_path_component() -> None:
    assert slug("../../etc") == "etc"
    assert slug("shop") == "shop"
    assert slug("a/b c") == "a-b-c"
    assert slug("...") == "unnamed"


def test_when_formats_utc() -> None:
    assert when("2025-11-21T10:00:00+00:00") == "2025-11-21 10:00:00 UTC"
    assert when(None) == ""
    assert when("not a date") == "not a date"


def test_mermaid_label_escapes_quotes_and_tags() -> None:
    assert mermaid_label('a"b<br/><i>') == "a#quot;b<br/>#lt;i#gt;"


def test_tidy_keeps_blank_lines_inside_fences() -> None:
    assert tidy("a\n\n\n\nb\n```\nx\n\n\ny\n```\n") == "a\n\nb\n```\nx\n\n\ny\n```\n"
