"""The example pipelines are clients of the server: the jobs that dry-run or apply hold
INFRA_SERVER and INFRA_TOKEN and nothing of the infrastructure (no INFRA_SECRET_*, no vCenter
password, no lab bootstrap); the token never reaches a command line; the untrusted job (a
PR's own code) sees neither."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ci"
INFRA_SECRETS = ("INFRA_SECRET_", "VCENTER_PASSWORD", "secrets.yml")


def _commands(script: Any) -> str:
    return "\n".join(script) if isinstance(script, list) else str(script or "")


def _check_acting(name: str, env: dict[str, Any], script: str) -> None:
    if "infra apply" not in script:
        return
    assert {"INFRA_SERVER", "INFRA_TOKEN"} <= set(env) or env == {}, name
    assert "--server" not in script and "--token" not in script and "INFRA_TOKEN" not in script
    assert "bootstrap.sh" not in script, f"{name}: a client needs no lab bootstrap"


def test_github_jobs_that_act_hold_only_a_token() -> None:
    workflow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    for name, job in workflow["jobs"].items():
        for step in job["steps"]:
            env, script = step.get("env", {}), _commands(step.get("run"))
            assert not any(s in str(env) + script for s in INFRA_SECRETS), name
            if "pull_request'" in job["if"]:  # the PR's code: no token, no server
                assert "INFRA_TOKEN" not in str(env) and "infra apply" not in script
                continue
            if "infra apply" in script:
                assert set(env) >= {"INFRA_SERVER", "INFRA_TOKEN"}, name
                assert env["INFRA_TOKEN"] == "${{ secrets.INFRA_TOKEN }}"
            _check_acting(name, env, script)
        assert not any("bootstrap.sh" in _commands(s.get("run")) for s in job["steps"]) or (
            "pull_request'" in job["if"]
        ), f"{name} bootstraps the framework on a client runner"


def test_gitlab_jobs_that_act_hold_only_a_token() -> None:
    pipeline = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())
    for name, job in pipeline.items():
        if not isinstance(job, dict) or "script" not in job:
            continue
        template = pipeline.get(job.get("extends", ""), {})
        script = _commands(job["script"]) + _commands(job.get("before_script"))
        setup = _commands(template.get("before_script"))
        assert not any(s in str(job.get("variables", {})) + script for s in INFRA_SECRETS)
        if "infra apply" in script:  # INFRA_SERVER/INFRA_TOKEN: protected CI/CD variables
            assert "infra" in template.get("tags", []), name
            assert "bootstrap.sh" not in setup and "pip install" in setup, name
            _check_acting(name, {}, script)
