"""The wheel works outside the checkout: build it, install it into a fresh venv, and plan,
apply and document from a copied content folder, with the package's own default templates.

The fresh venv sees the dependencies (the SDKs) of the environment running the tests through
a path entry, as ``--system-site-packages`` would; none of that environment's ``.pth`` hooks
run in it, so the checkout's editable install is not importable there (the test checks).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
CONTENT = ("catalog", "templates", "playbooks", "requests", "inventories/lab")
TIMEOUT = 300


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=TIMEOUT
    )
    assert proc.returncode == 0, f"{argv}: rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def clean_env(tmp: Path) -> dict[str, str]:
    """No path, venv or infra setting of the test process leaks into the commands."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("INFRA_")
    }
    env["HOME"] = str(tmp / "home")
    env["ANSIBLE_HOME"] = str(tmp / "home" / ".ansible")
    return env


def build_wheel(tmp: Path, env: dict[str, str]) -> Path:
    """Build from a copy of the sources, so nothing is written into the checkout."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "infra_automation",
        src / "infra_automation",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist")]
    if Version(importlib.metadata.version("setuptools")) >= Version("77"):
        argv.append("--no-build-isolation")  # offline; else pip fetches setuptools>=77 from PyPI
    run([*argv, str(src)], tmp, env)
    (wheel,) = (tmp / "dist").glob("infra_automation-*.whl")
    return wheel


def fresh_venv(tmp: Path, wheel: Path, env: dict[str, str]) -> Path:
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    (site,) = (venv / "lib").glob("python*/site-packages")
    (site / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    run([*pip, "install", "--no-deps", "-q", str(wheel)], tmp, env)
    return venv


def content_folder(tmp: Path) -> Path:
    """The repository's content; without ``templates/docs``: the package's defaults render."""
    root = tmp / "content"
    ignore = shutil.ignore_patterns("generated", "__pycache__", "docs")
    for name in CONTENT:
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    assert not (root / "templates" / "docs").exists()
    return root


def test_the_installed_wheel_plans_applies_and_documents(tmp_path: Path) -> None:
    started = time.monotonic()
    env = clean_env(tmp_path)
    venv = fresh_venv(tmp_path, build_wheel(tmp_path, env), env)
    root = content_folder(tmp_path)
    infra = str(venv / "bin" / "infra")
    where = run(
        [str(venv / "bin" / "python"), "-c", "import infra_automation as m; print(m.__file__)"],
        root,
        env,
    )
    assert Path(where.stdout.strip()).is_relative_to(venv)  # the wheel, not the checkout

    plan = run([infra, "plan", "requests/example-landscape.yml", "--output", "json"], root, env)
    assert '"vmware.vms"' in plan.stdout and '"fingerprint"' in plan.stdout

    run([infra, "apply", "requests/demo-chain.yml"], root, env)  # core steps only: no lab
    docs = run([infra, "docs", "build"], root, env)
    pages = root / "docs" / "projects" / "demo"
    assert "demo: 7 pages" in docs.stdout
    assert {"index.md", "plan.md", "history.md"} <= {p.name for p in pages.glob("*.md")}
    assert "finish" in (pages / "plan.md").read_text()
    print(f"wheel build + venv + plan/apply/docs: {time.monotonic() - started:.1f}s")


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)
