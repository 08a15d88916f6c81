"""The lab's guests option in the orchestrator and the CLI, with fake components: guests are
``infra lab up``'s default (no pool hosts), ``--no-guests`` the fixed pool; the guests
component starts and is recorded; a repair by ``acquire`` (a fixture's, which asks only for
routers and hosts) keeps it, so running projects' guests are never stranded; an explicit
``up`` without it switches it off."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_lab_orchestrator import Fake, fakes

from infra_automation.exceptions import LabError
from infra_automation.lab.base import LabOptions
from infra_automation.lab.orchestrator import Lab, validate_options

HAND_WRITTEN = Path(__file__).resolve().parents[2] / "inventories" / "lab" / "inventory.yml"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    inv = tmp_path / "inventories" / "lab"
    inv.mkdir(parents=True)
    (inv / "inventory.yml").write_text(HAND_WRITTEN.read_text())
    return tmp_path


def components() -> list[Fake]:
    return [*fakes(), Fake("guests", inventory={"host_binding": {"kind": "lab-guests"}})]


def binding(lab: Lab) -> str:
    generated = yaml.safe_load((lab.generated_dir / "lab.yml").read_text())
    return str((generated.get("host_binding") or {}).get("kind", "from inventory.yml"))


def recorded(lab: Lab) -> LabOptions:
    return Lab(lab.root, lab.name).options


def test_acquire_repairs_a_guests_lab_with_its_guests(root: Path) -> None:
    comps = components()
    Lab(root, "gq", LabOptions(guests=True, max_guests=5), components=comps).up()
    lab = Lab(root, "gq", LabOptions(routers=2, hosts=3), components=comps)
    assert binding(lab) == "lab-guests"
    comps[2].down(lab.context)  # a host container died: the fixture's acquire repairs the lab
    lab.acquire()
    assert lab.status().healthy
    assert binding(lab) == "lab-guests"  # the binding is kept: the guests still serve VMs
    assert (recorded(lab).guests, recorded(lab).max_guests) == (True, 5)


def test_an_explicit_up_without_guests_switches_them_off(root: Path) -> None:
    comps = components()
    Lab(root, "gq", LabOptions(guests=True), components=comps).up()
    lab = Lab(root, "gq", LabOptions(), components=comps)
    lab.up()
    assert binding(lab) == "from inventory.yml" and recorded(lab).guests is False
    assert comps[3].calls == ["up"]  # the guests component ran for the first up only


def test_max_guests_needs_guests_and_a_sane_number() -> None:
    with pytest.raises(LabError, match="max_guests: only with guests"):
        validate_options(LabOptions(max_guests=3))
    with pytest.raises(LabError, match="max_guests: 501 is invalid"):
        validate_options(LabOptions(guests=True, max_guests=501))


# --- `infra lab up` defaults to guests; `--no-guests` is the fixed pool ----------------------

GUESTS_SECTION = {"instance": "lab", "root": "/x", "image": "localhost/i:1", "max_guests": 7}


def cli_up(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[Lab, str, int]:
    """``infra lab up ARGS`` on fake components; the lab it made, its output, its exit code."""
    from typer.testing import CliRunner

    from infra_automation.lab import cli

    comps = [
        *fakes(),
        Fake(
            "guests",
            inventory={"host_binding": {"kind": "lab-guests"}, "lab_guests": GUESTS_SECTION},
        ),
    ]
    made: list[Lab] = []

    def lab(where: Path, name: str, options: LabOptions | None = None) -> Lab:
        made.append(Lab(where, name, options, components=comps, check_privileges=False))
        return made[-1]

    monkeypatch.setattr(cli, "Lab", lab)
    result = CliRunner().invoke(cli.app, ["up", "--root", str(root), *args])
    return (made[-1] if made else Lab(root)), result.output, result.exit_code


def test_up_gives_guests_and_no_pool_hosts_by_default(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab, output, code = cli_up(root, monkeypatch)
    assert code == 0, output
    options = recorded(lab)
    assert (options.guests, options.hosts, options.max_guests) == (True, 0, None)
    assert binding(lab) == "lab-guests"
    assert not (lab.state_dir / "hosts" / "running").exists()  # no pool host started
    assert "its own guest container when first bound, at most 7" in " ".join(output.split())


def test_up_no_guests_is_the_fixed_pool_of_three(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab, output, code = cli_up(root, monkeypatch, "--no-guests")
    assert code == 0, output
    options = recorded(lab)
    assert (options.guests, options.hosts) == (False, 3)
    assert binding(lab) == "from inventory.yml"
    # the pool is what runs: the fake hosts component makes one host (debian1, in vm-pool)
    assert "fixed pool of 1 hosts of group 'vm-pool'" in " ".join(output.split())


@pytest.mark.parametrize(
    ("args", "guests", "hosts"),
    [
        (["--no-vcenter"], False, 3),
        (["--hosts", "2"], True, 2),
        (["--no-guests", "--hosts", "5"], False, 5),
    ],
)
def test_up_hosts_follow_the_binding_unless_given(
    root: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], guests: bool, hosts: int
) -> None:
    lab, output, code = cli_up(root, monkeypatch, *args)
    assert code == 0, output
    assert (recorded(lab).guests, recorded(lab).hosts) == (guests, hosts)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--no-guests", "--max-guests", "3"], "--max-guests: only with guests"),
        (["--hosts", "51"], "--hosts: 51 is not in 0..50"),
    ],
)
def test_up_refuses_bad_options_with_exit_2(
    root: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    _lab, output, code = cli_up(root, monkeypatch, *args)
    assert code == 2 and message in output, output
    assert not (root / ".lab").exists()  # refused before anything


def test_status_shows_the_guests_and_their_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guests component's status: a line for the binding (unhealthy until an ``up``,
    again after ``down``), then one per guest."""
    from infra_automation.lab import guests
    from infra_automation.lab.base import LabContext

    for name in ("ensure_image", "ensure_network", "ensure_ssh_key"):
        monkeypatch.setattr(guests, name, lambda *a, **k: "localhost/infra-lab-debian:t")
    removed: list[list[str]] = []
    monkeypatch.setattr(guests, "guest_containers", lambda ctx: ["ut-guest-a-web-01"])
    monkeypatch.setattr(guests, "remove_containers", lambda ctx, names: removed.append(names))
    monkeypatch.setattr(guests, "ssh_banner", lambda port: port == 4022)
    ctx = LabContext(
        "ut", tmp_path, tmp_path / ".lab" / "ut", LabOptions(guests=True, max_guests=4)
    )
    component = guests.LabGuests()
    assert [(h.target, h.healthy) for h in component.status(ctx)] == [("guests", False)]
    component.up(ctx)
    with guests.GuestStore(guests.store_file(ctx)).transaction(write=True) as table:
        table["a-web-01"] = {"container": "ut-guest-a-web-01", "ssh": 4022, "http": 4080}
        table["a-web-02"] = {"container": "ut-guest-a-web-02"}
    rows = component.status(ctx)
    assert [(h.target, h.healthy) for h in rows] == [
        ("guests", True),
        ("guest a-web-01", True),
        ("guest a-web-02", False),
    ]
    assert rows[0].detail == "2 of at most 4 (lab_guests.max_guests)"
    component.down(ctx)
    assert removed == [["ut-guest-a-web-01"]]
    assert [(h.target, h.healthy) for h in component.status(ctx)] == [("guests", False)]
