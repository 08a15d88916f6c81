"""The lab orchestrator's own logic, with small fake components (no real targets here:
the real components are driven by tests/integration/test_lab.py)."""

from __future__ import annotations

import json
import stat
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from infra_automation.departments.vmware import vcenter_config
from infra_automation.exceptions import LabError
from infra_automation.inventory import load_inventory
from infra_automation.lab import orchestrator
from infra_automation.lab.base import Fragment, Health, LabContext, LabOptions, Missing
from infra_automation.lab.orchestrator import (
    Lab,
    load_component,
    merge_fragments,
    requirements_message,
    write_atomic,
)

HAND_WRITTEN = Path(__file__).resolve().parents[2] / "inventories" / "lab" / "inventory.yml"


class Fake:
    """A component that 'runs' when a marker file exists in its state dir."""

    def __init__(
        self,
        name: str,
        inventory: dict[str, Any] | None = None,
        secrets: dict[str, str] | None = None,
        missing: list[Missing] | None = None,
        fail: str | None = None,
        barrier: threading.Barrier | None = None,
    ) -> None:
        self.name = name
        self.inventory = inventory or {}
        self.secrets = secrets or {}
        self.missing = missing or []
        self.fail = fail
        self.barrier = barrier
        self.calls: list[str] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def requirements(self) -> list[Missing]:
        return list(self.missing)

    def up(self, ctx: LabContext) -> Fragment:
        with self._lock:
            self.calls.append("up")
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.barrier is not None:
                self.barrier.wait()
            if self.fail:
                raise LabError(self.fail)
            assert ctx.ssh_key.is_file(), "the orchestrator makes the key before components start"
            (ctx.dir(self.name) / "running").write_text("1")
            return Fragment(self.inventory, self.secrets)
        finally:
            with self._lock:
                self.active -= 1

    def down(self, ctx: LabContext) -> None:
        self.calls.append("down")
        (ctx.state_dir / self.name / "running").unlink(missing_ok=True)

    def status(self, ctx: LabContext) -> list[Health]:
        running = (ctx.state_dir / self.name / "running").exists()
        return [Health(self.name, running, "running" if running else "not running")]


class FakeRouters(Fake):
    def __init__(self, **kw: Any) -> None:
        super().__init__(
            "routers",
            inventory={"hosts": {"core": {"hostname": "127.0.0.1", "port": 2001}}},
            **kw,
        )
        self.router_calls: list[tuple[str, str, str]] = []

    def stop_router(self, ctx: LabContext, name: str) -> None:
        self.router_calls.append(("stop", ctx.name, name))

    def start_router(self, ctx: LabContext, name: str) -> None:
        self.router_calls.append(("start", ctx.name, name))

    def restart_router(self, ctx: LabContext, name: str) -> None:
        self.router_calls.append(("restart", ctx.name, name))


def fakes(**kw: Any) -> list[Fake]:
    return [
        Fake(
            "vcenter",
            inventory={"vcenter": {"host": "127.0.0.1", "port": 8989}},
            secrets={"vcenter_password": "s3cret-pass"},
            **kw,
        ),
        FakeRouters(**kw),
        Fake(
            "hosts",
            inventory={
                "hosts": {
                    "debian1": {
                        "hostname": "127.0.0.1",
                        "port": 2201,
                        "groups": ["debian", "vm-pool"],  # as hosts.host_entry writes it
                    }
                }
            },
            **kw,
        ),
    ]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    inv = tmp_path / "inventories" / "lab"
    inv.mkdir(parents=True)
    (inv / "inventory.yml").write_text(HAND_WRITTEN.read_text())
    return tmp_path


# --- pure helpers ---------------------------------------------------------------------------


def test_merge_fragments_deep_merges_hosts_of_several_components() -> None:
    inventory, secrets = merge_fragments(
        [
            ("routers", Fragment({"hosts": {"core": {"port": 1}}})),
            ("hosts", Fragment({"hosts": {"debian1": {"port": 2}}}, {"a": "x"})),
            ("vcenter", Fragment({"vcenter": {"port": 3}}, {"b": "y"})),
        ]
    )
    assert inventory == {
        "hosts": {"core": {"port": 1}, "debian1": {"port": 2}},
        "vcenter": {"port": 3},
    }
    assert secrets == {"a": "x", "b": "y"}


def test_merge_fragments_names_both_components_on_conflict() -> None:
    with pytest.raises(LabError, match=r"'routers' and 'hosts' both set hosts\.core\.port"):
        merge_fragments(
            [
                ("routers", Fragment({"hosts": {"core": {"port": 1}}})),
                ("hosts", Fragment({"hosts": {"core": {"port": 2}}})),
            ]
        )
    with pytest.raises(LabError, match="secret 'pw'"):
        merge_fragments(
            [("a", Fragment(secrets={"pw": "1"})), ("b", Fragment(secrets={"pw": "2"}))]
        )


def test_requirements_message_gives_one_install_command() -> None:
    message = requirements_message(
        [
            Missing("/usr/lib/frr/zebra", "apt-get install -y frr"),
            Missing("/usr/bin/vtysh", "apt-get install -y frr"),
            Missing("podman", "apt-get install -y podman"),
            Missing("runc", "apt-get install -y runc"),
        ]
    )
    assert message is not None
    assert "missing: /usr/lib/frr/zebra, /usr/bin/vtysh, podman, runc" in message
    assert message.splitlines()[-1] == "  apt-get install -y frr podman runc"
    assert message.count("apt-get") == 1
    assert requirements_message([]) is None


def test_requirements_message_keeps_other_fixes() -> None:
    message = requirements_message(
        [
            Missing("root", "run it as root: sudo infra lab up"),
            Missing("go", "apt-get install -y golang-go"),
        ]
    )
    assert message is not None
    assert "  run it as root: sudo infra lab up" in message
    assert "  apt-get install -y golang-go" in message


def test_load_component_names_the_missing_file() -> None:
    registry = {"routers": "infra_automation.lab.no_such_module:Routers"}
    with pytest.raises(
        LabError, match=r"'routers' is not available: infra_automation/lab/no_such_module\.py"
    ):
        load_component("routers", registry)
    with pytest.raises(LabError, match="has no class Nope"):
        load_component("x", {"x": "infra_automation.lab.base:Nope"})
    with pytest.raises(LabError, match="unknown lab component 'y'"):
        load_component("y", registry)


def test_write_atomic_sets_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "secrets.yml"
    write_atomic(target, "a: 1\n", mode=0o600)
    write_atomic(target, "a: 2\n", mode=0o600)
    assert target.read_text() == "a: 2\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["secrets.yml"]


@pytest.mark.parametrize("name", ["", "Lab", "lab-1", "a" * 11, "1lab", "la b"])
def test_bad_instance_names_are_refused(root: Path, name: str) -> None:
    with pytest.raises(LabError, match="instance name"):
        Lab(root, name)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (LabOptions(routers=1), "routers"),
        (LabOptions(routers=500), "routers"),
        (LabOptions(hosts=-1), "hosts"),
    ],
)
def test_bad_options_are_refused(root: Path, options: LabOptions, field: str) -> None:
    with pytest.raises(LabError, match=f"^{field}:"):
        Lab(root, "lab", options)


def test_instance_paths(root: Path) -> None:
    default = Lab(root)
    assert default.inventory_path == root / "inventories" / "lab"
    assert default.context.state_dir == root / ".lab" / "lab"
    assert default.context.prefixed("core") == "core"
    other = Lab(root, "bench", LabOptions(routers=50))
    assert other.inventory_path == root / ".lab" / "bench" / "inventory"
    assert other.context.prefixed("core") == "bench-core"
    assert other.context.options.routers == 50


# --- up / down / status ---------------------------------------------------------------------


def test_up_writes_generated_inventory_and_secrets(root: Path) -> None:
    lab = Lab(root, components=fakes())
    report = lab.up()
    gen = root / "inventories" / "lab" / "generated"
    data = yaml.safe_load((gen / "lab.yml").read_text())
    assert data["vcenter"] == {"host": "127.0.0.1", "port": 8989}
    assert data["hosts"]["core"]["ssh_key_file"] == str(lab.context.ssh_key)
    secrets = yaml.safe_load((gen / "secrets.yml").read_text())
    assert secrets["vcenter_password"] == "s3cret-pass"
    assert len(secrets["backup_password"]) >= 16  # the lab's own secret, made once
    lab.up()  # kept across ups
    assert yaml.safe_load((gen / "secrets.yml").read_text()) == secrets
    kept = {**secrets, "db_password_shop": "kept-by-the-dba"}  # a department's kept secret
    (gen / "secrets.yml").write_text(yaml.safe_dump(kept))
    lab.up()
    assert yaml.safe_load((gen / "secrets.yml").read_text()) == kept
    assert stat.S_IMODE((gen / "secrets.yml").stat().st_mode) == 0o600
    assert "s3cret-pass" not in (gen / "lab.yml").read_text()
    assert set(report.timings) == {"vcenter", "routers", "hosts"}
    assert not report.was_up and lab.is_up()
    key = lab.context.ssh_key
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.with_name("id_ed25519.pub").read_text().startswith("ssh-ed25519 ")
    inv = load_inventory(lab.inventory_path)  # one inventory: hand-written + generated
    assert inv.host("core").port == 2001 and inv.host("core").platform == "cisco_ios"
    assert vcenter_config(inv).port == 8989
    assert inv.secrets.get("vcenter_password") == "s3cret-pass"


def test_second_up_is_idempotent(root: Path) -> None:
    comps = fakes()
    lab = Lab(root, components=comps)
    lab.up()
    gen = root / "inventories" / "lab" / "generated" / "lab.yml"
    first, key = gen.read_text(), lab.context.ssh_key.read_text()
    report = Lab(root, components=comps).up()
    assert report.was_up
    assert gen.read_text() == first
    assert lab.context.ssh_key.read_text() == key  # the key is made once
    assert all(c.calls == ["up", "up"] for c in comps)


def test_components_start_in_parallel(root: Path) -> None:
    barrier = threading.Barrier(3, timeout=10)  # passes only if all three run at once
    Lab(root, components=fakes(barrier=barrier)).up()


def test_up_and_down_of_one_instance_serialize(root: Path) -> None:
    comps = fakes()
    labs = [Lab(root, components=comps) for _ in range(4)]
    threads = [threading.Thread(target=lab.up) for lab in labs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(c.max_active == 1 for c in comps)  # never two ups in one component at once
    assert all(c.calls == ["up"] * 4 for c in comps)


def test_options_select_components(root: Path) -> None:
    comps = fakes()
    Lab(root, options=LabOptions(vcenter=False), components=comps).up()
    assert [c.calls for c in comps] == [[], ["up"], ["up"]]


def test_failed_component_is_named_and_nothing_is_written(root: Path) -> None:
    comps = fakes()
    comps[2].fail = "podman exploded"
    lab = Lab(root, components=comps)
    with pytest.raises(LabError, match=r"(?s)did not come up.*hosts: podman exploded"):
        lab.up()
    assert not (root / "inventories" / "lab" / "generated").exists()
    assert not lab.is_up()


def test_missing_requirements_stop_before_anything_starts(root: Path) -> None:
    comps = fakes(missing=[Missing("podman", "apt-get install -y podman")])
    comps[0].missing = [Missing("go", "apt-get install -y golang-go")]
    lab = Lab(root, components=comps)
    with pytest.raises(LabError) as info:
        lab.up()
    assert "apt-get install -y golang-go podman" in str(info.value)
    assert all(c.calls == [] for c in comps)


def test_down_removes_generated_files_and_bindings(root: Path) -> None:
    comps = fakes()
    lab = Lab(root, components=comps)
    lab.up()
    bound = load_inventory(lab.inventory_path).bind_host("vm1")
    assert bound.data["bound_to"] == "debian1" and bound.port == 2201
    assert (lab.generated_dir / "bindings.json").is_file()
    lab.down()
    assert not lab.generated_dir.exists()
    assert not lab.is_up()
    assert all(c.calls == ["up", "down"] for c in comps)
    assert (root / "inventories" / "lab" / "inventory.yml").read_text() == HAND_WRITTEN.read_text()


def test_down_runs_every_component_even_if_options_exclude_it(root: Path) -> None:
    comps = fakes()
    Lab(root, components=comps).up()
    Lab(root, options=LabOptions(vcenter=False), components=comps).down()
    assert comps[0].calls == ["up", "down"]


def test_other_instance_keeps_its_inventory_under_the_state_dir(root: Path) -> None:
    lab = Lab(root, "small", LabOptions(routers=2, hosts=1, vcenter=False), components=fakes())
    lab.up()
    assert lab.inventory_path == root / ".lab" / "small" / "inventory"
    inv = load_inventory(lab.inventory_path)
    assert sorted(inv.hosts) == ["core", "debian1"]  # only what runs
    with pytest.raises(Exception, match="no 'vcenter' section"):
        _ = vcenter_config(inv)
    assert not (root / "inventories" / "lab" / "generated").exists()
    lab.down()
    assert not (lab.inventory_path / "generated").exists()


def test_status_collects_health_and_reports_broken_components(root: Path) -> None:
    comps = fakes()
    lab = Lab(root, components=comps)
    assert not lab.status().healthy
    lab.up()
    st = lab.status()
    assert st.healthy and [t.target for t in st.targets] == ["vcenter", "routers", "hosts"]

    def broken(ctx: LabContext) -> list[Health]:
        raise LabError("cannot tell")

    comps[1].status = broken  # type: ignore[method-assign]
    st = lab.status()
    assert not st.healthy
    assert st.as_dict()["targets"][1] == {
        "target": "routers",
        "healthy": False,
        "detail": "status failed: cannot tell",
    }


def test_status_of_a_missing_component_names_its_file(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(orchestrator.COMPONENTS, "routers", "infra_automation.lab.gone:Routers")
    targets = {
        t.target: t for t in Lab(root, options=LabOptions(vcenter=False, hosts=0)).status().targets
    }
    assert "infra_automation/lab/gone.py" in targets["routers"].detail


def test_router_control_is_delegated(root: Path) -> None:
    comps = fakes()
    lab = Lab(root, "r1", components=comps)
    lab.stop_router("core")
    lab.start_router("core")
    lab.restart_router("edge")
    routers = comps[1]
    assert isinstance(routers, FakeRouters)
    assert routers.router_calls == [
        ("stop", "r1", "core"),
        ("start", "r1", "core"),
        ("restart", "r1", "edge"),
    ]
    with pytest.raises(LabError, match="no stop_router"):
        Lab(root, components=[Fake("routers")]).stop_router("core")


# --- the pytest fixture's logic -------------------------------------------------------------


def test_acquire_starts_a_stopped_lab_and_release_tears_it_down(root: Path) -> None:
    comps = fakes()
    lab = Lab(root, components=comps)
    lease = lab.acquire()
    assert lease.started and lab.status().healthy
    assert lab.release(lease) == "stopped"
    assert not lab.is_up() and comps[0].calls == ["up", "down"]


def test_acquire_reuses_a_running_lab_untouched_and_never_tears_it_down(root: Path) -> None:
    comps = fakes()
    Lab(root, components=comps).up()
    lab = Lab(root, components=comps)
    lease = lab.acquire()
    assert not lease.started
    assert comps[0].calls == ["up"]  # reused, not even re-upped
    assert "did not start it" in lab.release(lease)
    assert lab.status().healthy


def test_acquire_on_a_partly_running_lab_repairs_it_but_does_not_own_it(root: Path) -> None:
    comps = fakes()
    lab = Lab(root, components=comps)
    lab.up()
    comps[1].down(lab.context)  # someone's router stopped
    lease = lab.acquire()
    assert not lease.started and lab.status().healthy
    lab.release(lease)
    assert lab.is_up()


def test_release_leaves_the_lab_to_other_live_users(root: Path) -> None:
    lab = Lab(root, components=fakes())
    lease = lab.acquire()
    users = root / ".lab" / "lab" / "users"
    (users / "1").write_text(orchestrator._start_time(1))  # PID 1 is alive: another user
    (users / "999999999").write_text("0")  # a dead user is forgotten
    assert lab.release(lease) == "left running: still used by processes 1"
    assert sorted(p.name for p in users.iterdir()) == ["1"]
    assert lab.is_up()


def test_release_keeps_the_lab_when_asked(root: Path) -> None:
    lab = Lab(root, components=fakes())
    lease = lab.acquire()
    assert "kept" in lab.release(lease, keep=True)
    assert lab.is_up()


def test_release_leaves_a_lab_that_someone_brought_up_explicitly(root: Path) -> None:
    comps = fakes()
    lab = Lab(root, components=comps)
    lease = lab.acquire()
    Lab(root, components=comps).up()  # `infra lab up` while the session runs
    assert "explicitly" in lab.release(lease)
    assert lab.is_up() and comps[0].calls == ["up", "up"]


def test_up_reports_progress_per_component(root: Path) -> None:
    comps = fakes()
    comps[0].fail = "no go"
    events: list[tuple[str, str]] = []
    with pytest.raises(LabError):
        Lab(root, components=comps).up(lambda c, e, s: events.append((c, e)))
    assert sorted(events) == sorted(
        [(c, "started") for c in ("vcenter", "routers", "hosts")]
        + [("vcenter", "failed"), ("routers", "up"), ("hosts", "up")]
    )


def test_acquire_failure_cleans_up_what_it_started_and_raises(root: Path) -> None:
    comps = fakes()
    comps[1].fail = "bgpd would not start"
    lab = Lab(root, components=comps)
    with pytest.raises(LabError, match="bgpd would not start"):
        lab.acquire()
    assert comps[0].calls == ["up", "down"]
    assert not (root / ".lab" / "lab" / "users" / str(__import__("os").getpid())).exists()


# --- the CLI (with the registry pointed at fakes) -------------------------------------------


@pytest.fixture
def fake_registry(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("fake_lab_components")
    guests = {"instance": "cli", "root": "/x", "image": "localhost/i:1", "max_guests": 3}
    made = {
        c.name: c
        for c in [
            *fakes(),
            Fake(
                "guests", inventory={"host_binding": {"kind": "lab-guests"}, "lab_guests": guests}
            ),
        ]
    }

    def factory(name: str) -> Any:
        return lambda: made[name]

    module.FakeVcenter = factory("vcenter")  # type: ignore[attr-defined]
    module.FakeRouters = factory("routers")  # type: ignore[attr-defined]
    module.FakeHosts = factory("hosts")  # type: ignore[attr-defined]
    module.FakeGuests = factory("guests")  # type: ignore[attr-defined]
    module.made = made  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_lab_components", module)
    for name, cls in (
        ("vcenter", "FakeVcenter"),
        ("routers", "FakeRouters"),
        ("hosts", "FakeHosts"),
        ("guests", "FakeGuests"),
    ):
        monkeypatch.setitem(orchestrator.COMPONENTS, name, f"fake_lab_components:{cls}")
    return module


def test_cli_up_status_down(root: Path, fake_registry: types.ModuleType) -> None:
    from infra_automation.lab.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["up", "--root", str(root), "--name", "cli", "--hosts", "1"])
    assert result.exit_code == 0, result.output
    assert "vcenter" in result.stdout and "hosts" in result.stdout
    assert (root / ".lab" / "cli" / "inventory" / "generated" / "lab.yml").is_file()

    result = runner.invoke(app, ["status", "--root", str(root), "-n", "cli", "--output", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["up"] and data["healthy"] and len(data["targets"]) == 4  # guests: the default

    result = runner.invoke(app, ["down", "--root", str(root), "-n", "cli"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["status", "--root", str(root), "-n", "cli"])
    assert result.exit_code == 1
    assert "not up" in result.stdout


def test_cli_reports_missing_packages_with_one_command(
    root: Path, fake_registry: types.ModuleType
) -> None:
    from infra_automation.lab.cli import app

    fake_registry.made["guests"].missing = [Missing("podman", "apt-get install -y podman")]
    fake_registry.made["routers"].missing = [
        Missing("/usr/lib/frr/zebra", "apt-get install -y frr")
    ]
    result = CliRunner().invoke(app, ["up", "--root", str(root)])
    assert result.exit_code == 1
    assert "apt-get install -y frr podman" in result.output
    assert not fake_registry.made["vcenter"].calls


def test_cli_refuses_a_bad_name(root: Path) -> None:
    from infra_automation.lab.cli import app

    result = CliRunner().invoke(app, ["down", "--root", str(root), "--name", "Bad;name"])
    assert result.exit_code == 1
    assert "instance name" in result.output
