"""Who answered, from a real PBX's dialog events: ring-all, two calls at once, the
transfer to the 担当者, and a caller giving up versus a phone answering.

The office is the browser tier's (``tests/browser/sip_office.py``): ``callpop serve`` in
register mode on the demo data, watching every staff extension over RFC 4235 dialog
presence, SIPp desk phones 203 (佐藤 健) and 204 (鈴木 美咲) that register, ring, answer
(200/ACK) and take the caller's BYE, and SIPp outside callers with demo customers'
numbers that hang up (or give up) when the test sends them an INFO. No browser: a
logged-in WebSocket + HTTP client (``tests/e2e/clients.py``) reads the board messages and
the call log (``GET /api/calls``).

Kamailio runs ``tests/peers/kamailio/office.cfg`` with two more ring groups (the config
is derived in the work directory, see :func:`who_answered_cfg`):

* ``100`` (office.cfg's own): callpop and 203.
* ``101``: callpop and 204.
* ``102``: callpop, 203 and 204, ring-all.

In ``101`` and ``102`` each phone's branch spirals back through Kamailio once, so each
phone has a dialog of its own and pua_dialoginfo publishes its state on that phone's
entity, as a PBX's ring group shows each member's own BLF state. (Published straight
from the group's dialog, every member would show the same state: "204 answered" would
also read "203 answered".)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from db.demo import DEMO_ACCOUNTS
from tests.browser.sip_office import OFFICE_CFG, Caller, Office, Sipp, running_office
from tests.e2e.clients import staff_browser
from tests.waiting import wait_for

pytestmark = [pytest.mark.kamailio, pytest.mark.sipp, pytest.mark.asyncio]

YAMADA = ("0312345678", "+81312345678", "山田 太郎")  # 担当 佐藤 健
KOBAYASHI = ("09022223333", "+819022223333", "小林 さくら")  # 担当 鈴木 美咲
ITO = ("0482345678", "+81482345678", "伊藤 修")  # 担当 佐藤 健
SATO = ("佐藤 健", "203")
SUZUKI = ("鈴木 美咲", "204")
GROUP_203 = "100"  # callpop and 203 (office.cfg)
GROUP_204 = "101"  # callpop and 204
GROUP_ALL = "102"  # callpop, 203 and 204
ANSWER_AFTER_MS = 1500  # a desk phone rings this long, then picks up
EVENT_TIMEOUT = 45.0  # seconds for what the PBX does to reach the board on a busy box
TOLD_TIMEOUT = 10.0  # after telling a caller to hang up, before telling it again

_SPIRAL_GROUPS = """
route[SPIRAL_GROUP] {
	# callpop, and each member phone through a spiral back to this proxy, so that each
	# phone's call is a dialog of its own with its own published state.
	$avp(pub_callee) = "sip:" + $rU + "@" + $rd;
	$var(self) = "@" + $Ri + ":" + $Rp;
	if ($rU == "102") {
		append_branch("sip:203" + $var(self));
	}
	append_branch("sip:204" + $var(self));
	$ru = "sip:" + MEMBER + "@" + $rd;
	if (!lookup("location")) {
		sl_send_reply("404", "Not Found");
		exit;
	}
}
"""


def who_answered_cfg(directory: Path) -> Path:
    """office.cfg plus the ring groups 101 and 102 (module docstring), in ``directory``."""
    text = OFFICE_CFG.read_text(encoding="utf-8")
    edits = [
        # Each spiralled INVITE is a dialog of its own, not the group's dialog again.
        (
            'modparam("dialog", "default_timeout", 3600)\n',
            'modparam("dialog", "default_timeout", 3600)\n'
            'modparam("dialog", "detect_spirals", 0)\n',
        ),
        (
            "\t\tif ($rU == RING_GROUP) {\n",
            '\t\tif ($rU == "101" || $rU == "102") {\n'
            "\t\t\troute(SPIRAL_GROUP);\n"
            "\t\t\troute(RELAY);\n"
            "\t\t}\n"
            "\t\tif ($rU == RING_GROUP) {\n",
        ),
    ]
    for old, new in edits:
        assert text.count(old) == 1, f"office.cfg changed: {old!r} is not there once"
        text = text.replace(old, new)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "who_answered.cfg"
    path.write_text(text + _SPIRAL_GROUPS, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Office]:
    workdir = tmp_path_factory.mktemp("who-answered")
    with running_office(workdir, config=who_answered_cfg(workdir)) as running:
        yield running


@pytest.fixture
def watch_office(office: Office, request: pytest.FixtureRequest) -> Iterator[Office]:
    """The office, with callpop's, Kamailio's and SIPp's logs printed if the test fails."""
    yield office
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(office.report())
    office.stop_sipps()  # a failed test's phones and callers do not ring into the next


class Board:
    """Every message one logged-in browser got, read in the background."""

    LIMIT = 2000  # messages kept; a test sees far fewer

    def __init__(self, ws: ClientConnection) -> None:
        self.messages: list[dict[str, Any]] = []
        self._ws = ws
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self._ws:
                if len(self.messages) >= self.LIMIT:
                    return  # until() then fails: the board sent far too many messages
                self.messages.append(json.loads(raw))
                self._arrived.set()

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    def of(self, call_id: str) -> list[dict[str, Any]]:
        """The call messages about ``call_id``, in order (type, call)."""
        return [
            m
            for m in self.messages
            if isinstance(m.get("call"), dict) and m["call"]["id"] == call_id
        ]

    def find(
        self, match: Callable[[dict[str, Any]], bool], since: int = 0
    ) -> dict[str, Any] | None:
        return next((m for m in self.messages[since:] if match(m)), None)

    async def until(
        self,
        match: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float = EVENT_TIMEOUT,
        since: int = 0,
    ) -> dict[str, Any]:
        """The first message from the ``since``-th on (seen already or yet to come) for
        which ``match`` holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (found := self.find(match, since)) is None:
            left = deadline - loop.time()
            if left <= 0 or self._reader.done():
                stopped = " (the board stopped: closed, or LIMIT reached)" if left > 0 else ""
                pytest.fail(
                    f"no board message {what} within {timeout} s{stopped}: {self.summary()}"
                )
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(left, 1.0))
        return found

    def summary(self) -> str:
        rows = []
        for m in self.messages[-30:]:
            call = m.get("call") or {}
            rows.append(
                f"{m.get('type')} {call.get('id')} {call.get('state')} {call.get('outcome')}"
                f" by={call.get('answered_by')} handover={call.get('handover')}"
            )
        return "\n".join(rows)


def typed(kind: str, call_id: str | None = None, **want: Any) -> Callable[[dict[str, Any]], bool]:
    """A match for a ``kind`` message about ``call_id`` whose call has the fields ``want``."""

    def match(message: dict[str, Any]) -> bool:
        call = message.get("call")
        if message.get("type") != kind or not isinstance(call, dict):
            return False
        if call_id is not None and call["id"] != call_id:
            return False
        return all(call.get(key) == value for key, value in want.items())

    return match


def ringing_from(number: str) -> Callable[[dict[str, Any]], bool]:
    def match(message: dict[str, Any]) -> bool:
        call = message.get("call")
        return (
            message.get("type") == "call.ringing"
            and isinstance(call, dict)
            and call["caller"]["number"] == number
        )

    return match


def presence(extension: str, state: str) -> Callable[[dict[str, Any]], bool]:
    """A ``staff.presence`` message saying ``extension`` is ``state``."""

    def match(message: dict[str, Any]) -> bool:
        return message.get("type") == "staff.presence" and any(
            s["extension"] == extension and s["presence"] == state for s in message["staff"]
        )

    return match


def staff(answered_by: dict[str, Any] | None) -> tuple[str, str] | None:
    return None if answered_by is None else (answered_by["name"], answered_by["extension"])


@contextlib.asynccontextmanager
async def logged_in(
    office: Office, login: str = "sato"
) -> AsyncIterator[tuple[httpx.AsyncClient, Board]]:
    password = next(a.password for a in DEMO_ACCOUNTS if a.login == login)
    async with staff_browser(office.url, login, password) as (http, ws):
        board = Board(ws)
        try:
            yield http, board
        finally:
            await board.close()


async def phone(office: Office, extension: str, *, answers: bool) -> Sipp:
    return await asyncio.to_thread(
        office.phone, extension, answer_after_ms=ANSWER_AFTER_MS if answers else None
    )


async def tell(
    caller: Caller, board: Board, match: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """Tell ``caller`` to hang up (or give up) until the board shows ``match``; an INFO
    that came before the caller listened for it is said again."""
    for _ in range(3):
        caller.tell()
        with contextlib.suppress(pytest.fail.Exception):
            return await board.until(match, what, timeout=TOLD_TIMEOUT)
    caller.tell()
    return await board.until(match, what)


async def hang_up(caller: Caller) -> None:
    """Tell ``caller`` to hang up until its SIPp ended (a call nothing on the board shows)."""
    for _ in range(3):
        caller.tell()
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(caller.process.wait, TOLD_TIMEOUT)
            break
    await asyncio.to_thread(caller.finish, 60)


async def finish(*sipps: Sipp) -> None:
    for sipp in sipps:
        await asyncio.to_thread(sipp.finish, 60)


async def logged(
    http: httpx.AsyncClient, call_id: str, number: str, outcome: str
) -> dict[str, Any]:
    """The call's row in the call log (``GET /api/calls``), once it ended with ``outcome``
    (the log is written behind the board; a ring leg's end may be there first)."""
    seen: list[dict[str, Any]] = []

    async def row() -> dict[str, Any]:  # {} until then
        response = await http.get("/api/calls", params={"number": number, "page_size": 200})
        assert response.status_code == 200, response.text
        seen[:] = [c for c in response.json()["calls"] if c["id"] == call_id]
        return seen[0] if seen and seen[0]["outcome"] == outcome else {}

    what = f"call {call_id} to end {outcome} in the call log (last seen: {seen})"
    return await wait_for(row, timeout=EVENT_TIMEOUT, what=what, interval=0.1)


ANSWERED_ELSEWHERE = "Reason: SIP;cause=200"


def cancel_of(sipp: Sipp) -> str:
    """The CANCEL the phone's SIPp got, from its message trace ("" for none). The
    group's proxy sends callpop's leg the same CANCEL (the same Reason, or none)."""
    trace = sipp.workdir / "sipp_messages.log"
    text = trace.read_text(errors="replace") if trace.exists() else ""
    start = text.find("CANCEL sip:")
    return "" if start < 0 else text[start : text.find("\n\n", start)]


async def test_ring_all_answered_by_204_is_suzuki_not_sato(watch_office: Office) -> None:
    """Ring-all 102 rings callpop, 203 and 204; 204 picks up: 鈴木 answered, 203 got its
    CANCEL, the hang-up ends the talk, and the call log says 鈴木 with the talk time."""
    office = watch_office
    digits, number, name = YAMADA
    async with logged_in(office) as (http, board):
        sato = await phone(office, "203", answers=False)
        suzuki = await phone(office, "204", answers=True)
        caller = office.call(digits, to=GROUP_ALL, answered=True)
        ringing = await board.until(ringing_from(number), f"ringing from {name}")
        call_id = ringing["call"]["id"]
        answered = await board.until(typed("call.answered", call_id), "call.answered")
        assert staff(answered["call"]["answered_by"]) == SUZUKI, answered
        assert answered["call"]["answered_by"]["how"] in ("call-id", "identity", "time-window")
        assert answered["call"]["state"] == "answered"
        await asyncio.to_thread(sato.finish, 60)  # 203 rang, got CANCEL (and sent 487)
        assert ANSWERED_ELSEWHERE in cancel_of(sato)

        ended = await tell(caller, board, typed("call.ended", call_id, outcome="hangup"), "hang-up")
        await finish(caller, suzuki)
        assert staff(ended["call"]["answered_by"]) == SUZUKI
        assert isinstance(ended["call"]["talk_seconds"], int)
        # Nobody ever named 佐藤 for this call.
        for message in board.of(call_id):
            assert staff(message["call"]["answered_by"]) in (None, SUZUKI), message

        row = await logged(http, call_id, digits, "hangup")
        assert staff(row["answered_by"]) == SUZUKI
        assert row["talk_seconds"] == ended["call"]["talk_seconds"]
        assert row["customer"]["name"] == name


async def test_two_calls_at_once_each_answered_by_its_own_phone(watch_office: Office) -> None:
    """Two customers call at once: 山田 on group 100 (callpop and 203), 小林 on group 101
    (callpop and 204). A SIPp desk phone takes one call at a time, so each line's group
    reaches one phone; callpop sees both calls ring together, and both phones' dialogs
    are confirmed while both calls are on. Each call is answered by its own person and
    ends with its own talk time; 小林's ends first, 山田's talk goes on."""
    office = watch_office
    a_digits, a_number, _ = YAMADA
    b_digits, b_number, _ = KOBAYASHI
    async with logged_in(office) as (http, board):
        sato = await phone(office, "203", answers=True)
        suzuki = await phone(office, "204", answers=True)
        caller_a = office.call(a_digits, to=GROUP_203, answered=True)
        caller_b = office.call(b_digits, to=GROUP_204, answered=True)
        a_id = (await board.until(ringing_from(a_number), "山田's call"))["call"]["id"]
        b_id = (await board.until(ringing_from(b_number), "小林's call"))["call"]["id"]
        a = await board.until(typed("call.answered", a_id), "山田's call answered")
        b = await board.until(typed("call.answered", b_id), "小林's call answered")
        assert staff(a["call"]["answered_by"]) == SATO, a
        assert staff(b["call"]["answered_by"]) == SUZUKI, b

        b_end = await tell(
            caller_b, board, typed("call.ended", b_id, outcome="hangup"), "小林 hangs up"
        )
        # 山田's call is still on: 小林's hang-up ended only 小林's call.
        assert board.find(typed("call.ended", a_id, outcome="hangup")) is None
        a_end = await tell(
            caller_a, board, typed("call.ended", a_id, outcome="hangup"), "山田 hangs up"
        )
        await finish(caller_a, caller_b, sato, suzuki)
        for message in board.of(a_id):
            assert staff(message["call"]["answered_by"]) in (None, SATO), message
        for message in board.of(b_id):
            assert staff(message["call"]["answered_by"]) in (None, SUZUKI), message

        row_a = await logged(http, a_id, a_digits, "hangup")
        row_b = await logged(http, b_id, b_digits, "hangup")
        assert (row_a["outcome"], staff(row_a["answered_by"])) == ("hangup", SATO)
        assert (row_b["outcome"], staff(row_b["answered_by"])) == ("hangup", SUZUKI)
        assert row_a["talk_seconds"] == a_end["call"]["talk_seconds"]
        assert row_b["talk_seconds"] == b_end["call"]["talk_seconds"]
        assert row_a["ended_at"] > row_b["ended_at"]  # each ended at its own hang-up


async def test_transferred_to_suzuki_with_the_handover_note(watch_office: Office) -> None:
    """203 answers 山田's call on group 100; 佐藤 leaves a 転送メモ for 鈴木; then 204
    rings with the same caller and answers: the handover goes requested → ringing →
    answered and the call is 鈴木's. The PBX's transfer is stood in for by a second
    INVITE from the same caller number straight to 204 (SIPp has no attended transfer;
    the dialog events callpop sees on 204 are the same: an early, then confirmed dialog
    whose remote identity is the caller)."""
    office = watch_office
    digits, number, _ = YAMADA
    note = f"雨漏り再発の件、2階北側 {secrets.token_hex(2)}"
    async with logged_in(office, "sato") as (http, board):
        sato = await phone(office, "203", answers=True)
        caller = office.call(digits, to=GROUP_203, answered=True)
        call_id = (await board.until(ringing_from(number), "山田's call"))["call"]["id"]
        answered = await board.until(typed("call.answered", call_id), "answered by 佐藤")
        assert staff(answered["call"]["answered_by"]) == SATO

        people = (await http.get("/api/staff")).json()["staff"]
        suzuki_id = next(p["id"] for p in people if p["extension"] == "204")
        response = await http.post(
            f"/api/calls/{call_id}/handover", json={"to_staff_id": suzuki_id, "note": note}
        )
        assert response.status_code == 200, response.text
        assert response.json()["handover"]["state"] == "requested"

        suzuki = await phone(office, "204", answers=True)
        transferred = office.call(digits, to="204", answered=True)
        ringing = await board.until(
            lambda m: (
                typed("call.updated", call_id)(m)
                and (m["call"]["handover"] or {}).get("state") == "ringing"
            ),
            "handover ringing",
        )
        assert ringing["call"]["handover"]["note"] == note
        taken = await board.until(
            lambda m: (
                typed("call.answered", call_id)(m) and staff(m["call"]["answered_by"]) == SUZUKI
            ),
            "answered by 鈴木",
        )
        assert taken["call"]["handover"]["state"] == "answered"
        states = [
            m["call"]["handover"]["state"] for m in board.of(call_id) if m["call"]["handover"]
        ]
        order = ["requested", "ringing", "answered"]
        assert states == sorted(states, key=order.index), states  # never a step back
        assert list(dict.fromkeys(states)) == order, states

        # 佐藤's leg ends (the transfer done): the talk goes on at 204 until it hangs up.
        mark = len(board.messages)
        await hang_up(caller)
        await finish(sato)
        await board.until(presence("203", "idle"), "203 idle after its leg ended", since=mark)
        assert board.find(typed("call.ended", call_id, outcome="hangup")) is None
        ended = await tell(
            transferred, board, typed("call.ended", call_id, outcome="hangup"), "鈴木's hang-up"
        )
        await finish(transferred, suzuki)
        assert staff(ended["call"]["answered_by"]) == SUZUKI

        row = await logged(http, call_id, digits, "hangup")
        assert staff(row["answered_by"]) == SUZUKI
        assert isinstance(row["talk_seconds"], int)
        handover = row["handover"]
        assert (handover["from_name"], handover["to_name"]) == ("佐藤 健", "鈴木 美咲")
        assert (handover["to_extension"], handover["state"]) == ("204", "answered")
        assert handover["note"] == note


async def test_caller_gives_up_is_abandoned_a_phone_answering_is_not(
    watch_office: Office,
) -> None:
    """Ring-all 102: the caller gives up while 203 and 204 ring (CANCEL without a
    Reason) → abandoned and in 不在着信. Then 伊藤 calls and 203 picks up: callpop's leg
    is CANCELled with ``Reason: SIP;cause=200`` (answered elsewhere), 204's too; the call
    is 佐藤's, ends as a hang-up, and is no missed call."""
    office = watch_office
    digits, number, _ = ITO
    async with logged_in(office) as (http, board):
        phones = [await phone(office, ext, answers=False) for ext in ("203", "204")]
        caller = office.call(digits, to=GROUP_ALL, answered=False)
        gone_id = (await board.until(ringing_from(number), "伊藤's first call"))["call"]["id"]
        gone = await tell(caller, board, typed("call.ended", gone_id), "the caller gives up")
        await finish(caller, *phones)
        assert gone["call"]["outcome"] == "abandoned"
        assert gone["call"]["answered_by"] is None
        for rang in phones:  # the caller's CANCEL: no Reason, nobody answered
            assert cancel_of(rang) and "Reason:" not in cancel_of(rang), rang.name
        missed = (await http.get("/api/calls/missed")).json()["missed"]
        assert any(gone_id in row["call_ids"] for row in missed), missed

        sato = await phone(office, "203", answers=True)
        suzuki = await phone(office, "204", answers=False)
        caller = office.call(digits, to=GROUP_ALL, answered=True)
        call_id = (
            await board.until(
                lambda m: ringing_from(number)(m) and m["call"]["id"] != gone_id,
                "伊藤's second call",
            )
        )["call"]["id"]
        answered = await board.until(typed("call.answered", call_id), "answered by 佐藤")
        assert staff(answered["call"]["answered_by"]) == SATO
        await asyncio.to_thread(suzuki.finish, 60)
        assert ANSWERED_ELSEWHERE in cancel_of(suzuki)
        # callpop's own leg ended as answered elsewhere, never as abandoned.
        for message in board.of(call_id):
            assert message["call"]["outcome"] in (None, "answered_elsewhere", "hangup"), message
        await tell(caller, board, typed("call.ended", call_id, outcome="hangup"), "hang-up")
        await finish(caller, sato)
        row = await logged(http, call_id, digits, "hangup")
        assert staff(row["answered_by"]) == SATO
        missed = (await http.get("/api/calls/missed")).json()["missed"]
        assert not any(call_id in row["call_ids"] for row in missed), missed
        assert any(gone_id in row["call_ids"] for row in missed), missed
