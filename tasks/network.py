"""Nornir tasks for network configuration changes, over nornir-netmiko connections.

Plain Nornir tasks: usable with any Nornir object, outside infra-automation too::

    nr.run(task=apply_config, intended={"core": "...", "edge": "..."}, check=False)

The change cycle of :func:`apply_config` on one device:

1. read the running config (kept as the pre-change snapshot);
2. diff the intended lines against it (hierarchy-aware, via netutils) — check mode stops here;
3. push with ``error_pattern=r"^%"`` (a rejected line raises), verify that every intended line
   is in the running config, ``write memory`` and check its output (it never raises);
4. on ANY failure in 3: restore the snapshot (remove what was added, re-add what went
   missing), verify that the running config equals the snapshot again, and report both.

Configs are IOS-like text (FRR's vtysh, IOS, EOS...): ``exit``/``!``/``end`` lines are
navigation, not config, and are ignored when comparing.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netutils.config.compliance import diff_network_config
from netutils.config.parser import IOSConfigParser
from nornir.core.task import Result, Task

CONNECTION = "netmiko"
ERROR_PATTERN = r"^%"
NAVIGATION = frozenset({"!", "exit", "exit-address-family", "end", "exit-vrf", "quit"})
BANNER = re.compile(
    r"^(Building configuration\.\.\.|Current configuration.*|frr version .*|"
    r"Note: this version of vtysh never writes vtysh\.conf)$"
)
SAVE_OK = re.compile(r"\[OK\]|Integrated configuration saved|Copy completed", re.I)
SAVE_FAIL = re.compile(r"^%|^.*(error|failed|denied).*$", re.I | re.M)


# --- pure config helpers -----------------------------------------------------------------


def clean(text: str) -> str:
    """Config lines only: no navigation (exit, !, end), banners or blank lines; runs of spaces
    inside a line collapsed as the device does (``description a  b`` reads back ``a b``)."""
    kept = []
    for line in text.replace("\r\n", "\n").splitlines():
        stripped = line.strip()
        if not stripped or stripped in NAVIGATION or BANNER.match(stripped):
            continue
        if stripped.startswith("!"):
            continue
        indent = line[: len(line) - len(line.lstrip())]
        kept.append(indent + " ".join(stripped.split()))  # devices collapse inner spaces too
    return "\n".join(kept) + ("\n" if kept else "")


def missing(intended: str, running: str, platform: str = "cisco_ios") -> str:
    """Lines of ``intended`` (with their parents) that ``running`` lacks."""
    want = clean(intended)
    if not want:
        return ""
    return clean(diff_network_config(want, clean(running), platform))


@dataclass(frozen=True)
class Line:
    parents: tuple[str, ...]
    line: str

    @property
    def command(self) -> str:
        return self.line.strip()


def parse(text: str) -> list[Line]:
    """Each config line with its parents (netutils' IOS parser on the cleaned text)."""
    cleaned = clean(text)
    if not cleaned:
        return []
    return [
        Line(tuple(p.strip() for p in item.parents), item.config_line)
        for item in IOSConfigParser(cleaned).build_config_relationship()
    ]


def _headers(lines: Iterable[Line]) -> set[tuple[str, ...]]:
    """Every block path that has children: ('router bgp 1',), ('router bgp 1', 'address-...')."""
    out: set[tuple[str, ...]] = set()
    for item in lines:
        for depth in range(1, len(item.parents) + 1):
            out.add(item.parents[:depth])
    return out


def removal_commands(remove: str, remaining: str) -> list[str]:
    """Commands that delete the lines of ``remove`` while ``remaining`` stays configured.

    A top-level block that has nothing left in ``remaining`` goes as a whole
    (``no interface vlan100``); otherwise each of its leaves is negated inside its parents
    (``router bgp 1`` / ``address-family ipv4 unicast`` / ``no network ...``).
    """
    gone = parse(remove)
    gone_headers = _headers(gone)
    keep = parse(remaining)
    kept = _headers(keep) | {(k.command,) for k in keep if not k.parents}
    whole = sorted(
        (i.command,) for i in gone if (i.command,) in gone_headers - kept and not i.parents
    )
    commands = [negate(path[0]) for path in whole]
    for item in gone:
        path = (*item.parents, item.command)
        if path[:1] in whole or path in gone_headers:
            continue  # removed with its block, or a header whose leaves are negated
        commands += [*item.parents, negate(item.command), *(["exit"] * len(item.parents))]
    return commands


def negate(command: str) -> str:
    """``no x`` for ``x``; ``x`` for ``no x`` (a default turned off is turned back on)."""
    return command[3:] if command.startswith("no ") else f"no {command}"


def add_commands(add: str) -> list[str]:
    """Commands that (re)configure the lines of ``add``, with explicit ``exit`` navigation."""
    commands: list[str] = []
    headers = _headers(parse(add))
    for item in parse(add):
        path = (*item.parents, item.command)
        if path in headers:
            continue
        commands += [*item.parents, item.command, *(["exit"] * len(item.parents))]
    return commands


def as_commands(config: str) -> list[str]:
    """A rendered config as the command list to send (navigation lines kept, blanks dropped)."""
    return [line.strip() for line in config.splitlines() if line.strip() and line.strip() != "!"]


def plus_minus(lines: str, sign: str, reference: str = "") -> str:
    """A readable diff: ``sign`` before each changed line; parent blocks that exist in
    ``reference`` (the running config) are shown as context, without a sign."""
    out: list[str] = []
    headers = _headers(parse(lines))
    existing = {(*i.parents, i.command) for i in parse(reference)}
    for item in parse(lines):
        path = (*item.parents, item.command)
        mark = " " if path in headers and path in existing else sign
        out.append(f"{mark} {item.line}")
    return "\n".join(out) + ("\n" if out else "")


# --- device access --------------------------------------------------------------------------


def connection(task: Task) -> Any:
    """The host's netmiko connection (opened once, reopened if it died)."""
    host = task.host
    conn = host.get_connection(CONNECTION, task.nornir.config)
    if not conn.is_alive():
        host.close_connection(CONNECTION)
        conn = host.get_connection(CONNECTION, task.nornir.config)
    return conn


def read_running(task: Task) -> str:
    return show(connection(task), "show running-config")


def show(conn: Any, command: str) -> str:
    """A show command's output, read up to the device's prompt.

    The prompt is the one netmiko learnt at login, matched as a line of its own
    (:func:`prompt_pattern`): netmiko's default asks the device for its prompt again before
    every command, a round trip of its own (0.05 of a 0.08 s read on the lab's routers).
    """
    pattern = prompt_pattern(str(conn.base_prompt))
    return str(conn.send_command(command, expect_string=pattern, read_timeout=60))


def prompt_pattern(base_prompt: str) -> str:
    """The device's prompt as a whole line: ``core#``, ``core>``, ``core(config-if)#``.

    Anchored, unlike netmiko's default search for the prompt anywhere in the output: a
    running config that names the host (``hostname core``) does not end the read early.
    The base prompt may be the hostname's start only (netmiko cuts IOS's at 16 characters,
    as IOS does in config mode): the rest of the name may follow it.
    """
    return rf"(?m)^{re.escape(base_prompt)}[^\s>#()]*(\([^)\n]*\))?[>#]\s*$"


def send_config(task: Task, commands: Sequence[str]) -> str:
    """Push commands; a line the device rejects (``%`` output) raises netmiko's error."""
    if not commands:
        return ""
    conn = connection(task)
    try:
        return str(
            conn.send_config_set(list(commands), error_pattern=ERROR_PATTERN, read_timeout=60)
        )
    except Exception:
        if conn.check_config_mode():  # a rejected line leaves us in config mode
            conn.exit_config_mode()
        raise


def save(task: Task) -> str:
    """``write memory``; raises RuntimeError unless the output says it worked."""
    output = str(connection(task).save_config())
    if not save_ok(output):
        raise RuntimeError(f"saving the config failed: {output.strip()[-300:]}")
    return output


def save_ok(output: str) -> bool:
    """netmiko's save_config never raises: the device's answer tells success from failure."""
    return bool(SAVE_OK.search(output)) and not SAVE_FAIL.search(output)


# --- Nornir tasks --------------------------------------------------------------------------


def get_running_config(task: Task) -> Result:
    return Result(host=task.host, result=read_running(task))


def config_diff(task: Task, intended: str, running: str | None = None) -> Result:
    """What ``intended`` would add (``+`` lines); changed when anything is missing."""
    current = read_running(task) if running is None else running
    add = missing(intended, current, _platform(task))
    diff = plus_minus(add, "+", current)
    return Result(host=task.host, result=diff, changed=bool(add), diff=diff)


def push_config(task: Task, config: str) -> Result:
    output = send_config(task, as_commands(config))
    return Result(host=task.host, result=output, changed=True)


def verify_config(task: Task, intended: str) -> Result:
    """Fails when any intended line is not in the running config."""
    absent = missing(intended, read_running(task), _platform(task))
    return Result(host=task.host, result=absent, failed=bool(absent))


def save_config(task: Task) -> Result:
    return Result(host=task.host, result=save(task))


def rollback_config(task: Task, before: str) -> Result:
    """Return the running config to ``before``; fails unless it matches afterwards."""
    restore(task, before)
    return Result(host=task.host, result="restored", changed=True)


def restore(task: Task, before: str) -> None:
    """Undo everything that differs from ``before``; RuntimeError if the result differs."""
    platform = _platform(task)
    now = read_running(task)
    added = missing(now, before, platform)
    lost = missing(before, now, platform)
    send_config(task, removal_commands(added, before) + add_commands(lost))
    after = read_running(task)
    if clean(after) != clean(before):
        left = plus_minus(missing(after, before, platform), "+", before)
        left += plus_minus(missing(before, after, platform), "-", after)
        raise RuntimeError(f"rollback incomplete, running config still differs:\n{left}")


def bgp_prefix_learned(task: Task, prefix: str, wait: float = 0.0) -> Result:
    """Whether ``prefix`` is in the BGP table with a valid path (polls up to ``wait`` s)."""
    deadline = time.monotonic() + wait
    conn = connection(task)
    while True:
        out = show(conn, f"show ip bgp {prefix} json")
        learned = _has_valid_path(out)
        if learned or time.monotonic() >= deadline:
            return Result(host=task.host, result=learned)
        time.sleep(0.5)


def _has_valid_path(output: str) -> bool:
    try:
        data = json.loads(output[output.find("{") :] if "{" in output else "{}")
    except json.JSONDecodeError:
        return False
    paths = data.get("paths", []) if isinstance(data, dict) else []
    return any(isinstance(p, Mapping) and p.get("valid") for p in paths)


def apply_config(
    task: Task,
    intended: Mapping[str, str],
    check: bool = False,
    save_after: bool = True,
) -> Result:
    """The whole change cycle on one device (see module docstring).

    ``result`` is a dict: ``changed``, ``diff``, ``lines_present`` (read back after the
    change), ``rolled_back``, ``error``. Connection failures raise (Nornir marks the host
    failed); device-side failures are rolled back and reported with ``failed=True``.
    """
    config = intended.get(task.host.name, "")
    platform = _platform(task)
    before = read_running(task)
    add = missing(config, before, platform)
    outcome = _outcome(plus_minus(add, "+", before), changed=bool(add), present=not add)
    if check or not add:
        return Result(host=task.host, result=outcome, changed=bool(add), diff=outcome["diff"])

    def verify(after: str) -> str | None:
        absent = missing(config, after, platform)
        return f"lines missing after the push:\n{absent}" if absent else None

    commands = as_commands(config)
    return _change(task, outcome, before, commands, verify, save_after, present_after=True)


def remove_config(
    task: Task,
    intended: Mapping[str, str],
    check: bool = False,
    save_after: bool = True,
) -> Result:
    """Remove the lines of ``intended[host]`` that are configured (decommission)."""
    config = intended.get(task.host.name, "")
    before = read_running(task)
    present = present_lines(config, before)
    diff = plus_minus(present, "-", _subtract(before, present))
    outcome = _outcome(diff, changed=bool(present), present=bool(present))
    if check or not present:
        return Result(host=task.host, result=outcome, changed=bool(present), diff=outcome["diff"])

    def verify(after: str) -> str | None:
        left = present_lines(config, after)
        return f"lines still present after the removal:\n{left}" if left else None

    commands = removal_commands(present, _subtract(before, present))
    return _change(task, outcome, before, commands, verify, save_after, present_after=False)


def present_lines(config: str, running: str) -> str:
    """The leaves of ``config`` that ``running`` has, with their parents (hierarchical text)."""
    have = {(i.parents, i.command) for i in parse(running)}
    items = parse(config)
    headers = _headers(items)
    leaves = [i for i in items if (*i.parents, i.command) not in headers]
    kept = [i for i in leaves if (i.parents, i.command) in have]
    out: list[str] = []
    shown: tuple[str, ...] = ()
    for item in kept:
        for depth, parent in enumerate(item.parents):
            if shown[: depth + 1] != item.parents[: depth + 1]:
                out.append(" " * depth + parent)
        shown = item.parents
        out.append(" " * len(item.parents) + item.command)
    return "\n".join(out) + ("\n" if out else "")


def _outcome(diff: str, *, changed: bool, present: bool) -> dict[str, Any]:
    return {
        "changed": changed,
        "diff": diff,
        "lines_present": present,
        "rolled_back": False,
        "error": None,
    }


def _change(
    task: Task,
    outcome: dict[str, Any],
    before: str,
    commands: Sequence[str],
    verify: Callable[[str], str | None],
    save_after: bool,
    present_after: bool,
) -> Result:
    """Push, verify, save; on any failure restore ``before`` and verify the restore."""
    stage = "push"
    try:
        send_config(task, commands)
        stage = "verify"
        problem = verify(read_running(task))
        if problem:
            raise RuntimeError(problem)
        if save_after:
            stage = "save"
            save(task)
    except Exception as exc:  # any failure: restore the snapshot, then report both
        outcome.update(changed=False, error=f"{stage} failed: {_message(exc)}")
        try:  # the saved config was not written (or not completely): no save after this
            restore(task, before)
            outcome["rolled_back"] = True
        except Exception as rollback_exc:
            outcome["error"] += f"; ROLLBACK FAILED: {_message(rollback_exc)}"
        outcome["lines_present"] = not present_after
        return Result(host=task.host, result=outcome, failed=True, changed=False)
    outcome["lines_present"] = present_after
    return Result(host=task.host, result=outcome, changed=True, diff=outcome["diff"])


def _subtract(config: str, lines: str) -> str:
    """``config`` without the leaves of ``lines`` (what remains after a removal)."""
    gone = parse(lines)
    gone_headers = _headers(gone)
    drop = {(i.parents, i.command) for i in gone if (*i.parents, i.command) not in gone_headers}
    kept = [i for i in parse(config) if (i.parents, i.command) not in drop]
    emptied = _headers(gone) - _headers(kept)  # blocks whose every child was removed
    kept = [i for i in kept if (*i.parents, i.command) not in emptied]
    return "\n".join(i.line for i in kept) + ("\n" if kept else "")


def _platform(task: Task) -> str:
    return str(task.host.platform or "cisco_ios")


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())[:500]


def config_lines(task: Task, prefixes: Sequence[str]) -> Result:
    """The running config's top-level lines that start with one of ``prefixes`` (a read-back
    of access-lists, prefix-lists...), in the device's order."""
    running = clean(read_running(task)).splitlines()
    lines = [line for line in running if line.startswith(tuple(prefixes))]
    return Result(host=task.host, result=lines)
