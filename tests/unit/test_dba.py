"""The DBA department without a lab: the landscape's database tier in the plan, the owner's
password generated once and kept as a secret, the play's params and the step's outputs."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra_automation.config import load_settings
from infra_automation.departments import dba
from infra_automation.departments.ansible import HostAddress
from infra_automation.engine import Engine
from infra_automation.exceptions import ConfigurationError
from infra_automation.executors.base import StepContext
from infra_automation.inventory import load_inventory
from infra_automation.planner import Plan
from infra_automation.render import render_value
from infra_automation.results import ErrorKind, StepResult
from infra_automation.secrets import MASK, Secrets, redact
from infra_automation.verify import SyncState

ROOT = Path(__file__).resolve().parents[2]
DB_STEPS = {"db_vm", "db_baseline", "database"}


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(load_settings(ROOT, env={}), load_observers=False)


def landscape(engine: Engine, **params: Any) -> Plan:
    request = engine.validate(
        {"service": "project-landscape", "project": "my-shop", "params": {"web_vms": 2, **params}}
    )
    return engine.plan(request)


def rendered(plan: Plan, step_id: str, param: str, **steps: Any) -> Any:
    variables = {"project": plan.project, "params": dict(plan.request.params), "steps": steps}
    return render_value(plan.step(step_id).params[param], variables)


# --- the plan -------------------------------------------------------------------------------


def test_database_none_is_the_default_and_plans_no_db_steps(engine: Engine) -> None:
    plan = landscape(engine)
    assert plan.request.params["database"] == "none"
    ids = {s.id for s in plan.steps}
    assert not ids & DB_STEPS and set(plan.left_out) >= DB_STEPS
    assert not {s.department for s in plan.steps} & {"dba"}
    assert rendered(plan, "ipam", "hosts") == 2  # one address per web VM, as before
    web_vars = rendered(plan, "web", "vars")
    assert web_vars["web_db_tier"] is False
    assert (
        set(plan.step("web").needs) >= {"os_baseline"} and "database" not in plan.step("web").needs
    )


def test_postgresql_plans_a_db_vm_its_baseline_and_the_database_before_web(
    engine: Engine,
) -> None:
    plan = landscape(engine, database="postgresql")
    assert {s.id for s in plan.steps} >= DB_STEPS
    assert rendered(plan, "ipam", "hosts") == 3  # the web VMs' addresses and the db VM's
    db_vm = plan.step("db_vm")
    assert db_vm.executor == "vmware.vms" and db_vm.params["role"] == "db"
    assert db_vm.params["count"] == 1
    hosts = ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    ipam = {"outputs": {"hosts": hosts}}
    assert rendered(plan, "db_vm", "addresses", ipam=ipam) == ["10.0.0.4"]  # after the web VMs'
    assert plan.step("db_baseline").needs == ("db_vm",)
    database = plan.step("database")
    assert (database.department, database.executor) == ("dba", "dba.postgresql")
    assert set(database.needs) == {"db_baseline", "os_baseline"}
    assert "database" in plan.step("web").needs
    assert rendered(plan, "web", "vars")["web_db_tier"] is True


def test_an_unknown_database_is_refused_naming_the_field(tmp_path: Path) -> None:
    request = tmp_path / "bad.yml"
    request.write_text(
        "service: project-landscape\nproject: shop\nparams:\n  database: mysql\n", encoding="utf-8"
    )
    argv = [sys.executable, "-m", "infra_automation.cli", "--root", str(ROOT), "plan", str(request)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFRA_")}
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "params.database: must be one of 'none', 'postgresql'" in run.stderr


# --- the owner's password -------------------------------------------------------------------


def context(secrets: Secrets | None, tmp_path: Path) -> StepContext:
    params = dba.PostgresParams(
        project="my-shop", server=HostAddress(name="my-shop-db-01"), clients=[{"name": "w1"}]
    )
    folder = tmp_path / "inventory"
    folder.mkdir(exist_ok=True)
    (folder / "inventory.yml").write_text("name: t\n", encoding="utf-8")
    inventory = load_inventory(folder)
    return StepContext(
        run_id="r1",
        project="my-shop",
        step_id="database",
        department="dba",
        params=params,
        inventory=inventory,
        secrets=secrets,
        root=tmp_path,
    )


def secrets_file(tmp_path: Path) -> Path:
    path = tmp_path / "generated" / "secrets.yml"
    path.parent.mkdir()
    path.write_text("vcenter_password: '00001234'\nbackup_password: yes-it-is\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def test_the_password_is_generated_once_kept_and_masked(tmp_path: Path) -> None:
    path = secrets_file(tmp_path)
    name = dba.secret_name("my_shop")
    ctx = context(Secrets(files=(path,), env={}), tmp_path)
    password, generated = dba.owner_password(ctx, name, check=False)
    assert generated and len(password) == dba.PASSWORD_LENGTH and password.isalnum()
    assert redact(f"x {password} y") == f"x {MASK} y"  # masked before anything prints it
    kept = yaml.safe_load(path.read_text())
    assert kept == {"vcenter_password": "00001234", "backup_password": "yes-it-is", name: password}
    assert "'00001234'" in path.read_text()  # the other secrets' lines as written
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # a re-apply (a new process: new Secrets) finds it; so does this one, whose file cache
    # was read before the password was kept
    again = context(Secrets(files=(path,), env={}), tmp_path)
    assert dba.owner_password(again, name, check=False) == (password, False)
    assert dba.owner_password(ctx, name, check=False) == (password, False)


def test_a_dry_run_uses_a_throwaway_password_and_keeps_nothing(tmp_path: Path) -> None:
    path = secrets_file(tmp_path)
    before = path.read_text()
    ctx = context(Secrets(files=(path,), env={}), tmp_path)
    password, generated = dba.owner_password(ctx, "db_password_my_shop", check=True)
    assert generated and password not in path.read_text()
    assert path.read_text() == before


def test_an_operator_set_password_wins_and_is_checked(tmp_path: Path) -> None:
    path = secrets_file(tmp_path)
    env = {"INFRA_SECRET_DB_PASSWORD_MY_SHOP": "Set-by-the-operator-1"}
    ctx = context(Secrets(files=(path,), env=env), tmp_path)
    assert dba.owner_password(ctx, "db_password_my_shop", check=False) == (
        "Set-by-the-operator-1",
        False,
    )
    assert "db_password_my_shop" not in path.read_text()
    bad = context(
        Secrets(files=(path,), env={"INFRA_SECRET_DB_PASSWORD_MY_SHOP": "a b c d"}), tmp_path
    )
    with pytest.raises(ConfigurationError, match="db_password_my_shop") as caught:
        dba.owner_password(bad, "db_password_my_shop", check=False)
    assert "a b c d" not in str(caught.value)


def test_a_backend_that_cannot_keep_it_is_named_in_a_clear_error(tmp_path: Path) -> None:
    class Remote:
        def find(self, name: str) -> str | None:
            return None

        def where(self) -> str:
            return "vault http://vault.example KV v2 secret/infra"

    ctx = context(Secrets(env={}, backend=Remote()), tmp_path)
    with pytest.raises(ConfigurationError) as caught:
        dba.owner_password(ctx, "db_password_my_shop", check=False)
    message = str(caught.value)
    assert "db_password_my_shop" in message and "INFRA_SECRET_DB_PASSWORD_MY_SHOP" in message
    assert "vault http://vault.example" in message


def test_decommission_forgets_the_kept_password_only(tmp_path: Path) -> None:
    path = secrets_file(tmp_path)
    ctx = context(Secrets(files=(path,), env={}), tmp_path)
    dba.owner_password(ctx, "db_password_my_shop", check=False)
    assert dba.forget(path, "db_password_my_shop", check=True) is True  # dry run: still there
    assert "db_password_my_shop" in path.read_text()
    assert dba.forget(path, "db_password_my_shop", check=False) is True
    assert yaml.safe_load(path.read_text()) == {
        "vcenter_password": "00001234",
        "backup_password": "yes-it-is",
    }
    assert dba.forget(path, "db_password_my_shop", check=False) is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_forget_executor_reports_what_it_removed(tmp_path: Path) -> None:
    path = secrets_file(tmp_path)
    secrets = Secrets(files=(path,), env={})
    dba.owner_password(context(secrets, tmp_path), "db_password_my_shop", check=False)
    ctx = context(secrets, tmp_path)
    forget_ctx = StepContext(**{**ctx.__dict__, "params": dba.ForgetParams(project="my-shop")})
    first = dba.ForgetExecutor().apply(forget_ctx)
    assert first.changed and first.outputs == {"database": "my_shop", "forgotten": True}
    assert "db_password_my_shop" in first.diff and "db_password_my_shop" not in path.read_text()
    second = dba.ForgetExecutor().apply(forget_ctx)
    assert not second.changed and second.outputs["forgotten"] is False


# --- the play's params and the step's outputs -----------------------------------------------


def test_the_play_gets_names_and_the_secret_by_name_never_the_value() -> None:
    params = dba.PostgresParams(
        project="my-shop",
        server={"name": "my-shop-db-01", "ip": "10.0.0.4", "moid": "vm-1"},
        clients=[{"name": "my-shop-web-01", "ip": "10.0.0.2"}, {"name": "my-shop-web-02"}],
    )
    play = dba.playbook_params(params, "db_password_my_shop")
    assert [h.name for h in play.hosts] == ["my-shop-db-01", "my-shop-web-01", "my-shop-web-02"]
    assert play.vars == {
        "database_server": "my-shop-db-01",
        "database_clients": ["my-shop-web-01", "my-shop-web-02"],
        "database_name": "my_shop",
        "database_owner": "my_shop_owner",
        "database_message": "Hello from the my-shop database",
    }
    assert play.secret_vars == {"database_password": "db_password_my_shop"}


@pytest.mark.parametrize("field", ["database", "owner"])
def test_names_that_are_not_postgresql_identifiers_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        dba.PostgresParams(
            project="shop",
            server={"name": "shop-db-01"},
            clients=[{"name": "shop-web-01"}],
            **{field: "x; DROP TABLE y"},
        )


def test_outputs_come_from_what_the_play_read_back() -> None:
    params = dba.PostgresParams(
        project="shop", server={"name": "shop-db-01"}, clients=[{"name": "shop-web-01"}]
    )
    facts = {
        "database": "shop",
        "owner": "shop_owner",
        "address": "10.89.0.2",
        "port": 5432,
        "server_version": "15.8",
        "clients": ["10.89.0.3"],
        "refused_from": "10.89.0.2",
        "message": "hello",
    }
    played = {
        "hosts": {
            "shop-db-01": {"host": "shop-db-01", "facts": facts},
            "shop-web-01": {"host": "shop-web-01", "facts": {"connected": True}},
        }
    }
    out = dba.database_outputs(params, played, check=False)
    assert out["address"] == "10.89.0.2" and out["clients"] == ["10.89.0.3"]
    assert out["client_hosts"] == ["shop-web-01"] and out["refused_from"] == "10.89.0.2"
    assert out["server"] == "shop-db-01" and out["message"] == "hello"
    assert not any("password" in key for key in out)


RECORDED = {
    "database": "shop",
    "owner": "shop_owner",
    "address": "10.89.0.2",
    "clients": ["10.89.0.3"],
    "client_hosts": ["shop-web-01"],
    "refused_from": "10.89.0.2",
    "message": "hello",
}


def test_verify_compares_what_the_dry_run_read_with_the_record() -> None:
    same = StepResult.success(outputs=RECORDED)
    checks = dba.verify_checks(RECORDED, same)
    assert {c.state for c in checks} == {SyncState.IN_SYNC}
    assert "connection from shop-web-01" in [c.resource for c in checks]
    moved = {**RECORDED, "message": "changed", "client_hosts": []}
    drifted = {
        c.resource: c.found
        for c in dba.verify_checks(RECORDED, StepResult.success(outputs=moved, changed=True))
        if c.state is SyncState.DRIFTED
    }
    assert drifted == {
        "landing row": "changed",
        "connection from shop-web-01": "refused",
        "configuration": "would change",
    }


def test_verify_of_an_unreachable_server_is_unverifiable_a_failed_check_drift() -> None:
    down = StepResult.failure("db: unreachable", kind=ErrorKind.UNREACHABLE)
    (check,) = dba.verify_checks(RECORDED, down)
    assert check.state is SyncState.UNVERIFIABLE and check.resource == "database shop"
    refused = StepResult.failure(
        "the database does not read back as applied", kind=ErrorKind.INTERNAL
    )
    (check,) = dba.verify_checks(RECORDED, refused)
    assert check.state is SyncState.DRIFTED and "does not read back" in check.found
