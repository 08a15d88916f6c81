"""Pure logic of the Ansible department: params validation, inventory, diffs, stats.

The executor itself is driven against real Debian hosts in
``tests/integration/test_ansible_lab.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from infra_automation.departments.ansible import (
    PlaybookExecutor,
    PlaybookParams,
    _stats,
    ansible_playbook,
    build_inventory,
    collect_diffs,
    format_diff,
    resolve_targets,
    task_error,
)
from infra_automation.exceptions import ConfigurationError
from infra_automation.executors.base import StepContext
from infra_automation.inventory import Host, Inventory, InventoryFile
from infra_automation.results import Status


def _inventory(tmp_path: Path, binding: str = "static") -> Inventory:
    spec = InventoryFile.model_validate(
        {
            "name": "t",
            "groups": {"debian": {"data": {"ansible_python_interpreter": "/usr/bin/python3"}}},
            "hosts": {
                "debian1": {
                    "hostname": "127.0.0.1",
                    "port": 2201,
                    "username": "root",
                    "ssh_key_file": "/k",
                    "groups": ["debian"],
                    "data": {"http_port": 8081},
                }
            },
            "host_binding": {"kind": binding, "defaults": {"username": "admin"}},
        }
    )
    return Inventory(spec, tmp_path)


def _ctx(tmp_path: Path, params: PlaybookParams, **kw: object) -> StepContext:
    return StepContext(
        run_id="r1",
        project="demo",
        step_id="web",
        department="web",
        params=params,
        inventory=_inventory(tmp_path),
        root=tmp_path,
        **kw,  # type: ignore[arg-type]
    )


# --- params: nothing unsafe gets through -----------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "two\nlines",
        "{{ lookup('pipe', 'id') }}",
        "{% raw %}",
        "a; rm -rf /",
        "$(id)",
        "`id`",
        "x | sh",
        "it's",
        "back\\slash",
    ],
)
def test_string_vars_refuse_injection(value: str) -> None:
    with pytest.raises(ValidationError) as err:
        PlaybookParams.model_validate({"playbook": "web.yml", "vars": {"web_site_title": value}})
    locs = {".".join(str(p) for p in e["loc"][:3]) for e in err.value.errors()}
    assert "vars.web_site_title.str" in locs or any(
        loc.startswith("vars.web_site_title") for loc in locs
    )


def test_nested_string_vars_are_checked_too() -> None:
    with pytest.raises(ValidationError, match="os_baseline_admin_users"):
        PlaybookParams.model_validate(
            {
                "playbook": "os-baseline.yml",
                "vars": {"os_baseline_admin_users": [{"name": "alice", "ssh_keys": ["k\nx"]}]},
            }
        )


def test_plain_values_are_accepted() -> None:
    params = PlaybookParams.model_validate(
        {
            "playbook": "os-baseline.yml",
            "vars": {
                "os_baseline_timezone": "Europe/Zurich",
                "os_baseline_admin_users": [
                    {"name": "alice", "ssh_keys": ["ssh-ed25519 AAAAC3Nz+/= alice@example"]}
                ],
                "web_fpm_max_children": 8,
                "backup_first_snapshot": False,
            },
            "hosts": [{"name": "web-01", "ip": "10.20.1.10", "cpu": 2}],
        }
    )
    assert params.hosts[0].ip == "10.20.1.10"
    assert params.vars["backup_first_snapshot"] is False


@pytest.mark.parametrize(
    "playbook", ["../etc/passwd.yml", "/abs.yml", "web", "web.yml\n", "sub/web.yml", "Web.yml"]
)
def test_playbook_must_be_a_plain_file_name(playbook: str) -> None:
    with pytest.raises(ValidationError, match="playbook"):
        PlaybookParams.model_validate({"playbook": playbook})


@pytest.mark.parametrize("name", ["ansible_host", "infra_project", "Bad", "a-b", "x y"])
def test_var_names_are_checked(name: str) -> None:
    with pytest.raises(ValidationError, match="vars"):
        PlaybookParams.model_validate({"playbook": "web.yml", "vars": {name: "x"}})


def test_a_var_cannot_be_both_plain_and_secret() -> None:
    with pytest.raises(ValidationError, match="backup_password"):
        PlaybookParams.model_validate(
            {
                "playbook": "backup.yml",
                "vars": {"backup_password": "x"},
                "secret_vars": {"backup_password": "backup_password"},
            }
        )


def test_unknown_params_are_refused() -> None:
    with pytest.raises(ValidationError, match="cmdline"):
        PlaybookParams.model_validate({"playbook": "web.yml", "cmdline": "-e x=1"})


# --- targets and inventory -------------------------------------------------------------------


def test_inventory_hosts_are_used_and_vms_are_bound(tmp_path: Path) -> None:
    params = PlaybookParams(playbook="web.yml", hosts=[{"name": "web-01", "ip": "10.0.0.5"}])  # type: ignore[list-item]
    ctx = _ctx(tmp_path, params, targets=("debian1",))
    hosts, planned = resolve_targets(ctx, params, check=False)
    assert list(hosts) == ["debian1", "web-01"]
    assert hosts["web-01"].hostname == "10.0.0.5"
    assert hosts["web-01"].username == "admin"
    assert planned == []


def test_a_vm_without_address_is_planned_in_check_mode_and_an_error_otherwise(
    tmp_path: Path,
) -> None:
    params = PlaybookParams(playbook="web.yml", hosts=[{"name": "web-01"}])  # type: ignore[list-item]
    ctx = _ctx(tmp_path, params)
    assert resolve_targets(ctx, params, check=True) == ({}, ["web-01"])
    with pytest.raises(ConfigurationError, match="web-01"):
        resolve_targets(ctx, params, check=False)


def test_build_inventory_maps_connection_data_and_groups() -> None:
    host = Host(
        name="debian1",
        hostname="127.0.0.1",
        port=2201,
        username="root",
        ssh_key_file="/k",
        groups=["debian", "vm-pool"],
        data={"http_port": 8081, "ansible_host_key_checking": False},
    )
    inv = build_inventory({"debian1": host}, set())
    hv = inv["all"]["hosts"]["debian1"]
    assert hv["ansible_host"] == "127.0.0.1"
    assert hv["ansible_port"] == 2201
    assert hv["ansible_ssh_private_key_file"] == "/k"
    assert hv["http_port"] == 8081
    assert hv["ansible_host_key_checking"] is False
    assert "ansible_password" not in hv
    assert set(inv["all"]["children"]) == {"debian", "vm_pool"}
    with_pw = build_inventory({"debian1": host}, {"debian1"})["all"]["hosts"]["debian1"]
    assert with_pw["ansible_password"] == "{{ infra_host_passwords[inventory_hostname] }}"


def test_missing_playbook_fails_before_anything_runs(tmp_path: Path) -> None:
    params = PlaybookParams(playbook="nope.yml")
    result = PlaybookExecutor().apply(_ctx(tmp_path, params, targets=("debian1",)))
    assert result.status is Status.FAILED
    assert result.error is not None and "params.playbook" in result.error
    assert not (tmp_path / ".infra").exists()


def test_missing_secret_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "backup.yml").write_text("---\n")
    params = PlaybookParams(playbook="backup.yml", secret_vars={"backup_password": "nope"})
    from infra_automation.secrets import Secrets

    result = PlaybookExecutor().apply(
        _ctx(tmp_path, params, targets=("debian1",), secrets=Secrets(env={}))
    )
    assert result.status is Status.FAILED
    assert result.error is not None
    assert "params.secret_vars.backup_password" in result.error
    assert "INFRA_SECRET_NOPE" in result.error


def test_ansible_playbook_is_found_next_to_this_python() -> None:
    import sys

    assert ansible_playbook().parent == Path(sys.executable).parent


# --- results ---------------------------------------------------------------------------------


def test_format_diff_of_a_rendered_file_names_the_target() -> None:
    text = format_diff(
        {
            "before": "a\n",
            "after": "b\n",
            "before_header": "/etc/x.conf",
            "after_header": "/root/.ansible/tmp/ansible-local-1/tmp/x.j2",
        },
        "/etc/x.conf",
    )
    assert text.splitlines() == [
        "--- /etc/x.conf",
        "+++ after: /etc/x.conf",
        "@@ -1 +1 @@",
        "-a",
        "+b",
    ]


def test_format_diff_of_file_state_and_prepared_text() -> None:
    text = format_diff({"before": {"state": "absent"}, "after": {"state": "link"}}, "/l")
    assert '-  "state": "absent"' in text and '+  "state": "link"' in text
    assert format_diff({"prepared": "changed x"}) == "changed x\n"
    assert format_diff({"before": "same", "after": "same"}) == ""


def test_collect_diffs_reads_loop_items_that_changed() -> None:
    res = {
        "results": [
            {"changed": True, "diff": {"before": "1", "after": "2"}},
            {"changed": False, "diff": {"before": "3", "after": "4"}},
            {"changed": True, "diff": [{"prepared": "p"}]},
        ]
    }
    assert collect_diffs(res) == [{"before": "1", "after": "2"}, {"prepared": "p"}]


def test_task_error_joins_message_and_stderr_on_one_line() -> None:
    assert task_error({"msg": "non-zero return code", "stderr": "boom\nbad"}) == (
        "non-zero return code | boom bad"
    )
    assert task_error({"results": [{"failed": True, "msg": "item bad"}]}) == "item bad"
    assert task_error({}) == "failed"


def test_stats_are_mapped_per_host() -> None:
    stats = _stats({"ok": {"a": 3}, "changed": {"a": 1}, "failures": {"b": 1}, "dark": {"c": 1}})
    assert stats["a"].ok == 3 and stats["a"].changed == 1
    assert stats["b"].failed == 1
    assert stats["c"].unreachable == 1


def test_secret_values_reach_ansible_verbatim_never_templated(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from infra_automation.departments.ansible import Unsafe, dump_extravars

    secret = "pa{{ 7*7 }}s{# c #}s{% raw %}"
    (tmp_path / "vars.yml").write_text(dump_extravars({"x": Unsafe(secret), "plain": "ok"}))
    (tmp_path / "play.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.debug: {msg: '{{ x }}|{{ plain }}'}\n"
    )
    binary = Path(sys.executable).parent / "ansible-playbook"
    proc = subprocess.run(
        [str(binary), "-i", "localhost,", "-c", "local", "-e", f"@{tmp_path / 'vars.yml'}",
         str(tmp_path / "play.yml")],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "ANSIBLE_HOME": str(tmp_path / "home"), "ANSIBLE_NOCOLOR": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f'"msg": "{secret}|ok"' in proc.stdout


def test_run_artifacts_keep_no_environment_and_no_known_secret(tmp_path: Path) -> None:
    from infra_automation.departments.ansible import sanitize_artifacts
    from infra_automation.secrets import REDACTOR

    REDACTOR.add("artifact-secret-4711")
    (tmp_path / "job_events").mkdir()
    (tmp_path / "command").write_text('{"env": {"INFRA_SECRET_X": "y"}}')
    (tmp_path / "stdout").write_text("changed: artifact-secret-4711 written\n")
    (tmp_path / "job_events" / "1.json").write_text('{"res": "artifact-secret-4711"}')
    sanitize_artifacts(tmp_path)
    assert not (tmp_path / "command").exists()
    for path in (tmp_path / "stdout", tmp_path / "job_events" / "1.json"):
        assert "artifact-secret-4711" not in path.read_text()
