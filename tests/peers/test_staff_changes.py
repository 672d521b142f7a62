"""Staff added and deactivated while callpop runs are watched and unwatched, no restart.

The whole service (``callpop.service.running``: database, call service, hub, the real
SIP transport) registers at a real Kamailio 5.6 presence server (``kamailio/presence.cfg``)
and watches the extension of the one staff member in the database (佐藤, 201). While it
runs, another process — the ``callpop user`` CLI, as an admin would — adds 田中 一郎 on
205 and later deactivates 佐藤, writing the same SQLite file. The service must notice by
itself (``sip.staff_refresh_seconds``): subscribe to 205, show 田中's presence on the board
when SIPp rings, answers and hangs up 205, end the subscription to 201 with
``Expires: 0`` (RFC 6665 §4.1.2.3), which Kamailio confirms, and, when 205 passes to
鈴木, attribute what happens on 205 to 鈴木.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from callpop.calls import StaffOnExtension
from callpop.dialogs import DialogRouter
from callpop.service import Runtime, running
from callpop.settings import Settings, load_settings
from popup_ui.messages import StaffPresence
from telephony.events import DialogNotified, SubscriptionState
from tests.processes import callpop_command, free_udp_port
from tests.waiting import wait_for

from .conftest import KAMAILIO_PASSWORD, KAMAILIO_USER, Kamailio, run_sipp
from .test_dialog_events import sipp_args

pytestmark = [pytest.mark.kamailio, pytest.mark.sipp, pytest.mark.asyncio]


def write_config(tmp_path: Path, kamailio: Kamailio) -> Path:
    config = tmp_path / "callpop.toml"
    config.write_text(
        f"""
[sip]
mode = "register"
bind_host = "127.0.0.1"
bind_port = 0
registrar_host = "{kamailio.host}"
registrar_port = {kamailio.port}
domain = "{kamailio.host}"
user = "{KAMAILIO_USER}"
password = "{KAMAILIO_PASSWORD}"
expires = 60
subscription_expires = 60
staff_refresh_seconds = 1

[database]
url = "sqlite:///{tmp_path / "callpop.db"}"
""",
        encoding="utf-8",
    )
    return config


def user(config: Path, *args: str, stdin: str = "") -> None:
    """``callpop user ARGS --config CONFIG`` in its own process; blocking."""
    result = subprocess.run(
        [*callpop_command(), "user", *args, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"callpop user {args}: {result.stdout}{result.stderr}"


def add(config: Path, login: str, name: str, extension: str) -> None:
    user(
        config,
        "add",
        login,
        "--name",
        name,
        "--extension",
        extension,
        "--password-stdin",
        stdin=f"{login}-password-1\n",
    )


def phone_call(kamailio: Kamailio, extension: str, workdir: Path) -> None:
    """``extension`` registers, rings, answers a caller and hangs up. Blocking."""
    phone_port = free_udp_port()
    registered = run_sipp(
        sipp_args(kamailio, "register_phone.xml", extension, phone_port),
        40.0,
        workdir=workdir / "reg",
    )
    assert registered.returncode == 0, f"phone {extension} did not register, see its log"
    uas_args = sipp_args(kamailio, "uas_answer_hangup.xml", extension, phone_port)[1:]
    with ThreadPoolExecutor(1) as pool:
        uas = pool.submit(run_sipp, uas_args, 40.0, workdir=workdir / "phone")
        caller = run_sipp(
            sipp_args(kamailio, "uac_call_answered.xml", extension, free_udp_port()),
            40.0,
            workdir=workdir / "caller",
        )
        phone = uas.result()
    assert caller.returncode == 0, "the caller's call failed, see its log above"
    assert phone.returncode == 0, "the phone's call failed, see its log above"


@asynccontextmanager
async def board_messages(runtime: Runtime) -> AsyncIterator[list[dict[str, object]]]:
    """Every message the hub sends a browser, decoded, from the snapshot on."""
    seen: list[dict[str, object]] = []
    subscription = await runtime.hub.subscribe()

    async def pump() -> None:
        while True:
            seen.append(json.loads(await subscription.get()))

    task = asyncio.get_running_loop().create_task(pump())
    try:
        yield seen
    finally:
        task.cancel()
        await asyncio.wait({task})
        runtime.hub.unsubscribe(subscription)


def presence_of(seen: list[dict[str, object]], extension: str) -> list[tuple[object, ...]]:
    """(staff_id, name, presence) of ``extension`` in each staff.presence, in order."""
    out = []
    for message in seen:
        if message.get("type") == "staff.presence":
            staff = message["staff"]
            assert isinstance(staff, list)
            for one in staff:
                if one["extension"] == extension:
                    out.append((one["staff_id"], one["name"], one["presence"]))
    return out


async def test_staff_added_and_deactivated_while_running(
    presence_kamailio: Kamailio, tmp_path: Path
) -> None:
    kamailio = presence_kamailio
    config = write_config(tmp_path, kamailio)
    await asyncio.to_thread(add, config, "sato", "佐藤 花子", "201")
    settings: Settings = load_settings(config)
    async with running(settings) as runtime, board_messages(runtime) as seen:
        transport = runtime.transport
        assert transport is not None
        endpoint = transport.endpoint
        await wait_for(
            lambda: endpoint.subscription_states.get("201") is SubscriptionState.ACTIVE,
            timeout=20.0,
            what="the subscription to 佐藤's 201",
        )
        assert endpoint.watched == ("201",)

        # 田中 一郎 is added by another process while the service runs.
        await asyncio.to_thread(add, config, "tanaka", "田中 一郎", "205")
        await wait_for(
            lambda: endpoint.subscription_states.get("205") is SubscriptionState.ACTIVE,
            timeout=20.0,
            what="a subscription to 205 after 田中 was added",
        )

        async def on_the_board(extension: str) -> list[StaffPresence]:
            return [s for s in (await runtime.hub.snapshot()).staff if s.extension == extension]

        (tanaka,) = await wait_for(
            lambda: on_the_board("205"), timeout=5.0, what="205 on the board's staff"
        )
        assert tanaka.name == "田中 一郎" and tanaka.staff_id is not None
        assert runtime.staff_watch is not None and runtime.staff_watch.watching == ["201", "205"]

        # 205 rings, answers and hangs up: 田中's presence follows on the board.
        await asyncio.to_thread(phone_call, kamailio, "205", tmp_path / "call-205")
        await wait_for(
            lambda: any(
                who == tanaka.staff_id and presence == "busy"
                for who, _, presence in presence_of(seen, "205")
            ),
            timeout=15.0,
            what="田中 (205) busy on the board",
        )
        await wait_for(
            lambda: presence_of(seen, "205")[-1] == (tanaka.staff_id, "田中 一郎", "idle"),
            timeout=15.0,
            what="田中 (205) idle again after the hang-up",
        )

        # 佐藤 is deactivated: 201 is unsubscribed (Expires: 0, confirmed by Kamailio)
        # and nobody is offered on it any more.
        before = transport.stats
        await asyncio.to_thread(user, config, "deactivate", "sato")
        await wait_for(
            lambda: transport.stats["unsubscribes_confirmed"] == 1,
            timeout=20.0,
            what="Kamailio confirming the Expires: 0 for 201",
        )
        assert endpoint.watched == ("205",)
        assert "201" not in endpoint.subscription_states
        assert transport.stats["watches_removed"] == 1
        assert transport.stats["subscribes_sent"] > before["subscribes_sent"]
        await wait_for(
            lambda: presence_of(seen, "201")[-1] == (None, None, "unknown"),
            timeout=5.0,
            what="201 on the board with nobody named",
        )
        assert [s.staff_id for s in await on_the_board("201")] == [None]
        # 205 is still watched and answered throughout.
        assert endpoint.subscription_states["205"] is SubscriptionState.ACTIVE
        assert transport.stats["watches_refused"] == 0

        # 205 moves to 鈴木 (added on it; 田中 deactivated): the same subscription goes
        # on, and what happens on 205 is now 鈴木's.
        sent = transport.stats["subscribes_sent"]
        await asyncio.to_thread(add, config, "suzuki", "鈴木 次郎", "205")
        await asyncio.to_thread(user, config, "deactivate", "tanaka")
        await wait_for(
            lambda: presence_of(seen, "205")[-1][1] == "鈴木 次郎",
            timeout=20.0,
            what="205 named as 鈴木's on the board",
        )
        suzuki = presence_of(seen, "205")[-1][0]
        assert suzuki not in (None, tanaka.staff_id)
        named_at = len(presence_of(seen, "205")) - 1
        await asyncio.to_thread(phone_call, kamailio, "205", tmp_path / "call-205-again")
        await wait_for(
            lambda: (suzuki, "鈴木 次郎", "busy") in presence_of(seen, "205"),
            timeout=15.0,
            what="鈴木 (205) busy on the board",
        )
        # Every change on 205 from then on (ringing, busy, idle) is 鈴木's, none nameless.
        since = presence_of(seen, "205")[named_at:]
        assert {(who, name) for who, name, _ in since} == {(suzuki, "鈴木 次郎")}, since
        assert endpoint.watched == ("205",)
        assert transport.stats["watches_removed"] == 1  # 205 was never unwatched
        assert transport.stats["subscribes_sent"] - sent <= 2  # at most a refresh


# --- without peers: who sits where, and presence as the board hears it -------------------


class _Board:
    """What DialogRouter needs of the call service, recording what reaches the board."""

    def __init__(self) -> None:
        self.presence: list[list[tuple[int | None, str, str]]] = []
        self.dialogs: list[tuple[str, int | None]] = []

    def staff_presence(self, staff: list[StaffPresence]) -> None:
        self.presence.append([(s.staff_id, s.extension, s.presence) for s in staff])

    def on_dialog(self, change: object, staff: StaffOnExtension) -> None:
        self.dialogs.append((staff.extension, staff.id))


def _body(version: int, state: str) -> bytes:
    return (
        '<?xml version="1.0"?><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
        f'version="{version}" state="full" entity="sip:205@pbx"><dialog id="d1" '
        f'direction="recipient"><state>{state}</state><remote><identity>sip:0312345678@pbx'
        "</identity></remote></dialog></dialog-info>"
    ).encode()


async def test_presence_changes_close_together_reach_the_board_as_one_message() -> None:
    board = _Board()
    tanaka = StaffOnExtension(id=7, name="田中 一郎", extension="205")
    router = DialogRouter(board, {"205": tanaka})  # type: ignore[arg-type]

    def notify(version: int, state: str) -> None:
        router.notified(
            DialogNotified(
                extension="205",
                body=_body(version, state),
                content_type="application/dialog-info+xml",
                at=0.0,
            )
        )

    notify(0, "early")
    notify(1, "confirmed")  # answered within the window: only "busy" is said
    assert board.presence == []  # not yet: changes close together are merged
    await wait_for(lambda: board.presence, timeout=5.0, what="the merged presence")
    assert board.presence == [[(7, "205", "busy")]]
    # Each dialog change still reached the call service at once, as 田中's.
    assert board.dialogs == [("205", 7), ("205", 7)]

    # 205 passes to 鈴木: the board hears it, and the next dialog is 鈴木's.
    suzuki = StaffOnExtension(id=9, name="鈴木 次郎", extension="205")
    router.seat({"205": suzuki})
    notify(2, "terminated")
    await wait_for(lambda: len(board.presence) == 2, timeout=5.0, what="鈴木 on 205")
    assert board.presence[1] == [(9, "205", "idle")]
    assert board.dialogs[-1] == ("205", 9)
    # No longer watched: once more, as unknown with nobody named.
    router.seat({}, unwatched=["205"])
    await wait_for(lambda: len(board.presence) == 3, timeout=5.0, what="205 unwatched")
    assert board.presence[2] == [(None, "205", "unknown")]
    router.close()
