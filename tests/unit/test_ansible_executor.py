"""Pure logic of the Ansible department: params validation, inventory, diffs, stats.

The executor itself is driven against real Debian hosts in
``tests/integration/test_ansible_lab.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from infra_automation.departments.ansible import (
    GUARD_ORPHANED_RC,
    GUARD_TIMEOUT_RC,
    HostLog,
    HostStats,
    PlaybookExecutor,
    PlaybookParams,
    SecretChannel,
    _stats,
    _target_error,
    ansible_playbook,
    build_inventory,
    collect_diffs,
    failure_kind,
    format_diff,
    guard_command,
    job_env,
    new_job_dir,
    read_secrets,
    resolve_targets,
    run_kind,
    sweep_jobs,
    task_error,
    unreachable_kind,
)
from infra_automation.exceptions import ConfigurationError
from infra_automation.executors.base import StepContext
from infra_automation.inventory import Host, Inventory, InventoryFile
from infra_automation.results import ErrorKind, Status


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


# --- error kinds at this edge ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Failed to connect to the host via ssh: ssh: connect to host 127.0.0.1 port 1: "
         "Connection refused", ErrorKind.UNREACHABLE),
        ("Failed to connect to the host via ssh: root@127.0.0.1: Permission denied "
         "(publickey,password).", ErrorKind.AUTH),
        ("Invalid/incorrect password: Permission denied, please try again.", ErrorKind.AUTH),
        ("Failed to connect to the host via ssh: Connection timed out during banner exchange",
         ErrorKind.TIMEOUT),
        ("Failed to connect to the host via ssh: ssh: Could not resolve hostname nope",
         ErrorKind.UNREACHABLE),
    ],
)  # fmt: skip
def test_unreachable_hosts_are_told_apart(message: str, kind: ErrorKind) -> None:
    assert unreachable_kind(message) is kind


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("unknown time zone Mars/Olympus", ErrorKind.REJECTED),
        ("non-zero return code | E: Unable to locate package nope", ErrorKind.REJECTED),
        ("The task includes an option with an undefined variable. 'x' is undefined",
         ErrorKind.INVALID),
        ("Unsupported parameters for (ansible.builtin.copy) module: bogus", ErrorKind.INVALID),
        ("Missing sudo password", ErrorKind.AUTH),
        ("Timeout (12s) waiting for privilege escalation prompt: ", ErrorKind.TIMEOUT),
    ],
)  # fmt: skip
def test_failed_tasks_are_rejected_unless_the_play_or_become_is_at_fault(
    message: str, kind: ErrorKind
) -> None:
    assert failure_kind(message) is kind


@pytest.mark.parametrize(
    ("status", "rc", "kind"),
    [
        ("timeout", 254, ErrorKind.TIMEOUT),
        ("failed", GUARD_TIMEOUT_RC, ErrorKind.TIMEOUT),
        ("failed", 4, ErrorKind.INVALID),  # parser error
        ("failed", 5, ErrorKind.INVALID),  # bad options
        ("failed", 1, ErrorKind.INVALID),  # e.g. a role that cannot be found
        ("failed", 127, ErrorKind.INTERNAL),  # ansible-playbook not found
        ("failed", 250, ErrorKind.INTERNAL),  # Ansible crashed
        ("failed", GUARD_ORPHANED_RC, ErrorKind.INTERNAL),
        ("failed", None, ErrorKind.INTERNAL),
    ],
)
def test_plays_that_fail_as_a_whole(status: str, rc: int | None, kind: ErrorKind) -> None:
    assert run_kind(status, rc) is kind


def test_a_host_without_results_failed_why_the_play_did_not_run() -> None:
    error, kind = _target_error(HostLog(), HostStats(), (ErrorKind.INVALID, "ERROR! bad"), False)
    assert kind is ErrorKind.INVALID and error == "the play did not run: ERROR! bad"
    error, kind = _target_error(HostLog(), HostStats(), None, False)
    assert kind is ErrorKind.INVALID and error is not None and "hosts:" in error
    assert _target_error(HostLog(), HostStats(ok=2), None, True) == (None, None)
    failed = HostLog(failures=["task 'x': boom"], kind=ErrorKind.REJECTED)
    assert _target_error(failed, HostStats(failed=1), None, True) == (
        "task 'x': boom",
        ErrorKind.REJECTED,
    )


# --- secrets: one seam, never on disk, never in the environment ----------------------------


def test_secrets_come_from_the_step_context_only(tmp_path: Path) -> None:
    from infra_automation.secrets import Secrets

    params = PlaybookParams(playbook="backup.yml", secret_vars={"backup_password": "bpw"})
    with pytest.raises(ConfigurationError, match="no secrets were handed"):
        read_secrets(_ctx(tmp_path, params), params)
    ctx = _ctx(tmp_path, params, secrets=Secrets(env={"INFRA_SECRET_BPW": "from-the-ctx"}))
    assert read_secrets(ctx, params) == {"backup_password": "from-the-ctx"}


def test_ansible_playbook_gets_no_infra_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRA_SECRET_UNRELATED", "do-not-forward")
    monkeypatch.setenv("SOME_TOKEN", "not-forwarded-either")
    monkeypatch.setenv("ANSIBLE_SSH_ARGS", "-o ControlMaster=no")
    runner_env = {
        **os.environ,
        "ANSIBLE_STDOUT_CALLBACK": "awx_display",
        "AWX_ISOLATED_DATA_DIR": "/j",
    }
    env = job_env(runner_env, {"ANSIBLE_HOME": "/h"})
    assert not [k for k in env if k.startswith("INFRA_")]
    assert "SOME_TOKEN" not in env
    assert env["ANSIBLE_SSH_ARGS"] == "-o ControlMaster=no"  # the operator's Ansible settings
    assert env["ANSIBLE_STDOUT_CALLBACK"] == "awx_display"  # what ansible-runner needs
    assert env["AWX_ISOLATED_DATA_DIR"] == "/j"
    assert env["ANSIBLE_HOME"] == "/h"


def test_extravars_pass_through_a_fifo_read_once(tmp_path: Path) -> None:
    path = tmp_path / "x.fifo"
    with SecretChannel(path, "x: !unsafe 'fifo-secret'\n" * 5000) as channel:
        assert stat.S_ISFIFO(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert channel.path.read_text() == "x: !unsafe 'fifo-secret'\n" * 5000
    assert not path.exists()


def test_a_fifo_nobody_reads_does_not_hang(tmp_path: Path) -> None:
    started = time.monotonic()
    with SecretChannel(tmp_path / "x.fifo", "never read"):
        pass
    assert time.monotonic() - started < 2


def test_sweep_removes_the_dirs_of_dead_owners_only(tmp_path: Path) -> None:
    mine = new_job_dir(tmp_path, "r1", "web")
    assert stat.S_IMODE(mine.stat().st_mode) == 0o700
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = tmp_path / "jobs" / f"{dead.pid}-12345-r0-web-abc"
    (gone / "env").mkdir(parents=True)
    (gone / "env" / "extravars").write_text("secret")
    legacy = tmp_path / "r0" / "web" / "env"
    legacy.mkdir(parents=True)
    assert sorted(sweep_jobs(tmp_path)) == sorted([gone, legacy])
    assert mine.is_dir() and not gone.exists() and not legacy.exists()


# --- the guard: the play dies with the process that runs the step --------------------------

# A "step process" that runs a process tree under the guard like ansible-runner does: the
# guarded command forks a grandchild in a session of its own (as Ansible's workers do).
TREE = "import os, time\nif os.fork() == 0:\n    os.setsid(); time.sleep(300)\ntime.sleep(300)\n"
STEP = (
    "import subprocess, sys, time\n"
    "from infra_automation.departments.ansible import guard_command\n"
    "subprocess.Popen(guard_command([sys.executable, '-c', sys.argv[1], sys.argv[2]], 600))\n"
    "time.sleep(300)\n"
)


def _tagged(tag: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            stat_ = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if tag.encode() in (entry / "cmdline").read_bytes() and stat_[0] != "Z":
                found.append(int(entry.name))
    return found


def test_the_guarded_tree_dies_with_the_step_process_even_on_sigkill() -> None:
    tag = f"guard-test-{uuid.uuid4().hex}"
    step = subprocess.Popen([sys.executable, "-c", STEP, TREE, tag])
    try:
        deadline = time.monotonic() + 20
        while len(_tagged(tag)) < 4:  # step, guard, command, its detached child
            assert time.monotonic() < deadline, _tagged(tag)
            time.sleep(0.1)
        step.kill()
        step.wait()
        deadline = time.monotonic() + 10
        while _tagged(tag) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _tagged(tag) == []
    finally:
        for pid in _tagged(tag):
            os.kill(pid, signal.SIGKILL)


def test_the_guard_passes_the_exit_code_and_stops_at_its_timeout() -> None:
    ok = subprocess.run(
        guard_command([sys.executable, "-c", "raise SystemExit(3)"], 60), check=False
    )
    assert ok.returncode == 3
    started = time.monotonic()
    slow = subprocess.run(guard_command(["/bin/sleep", "60"], 1), check=False)
    assert slow.returncode == GUARD_TIMEOUT_RC
    assert time.monotonic() - started < 10
