"""Filters of the firewall role: CIDR validation and membership, with the standard library
(``ipaddress``), so that no value reaches the nftables template unchecked."""

from __future__ import annotations

import ipaddress
from typing import Any

from ansible.errors import AnsibleFilterError


def firewall_cidrs(values: Any, field: str = "firewall_mgmt_ranges") -> list[str]:
    """Each value as a normalized IPv4 network (``10.0.0.5`` -> ``10.0.0.5/32``); anything
    else (a newline, a brace, a word) fails naming ``field``."""
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise AnsibleFilterError(f"{field}: a list of IPv4 networks, got {values!r}")
    out: list[str] = []
    for value in values:
        try:
            network = ipaddress.IPv4Network(str(value), strict=False)
        except ValueError as exc:
            raise AnsibleFilterError(f"{field}: {value!r} is not an IPv4 network") from exc
        if str(value).strip() != str(value) or not str(value):
            raise AnsibleFilterError(f"{field}: {value!r} is not an IPv4 network")
        out.append(str(network))
    return out


def firewall_admits(address: str, networks: list[str]) -> bool:
    """Whether ``address`` is in one of ``networks``."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.IPv4Network(n) for n in networks)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"firewall_cidrs": firewall_cidrs, "firewall_admits": firewall_admits}
