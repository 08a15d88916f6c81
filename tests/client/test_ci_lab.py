"""The CI-style run of issue 17, against the lab: a pipeline's checkout holds only the request
files (no catalog, no inventory, no secrets); ``infra --server URL apply
requests/example-landscape.yml --check`` with nothing but a token gives the same dry run,
diff by diff, as the local check run on the machine that holds the infrastructure's
credentials, and prints none of them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from server_fixtures import LiveServer, live_server

from infra_automation.identity import Role
from infra_automation.lab import Lab

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
REQUEST = Path("requests") / "example-landscape.yml"
sys.path.insert(0, str(REPO / "tests" / "integration"))
from landscape_root import make_root  # noqa: E402 - the integration tests' throwaway root


def infra(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "infra_automation.cli", *args]
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )


def no_infra_variables() -> dict[str, str]:
    """The environment of a pipeline runner: no INFRA_* settings, no secrets."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("INFRA_", "ANSIBLE_"))}


@pytest.fixture(scope="module")
def root(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_root(tmp_path_factory.mktemp("ci") / "root", lab.inventory_path)


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[LiveServer]:
    saved = os.environ.get("ANSIBLE_HOME")
    os.environ["ANSIBLE_HOME"] = str(root / ".infra" / "ansible-home")  # the server's own
    try:
        with live_server(root) as live:
            yield live
    finally:
        if saved is None:
            os.environ.pop("ANSIBLE_HOME", None)
        else:
            os.environ["ANSIBLE_HOME"] = saved


def secret_values(lab: Lab) -> list[str]:
    data = yaml.safe_load((lab.inventory_path / "generated" / "secrets.yml").read_text()) or {}
    return [str(v) for v in data.values() if len(str(v)) >= 8]


def by_step(result: dict[str, Any]) -> dict[str, tuple[str, bool, str]]:
    return {k: (s["status"], s["changed"], s["diff"]) for k, s in result["steps"].items()}


def test_pipeline_check_through_the_server_gives_the_local_diff(
    root: Path, server: LiveServer, lab: Lab, tmp_path: Path
) -> None:
    env = {**no_infra_variables(), "ANSIBLE_HOME": str(root / ".infra" / "ansible-home")}
    here = infra(REPO, env, "--root", str(root), "apply", str(REQUEST), "--check", "-o", "json")
    assert here.returncode == 0, here.stdout[-3000:] + here.stderr[-3000:]

    checkout = tmp_path / "checkout"  # a bare checkout of the request files
    (checkout / "requests").mkdir(parents=True)
    shutil.copy(REPO / REQUEST, checkout / REQUEST)
    token = tmp_path / "token"
    token.write_text(server.tokens[Role.ENGINEER])
    env = {**no_infra_variables(), "INFRA_SERVER": server.url}
    text = infra(checkout, env, "--token-file", str(token), "apply", str(REQUEST), "--check")
    there = infra(
        checkout, env, "--token-file", str(token), "apply", str(REQUEST), "--check", "-o", "json"
    )
    assert text.returncode == 0 and there.returncode == 0, there.stderr[-3000:]

    mine, theirs = json.loads(here.stdout), json.loads(there.stdout)
    assert theirs["check"] is True and theirs["status"] == "success"
    assert by_step(theirs) == by_step(mine)
    assert {k: s["outputs"] for k, s in theirs["steps"].items()} == {
        k: s["outputs"] for k, s in mine["steps"].items()
    }
    network = theirs["steps"]["network"]["diff"]
    assert theirs["steps"]["ipam"]["outputs"]["subnet"] in network  # a real router diff
    assert "[network] network success" in text.stdout  # the progress view, from the stream
    printed = text.stdout + text.stderr + there.stdout + there.stderr
    for value in [*secret_values(lab), server.tokens[Role.ENGINEER]]:
        assert value not in printed
    assert sorted(str(p.relative_to(checkout)) for p in checkout.rglob("*")) == [
        "requests",
        str(REQUEST),
    ]  # nothing written where the pipeline runs
