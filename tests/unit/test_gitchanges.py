"""`infra requests changed --since REV`: the request files a merge added or changed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra_automation.cli import app
from infra_automation.exceptions import ConfigurationError
from infra_automation.gitchanges import changed_requests


def git(repo: Path, *args: str) -> str:
    who = {"NAME": "t", "EMAIL": "t@example.com"}
    env = {f"GIT_{role}_{k}": v for role in ("AUTHOR", "COMMITTER") for k, v in who.items()}
    env["PATH"] = "/usr/bin:/bin"
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository whose infra project lives in a subfolder, as many do."""
    root = tmp_path / "infra"
    (root / "requests").mkdir(parents=True)
    git(tmp_path, "init", "-q", "-b", "main")
    (root / "requests" / "old.yml").write_text("service: s\nproject: old\n")
    (root / "requests" / "gone.yml").write_text("service: s\nproject: gone\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "base")
    (root / "requests" / "new.yml").write_text("service: s\nproject: new\n")
    (root / "requests" / "old.yml").write_text("service: s\nproject: old\nparams: {a: 1}\n")
    (root / "requests" / "gone.yml").unlink()
    (root / "requests" / "notes.txt").write_text("not a request\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "merge request")
    return root


def test_added_and_modified_requests_since_a_revision(repo: Path) -> None:
    found = changed_requests(repo, "HEAD~1")
    assert sorted(p.name for p in found) == ["new.yml", "old.yml"]  # not the deleted one


def test_the_cli_prints_one_path_per_line(repo: Path) -> None:
    res = CliRunner().invoke(app, ["--root", str(repo), "requests", "changed", "--since", "HEAD~1"])
    assert res.exit_code == 0, res.output
    assert res.stdout.split() == ["requests/new.yml", "requests/old.yml"]


@pytest.mark.parametrize("rev", ["--output=/tmp/x", "HEAD~1 HEAD", ""])
def test_a_revision_that_is_not_one_is_refused(repo: Path, rev: str) -> None:
    with pytest.raises(ConfigurationError, match="not a git revision"):
        changed_requests(repo, rev)


def _commit_link(repo: Path, name: str, target: str) -> None:
    (repo / "requests" / name).symlink_to(target)
    git(repo.parent, "add", "-A")
    git(repo.parent, "commit", "-qm", f"link {name}")


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside.yml"])
def test_a_committed_symlink_out_of_the_root_is_refused_unread(repo: Path, target: str) -> None:
    outside = repo.parent.parent / "outside.yml"
    outside.write_text("service: s\nproject: stolen\n")
    _commit_link(repo, "evil.yml", target)
    with pytest.raises(ConfigurationError, match=r"requests/evil.yml .*leaves the project root"):
        changed_requests(repo, "HEAD~1")
    res = CliRunner().invoke(app, ["--root", str(repo), "requests", "changed", "--since", "HEAD~1"])
    assert res.exit_code == 2 and "leaves the project root" in res.stderr.replace("\n", "")


def test_a_symlink_inside_the_root_is_followed(repo: Path) -> None:
    _commit_link(repo, "alias.yml", "new.yml")
    assert [p.name for p in changed_requests(repo, "HEAD~1")] == ["alias.yml"]
