"""``infra verify`` of the firewall steps (``os.playbook`` with ``playbooks/firewall.yml``): the
host's nftables table holds the rules the run read back; a table deleted or flushed on the host
is drift. The SSH reading is parsed here from what the host prints; the lab test reads a real
host (tests/integration/test_security_lab.py)."""

from __future__ import annotations

from infra_automation.verify import SyncState
from infra_automation.verify_os import (
    SECTION,
    check_firewall,
    firewall_rules,
    firewall_table,
    parse_state,
)

RULES = [
    'iif "lo" accept',
    "ct state established,related accept",
    "tcp dport 22 ip saddr @mgmt accept",
    "tcp dport 80 accept",
    "meta l4proto tcp reject with tcp reset",
]
RECORDED = {"table": "inet infra_firewall", "present": True, "profile": "web", "rules": RULES}
LISTING = (
    "table inet infra_firewall {\n\tchain input {\n"
    "\t\ttype filter hook input priority filter; policy drop;\n"
    + "".join(f"\t\t{rule}\n" for rule in RULES)
    + "\t}\n}\n"
)
FLUSHED = (
    "table inet infra_firewall {\n\tchain input {\n"
    "\t\ttype filter hook input priority filter; policy drop;\n\t}\n}\n"
)


def state(firewall: str, *, failed: bool = False) -> str:
    out = f"{SECTION}services\n [ + ]  ssh\n{SECTION}cron\n{SECTION}firewall\n{firewall}"
    return out + (f"{SECTION}firewall-failed\n" if failed else "")


def test_the_recorded_table_is_what_is_verified() -> None:
    assert firewall_table(RECORDED) == "infra_firewall"
    assert firewall_table({**RECORDED, "present": False}) is None  # removed (decommission)
    assert firewall_table({"table": "inet x; reboot", "present": True}) is None  # never a shell
    assert firewall_table({"table": "ip infra_firewall", "present": True}) is None
    assert firewall_table(None) is None  # a step of another playbook


def test_rules_are_read_as_the_role_reads_them_back() -> None:
    assert list(firewall_rules(LISTING)) == RULES


def test_the_loaded_rules_are_in_sync() -> None:
    check = check_firewall("infra_firewall", RECORDED, parse_state(state(LISTING)), "web-01")
    assert check.state is SyncState.IN_SYNC and check.resource == "firewall inet infra_firewall"


def test_a_deleted_table_is_drift() -> None:
    gone = "Error: No such file or directory\nlist chain inet infra_firewall input\n"
    host = parse_state(state(gone, failed=True))
    assert host.firewall is None and host.services == {"ssh": "running"}
    check = check_firewall("infra_firewall", RECORDED, host, "web-01")
    assert check.state is SyncState.DRIFTED and check.found == "(no table inet infra_firewall)"
    assert "+(no table inet infra_firewall)" in check.diff


def test_a_flushed_table_is_drift() -> None:
    check = check_firewall("infra_firewall", RECORDED, parse_state(state(FLUSHED)), "web-01")
    assert check.state is SyncState.DRIFTED and "flushed" in check.found
    assert "-tcp dport 80 accept" in check.diff


def test_a_changed_rule_is_drift() -> None:
    changed = LISTING.replace("tcp dport 80 accept", "tcp dport 8080 accept")
    check = check_firewall("infra_firewall", RECORDED, parse_state(state(changed)), "web-01")
    assert check.state is SyncState.DRIFTED and "+tcp dport 8080 accept" in check.diff


def test_nft_failing_otherwise_is_unverifiable_not_drift() -> None:
    denied = "netlink: Error: cache initialization failed: Operation not permitted\n"
    check = check_firewall(
        "infra_firewall", RECORDED, parse_state(state(denied, failed=True)), "web-01"
    )
    assert check.state is SyncState.UNVERIFIABLE and "Operation not permitted" in check.reason


def test_a_host_that_printed_no_firewall_section_has_no_reading() -> None:
    host = parse_state(f"{SECTION}services\n [ - ]  nginx\n")
    assert host.firewall is None and host.firewall_error == ""
