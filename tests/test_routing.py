"""Known-customer routing, the composition's side: the rule, the config, the call's path.

:func:`callpop.routing.decide` is a pure function of the card and the extensions'
presence; :class:`CallRouter` sends its answer through a ``redirect`` callable; the call
service puts the decision on the call before the pop goes out, keeps the call ringing
after callpop's 302 and ends it as ``routed`` when no dialog event resolves it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from callpop.calls import CallService, StaffOnExtension
from callpop.routing import CallRouter, decide, target_uri
from callpop.service import router_of
from callpop.settings import ConfigError, load_settings
from lookup.card import CallerCard, CardStatus, CustomerCard, DegradedReason, StaffRef
from lookup.numbers import Number, Numbering
from lookup.service import Lookup
from popup_ui.hub import InProcessHub
from telephony.dialoginfo import Dialog
from telephony.dialogstate import DialogChange, Presence
from telephony.events import CallerId, CallerIdSource, CallRedirected, CallRinging
from tests.waiting import wait_for

SATO = StaffRef(id=7, name="佐藤 健", furigana="さとう けん", extension="203")
LINE = "+81335550100"
RING_GROUP = "sip:600@pbx.example"


def customer(id: int = 1, staff: StaffRef | None = SATO) -> CustomerCard:
    return CustomerCard(
        id=id, name="山田 太郎", furigana=None, company=None, rank=None, assigned_staff=staff
    )


def card(*customers: CustomerCard, status: CardStatus = CardStatus.MATCHED) -> CallerCard:
    return CallerCard(
        status=status,
        number="+81312345678",
        national="03-1234-5678",
        raw_number="0312345678",
        customers=list(customers),
    )


def presence_of(state: Presence) -> Any:
    return lambda extension: state if extension == "203" else "unknown"


# --- the rule -------------------------------------------------------------------------------


def test_a_known_customer_whose_assignee_is_idle_goes_straight_to_them() -> None:
    decision = decide(card(customer()), presence_of("idle"))
    assert (decision.extension, decision.staff_id, decision.name) == ("203", 7, "佐藤 健")
    assert decision.reason == "assignee-idle"


@pytest.mark.parametrize(
    ("the_card", "presence", "reason"),
    [
        (card(customer()), "busy", "assignee-busy"),
        (card(customer()), "ringing", "assignee-busy"),
        # Not known to be idle is not idle: the ring group is the safe choice.
        (card(customer()), "unknown", "assignee-presence-unknown"),
        (card(status=CardStatus.UNKNOWN), "idle", "unknown-caller"),
        (card(status=CardStatus.WITHHELD), "idle", "unknown-caller"),
        (card(status=CardStatus.INTERNAL), "idle", "unknown-caller"),
        (card(customer(1), customer(2)), "idle", "several-customers"),
        (card(customer(staff=None)), "idle", "no-assignee"),
        (
            card(customer(staff=SATO.model_copy(update={"extension": None}))),
            "idle",
            "no-assignee",
        ),
        (
            card(status=CardStatus.DEGRADED).model_copy(
                update={"degraded_reason": DegradedReason.TIMEOUT}
            ),
            "idle",
            "lookup-timeout",
        ),
        (
            card(status=CardStatus.DEGRADED).model_copy(
                update={"degraded_reason": DegradedReason.DATABASE}
            ),
            "idle",
            "degraded",
        ),
    ],
)
def test_anything_else_goes_to_the_ring_group_with_its_reason(
    the_card: CallerCard, presence: Presence, reason: str
) -> None:
    decision = decide(the_card, presence_of(presence))
    assert (decision.extension, decision.staff_id, decision.name) == (None, None, None)
    assert decision.reason == reason


def test_targets_become_contact_uris() -> None:
    assert target_uri("203", "pbx.example") == "sip:203@pbx.example"
    assert target_uri("600", "127.0.0.1:5070") == "sip:600@127.0.0.1:5070"
    assert target_uri("sip:600@10.0.0.5;user=phone", "") == "sip:600@10.0.0.5;user=phone"
    for bad in ("60 0", "sip:600@pbx>", "tel:+81335550100", "内線"):
        with pytest.raises(ValueError):
            target_uri(bad, "pbx.example")
    with pytest.raises(ValueError, match="needs sip.domain"):
        target_uri("600", "")


# --- the config ---------------------------------------------------------------------------


def settings(tmp_path: Path, body: str) -> Any:
    config = tmp_path / "callpop.toml"
    config.write_text(body, encoding="utf-8")
    return load_settings(config)


def numbering() -> Numbering:
    return Numbering.from_config(region="JP", rewrite=[], extension_max_digits=4)


def test_routed_lines_are_checked_and_extensions_get_the_pbx_domain(tmp_path: Path) -> None:
    loaded = settings(
        tmp_path,
        '[sip]\nregistrar_host = "127.0.0.1"\nregistrar_port = 5070\n'
        '[[routing.lines]]\nline = "03-3555-0100"\nring_group = "600"\n',
    )
    router = router_of(loaded, numbering())
    assert router.lines == {LINE: "sip:600@127.0.0.1:5070"}
    assert router.domain == "127.0.0.1:5070"
    dialed = CallerId(
        number="0312345678",
        display_name=None,
        withheld=None,
        source=CallerIdSource.FROM,
        dialed="0335550100",
    )
    assert router.route_for(dialed) == "sip:600@127.0.0.1:5070"
    assert router.route_for(CallerId(**{**_fields(dialed), "dialed": "0335550101"})) is None
    loaded = settings(
        tmp_path,
        '[sip]\nregistrar_host = "pbx.example"\ndomain = "office.example"\n'
        '[[routing.lines]]\nline = "03-3555-0100"\nring_group = "600"\n',
    )
    assert router_of(loaded, numbering()).lines == {LINE: "sip:600@office.example"}
    trunk = settings(
        tmp_path,
        '[sip]\nmode = "trunk"\n[[routing.lines]]\nline = "03-3555-0100"\n'
        'ring_group = "sip:600@10.0.0.5"\n',
    )
    with pytest.raises(ConfigError, match="routing needs sip.domain"):
        router_of(trunk, numbering())
    for lines, problem in (
        ('line = "代表"\nring_group = "600"', r"routing\.lines\[0\]\.line"),
        ('line = "03-3555-0100"\nring_group = "6 0"', r"routing\.lines\[0\]\.ring_group"),
    ):
        bad = settings(tmp_path, f'[sip]\nregistrar_host = "pbx"\n[[routing.lines]]\n{lines}\n')
        with pytest.raises(ConfigError, match=problem):
            router_of(bad, numbering())


def _fields(caller: CallerId) -> dict[str, Any]:
    return {name: getattr(caller, name) for name in CallerId.__slots__}


# --- the call's path ----------------------------------------------------------------------


class CardFor:
    """The lookup: one card for every number, after ``release`` is set (if given)."""

    def __init__(self, the_card: CallerCard, release: asyncio.Event | None = None) -> None:
        self.card = the_card
        self.release = release

    async def card_for(
        self, number: Number, *, withheld: str | None = None, now: datetime, keep_late: bool = True
    ) -> Lookup:
        if self.release is not None:
            await self.release.wait()
        return Lookup(card=self.card)


class Recorder:
    def __init__(self) -> None:
        self.writes: list[tuple[str, dict[str, Any]]] = []

    def submit(self, write: Any, /, **fields: Any) -> None:
        self.writes.append((write.__name__, fields))


def ringing_event(call_id: str = "c1@pbx", *, routed: bool = True) -> CallRinging:
    caller = CallerId(
        number="0312345678",
        display_name=None,
        withheld=None,
        source=CallerIdSource.FROM,
        dialed="0335550100",
    )
    return CallRinging(
        call_id=call_id, caller=caller, at=1.0, remote=("127.0.0.1", 5060), awaiting_route=routed
    )


async def service_with(
    lookup: CardFor, presence: Presence, *, ring_timeout: float = 60.0
) -> tuple[CallService, InProcessHub, Recorder, list[tuple[str, str]]]:
    plan = numbering()
    router = CallRouter(lines={LINE: RING_GROUP}, numbering=plan, domain="pbx.example")
    sent: list[tuple[str, str]] = []

    def redirect(sip_call_id: str, target: str) -> bool:
        sent.append((sip_call_id, target))
        return True

    router.redirect = redirect
    router.presence = presence_of(presence)
    hub = InProcessHub()
    recorder = Recorder()
    calls = CallService(
        hub=hub,
        lookup=lookup,
        numbering=plan,
        call_log=recorder,
        router=router,
        ring_timeout=ring_timeout,
    )
    return calls, hub, recorder, sent


@pytest.mark.asyncio
async def test_the_pop_carries_the_decision_and_the_302_went_out_first() -> None:
    calls, hub, _, sent = await service_with(CardFor(card(customer())), "idle")
    await calls.place(ringing_event())
    assert sent == [("c1@pbx", "sip:203@pbx.example")]
    [entry] = (await hub.snapshot()).calls
    routing = entry.call.routing
    assert routing is not None
    assert (routing.target, routing.extension, routing.staff_id, routing.name) == (
        "sip:203@pbx.example",
        "203",
        7,
        "佐藤 健",
    )
    assert routing.reason == "assignee-idle"
    await calls.close()


@pytest.mark.asyncio
async def test_a_busy_assignee_sends_the_call_to_the_ring_group() -> None:
    calls, hub, _, sent = await service_with(CardFor(card(customer())), "busy")
    await calls.place(ringing_event())
    assert sent == [("c1@pbx", RING_GROUP)]
    [entry] = (await hub.snapshot()).calls
    assert entry.call.routing is not None
    assert (entry.call.routing.extension, entry.call.routing.reason) == ("600", "assignee-busy")
    assert entry.call.routing.staff_id is None
    await calls.close()


@pytest.mark.asyncio
async def test_a_call_on_another_line_is_not_routed() -> None:
    calls, hub, _, sent = await service_with(CardFor(card(customer())), "idle")
    await calls.place(ringing_event(routed=False))
    assert sent == []
    [entry] = (await hub.snapshot()).calls
    assert entry.call.routing is None
    await calls.close()


@pytest.mark.asyncio
async def test_after_the_302_the_call_rings_on_and_its_answer_is_followed() -> None:
    calls, hub, recorder, _ = await service_with(CardFor(card(customer())), "idle")
    await calls.place(ringing_event())
    await calls.place(
        CallRedirected(call_id="c1@pbx", target="sip:203@pbx.example", by_deadline=False, at=1.1)
    )
    [entry] = (await hub.snapshot()).calls
    assert entry.call.state == "ringing" and entry.call.outcome is None
    assert not any(name == "record_call_ended" for name, _ in recorder.writes)
    # The call log keeps the decision after the board has forgotten the call.
    [routed] = [fields for name, fields in recorder.writes if name == "record_call_routed"]
    assert routed == {"id": entry.call.id, "to": "203", "staff_id": 7, "reason": "assignee-idle"}
    # 203's phone answers the same SIP call (the PBX followed the 302, same Call-ID).
    dialog = Dialog(id="d1", call_id="c1@pbx", state="confirmed")
    calls.on_dialog(
        DialogChange(extension="203", dialog=dialog, previous="early"),
        StaffOnExtension(id=7, name="佐藤 健", extension="203"),
    )

    async def answered() -> bool:
        [entry] = (await hub.snapshot()).calls
        return entry.call.state == "answered"

    await wait_for(answered, timeout=5, what="the routed call answered on 203")
    [entry] = (await hub.snapshot()).calls
    assert entry.call.answered_by is not None and entry.call.answered_by.extension == "203"
    await calls.close()


@pytest.mark.asyncio
async def test_a_routed_call_no_dialog_event_resolves_ends_as_routed() -> None:
    calls, hub, recorder, _ = await service_with(
        CardFor(card(status=CardStatus.UNKNOWN)), "idle", ring_timeout=0.05
    )
    await calls.place(ringing_event())
    await calls.place(
        CallRedirected(call_id="c1@pbx", target=RING_GROUP, by_deadline=False, at=1.1)
    )

    async def gone() -> bool:
        return not (await hub.snapshot()).calls

    await wait_for(gone, timeout=5, what="the unresolved routed call to end")
    await wait_for(
        lambda: any(name == "record_call_ended" for name, _ in recorder.writes),
        timeout=5,
        what="its end in the call log",
    )
    [ended] = [fields for name, fields in recorder.writes if name == "record_call_ended"]
    assert ended["outcome"] == "routed"
    await calls.close()


@pytest.mark.asyncio
async def test_a_decision_later_than_the_deadline_is_the_ring_group_with_reason_deadline() -> None:
    release = asyncio.Event()
    calls, hub, _, sent = await service_with(CardFor(card(customer()), release), "idle")
    calls.handle(ringing_event())
    # The SIP side's deadline passed first: it redirected to the fallback by itself.
    calls.handle(CallRedirected(call_id="c1@pbx", target=RING_GROUP, by_deadline=True, at=1.5))
    release.set()

    async def popped() -> bool:
        return bool((await hub.snapshot()).calls)

    await wait_for(popped, timeout=5, what="the pop")
    assert sent == []  # nothing more sent: the call is no longer callpop's
    [entry] = (await hub.snapshot()).calls
    assert entry.call.routing is not None
    assert (entry.call.routing.reason, entry.call.routing.target) == ("deadline", RING_GROUP)
    assert entry.call.state == "ringing"
    await calls.close()


@pytest.mark.asyncio
async def test_a_decision_that_raises_still_pops_and_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls, hub, _, sent = await service_with(CardFor(card(customer())), "idle")

    def broken(extension: str) -> Presence:
        raise RuntimeError("presence table gone")

    assert calls._router is not None
    calls._router.presence = broken
    await calls.place(ringing_event())
    [entry] = (await hub.snapshot()).calls
    assert entry.call.routing is None and sent == []  # the SIP side's deadline takes it
    assert calls.routing_errors == 1
    assert "routing call" in caplog.text and "presence table gone" in caplog.text
    await calls.close()
