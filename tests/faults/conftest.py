"""The fault and fuzz suite: ``test_fuzz_*`` (hypothesis properties over request, catalog
and inventory loading through the CLI; no lab) and ``test_matrix_lab`` (faults injected into
real runs on the lab, marked ``lab``; ``INFRA_LAB_NAME`` picks the instance).

At the end of a session that ran matrix cases, the fault x outcome matrix is printed.
"""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from fault_lab import COLUMNS, MATRIX

    if not MATRIX:
        return
    rows = [["fault", *COLUMNS]]
    for case, cells in MATRIX.items():
        rows.append([case, *(_short(cells.get(col, "not reached")) for col in COLUMNS)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    tr = terminalreporter
    tr.section("fault matrix (fault x outcome)")
    for i, row in enumerate(rows):
        tr.write_line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            tr.write_line("  ".join("-" * w for w in widths))
    details = [
        (case, col, text)
        for case, cells in MATRIX.items()
        for col, text in cells.items()
        if text.startswith("FAIL")
    ]
    if details:
        tr.write_line("")
        for case, col, text in details:
            tr.write_line(f"{case} / {col}: {text}")


def _short(text: str) -> str:
    if text.startswith("FAIL"):
        return "FAIL"
    return text.split(" ", 1)[0]
