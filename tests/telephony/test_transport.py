"""The asyncio side of telephony: the advertised address, and where I/O may live at all."""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest

import telephony
from telephony.transport import advertised_host

PACKAGE = Path(telephony.__file__).parent


def test_public_host_wins_over_everything() -> None:
    assert (
        advertised_host(
            public_host="sip.office.example",
            bind_host="0.0.0.0",
            mode="register",
            registrar_host="127.0.0.1",
            registrar_port=5060,
        )
        == "sip.office.example"
    )


@pytest.mark.parametrize("mode", ["register", "trunk"])
def test_a_specific_bind_host_is_kept(mode: str) -> None:
    assert (
        advertised_host(
            public_host="",
            bind_host="192.0.2.1",
            mode=mode,
            registrar_host="127.0.0.1",
            registrar_port=5060,
        )
        == "192.0.2.1"
    )


@pytest.mark.parametrize("bind_host", ["0.0.0.0", ""])
def test_wildcard_bind_in_register_mode_is_the_route_to_the_registrar(bind_host: str) -> None:
    # The UDP connect sends nothing; the kernel's route to 127.0.0.1 leaves from 127.0.0.1.
    assert (
        advertised_host(
            public_host="",
            bind_host=bind_host,
            mode="register",
            registrar_host="127.0.0.1",
            registrar_port=5060,
        )
        == "127.0.0.1"
    )


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) on this host")
def test_wildcard_ipv6_bind_routes_over_ipv6() -> None:
    assert (
        advertised_host(
            public_host="",
            bind_host="::",
            mode="register",
            registrar_host="::1",
            registrar_port=5060,
        )
        == "::1"
    )


def test_wildcard_bind_in_trunk_mode_has_no_registrar_to_ask() -> None:
    assert (
        advertised_host(
            public_host="",
            bind_host="0.0.0.0",
            mode="trunk",
            registrar_host="127.0.0.1",
            registrar_port=5060,
        )
        == "0.0.0.0"
    )


# --- layout: sans-I/O everywhere but transport.py ----------------------------------------


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.glob("*.py")), ids=lambda path: path.name.removesuffix(".py")
)
def test_only_transport_imports_asyncio_or_socket(path: Path) -> None:
    io_modules = _imported_modules(path) & {"asyncio", "socket", "selectors", "time"}
    if path.name == "transport.py":
        assert {"asyncio", "socket"} <= io_modules
    else:
        assert io_modules == set()


def _assigned_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        names.update(target.id for target in targets if isinstance(target, ast.Name))
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
    return names


@pytest.mark.parametrize(
    ("name", "home"),
    [
        ("T1", "timers.py"),
        ("T2", "timers.py"),
        ("T4", "timers.py"),
        ("TIMER_F", "timers.py"),
        ("TIMER_H", "timers.py"),
        ("TIMER_J", "timers.py"),
        ("hostport", "uri.py"),
        ("_hostport", None),
    ],
)
def test_each_timer_and_the_hostport_formatter_are_defined_once(
    name: str, home: str | None
) -> None:
    defined_in = [path.name for path in PACKAGE.glob("*.py") if name in _assigned_names(path)]
    assert defined_in == ([home] if home else [])
