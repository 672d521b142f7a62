"""Watching extensions (RFC 4235 dialog events) through a real Kamailio 5.6 presence server.

Kamailio runs ``kamailio/presence.cfg`` on 127.0.0.1:<free port>: registrar (digest auth
for ``callpop``), proxy with dialog tracking, pua_dialoginfo publishing each call's
state to presence, which NOTIFYs the watchers. callpop's real ``SipTransport`` registers
and subscribes to extensions 201 and 202 (digest auth on SUBSCRIBE too). SIPp plays a
desk phone registered as 201 that rings, is answered and hangs up, and the outside
caller. The listener must receive the NOTIFYs for 201 (early, confirmed, terminated,
as raw dialog-info bytes) and, when Kamailio restarts and forgets every subscription,
subscribe again by itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from telephony.endpoint import EndpointConfig
from telephony.events import (
    DialogNotified,
    Event,
    RegistrationState,
    SubscriptionChanged,
    SubscriptionState,
)
from telephony.transport import SipTransport
from tests.processes import free_udp_port
from tests.waiting import wait_for

from .conftest import KAMAILIO_PASSWORD, KAMAILIO_USER, SIPP_DIR, Kamailio, run_sipp

pytestmark = [pytest.mark.kamailio, pytest.mark.sipp, pytest.mark.asyncio]

WATCHED = ("201", "202")


@asynccontextmanager
async def watcher(kamailio: Kamailio, events: list[Event]) -> AsyncIterator[SipTransport]:
    config = EndpointConfig(
        mode="register",
        local_host="127.0.0.1",
        local_port=0,
        registrar_host=kamailio.host,
        registrar_port=kamailio.port,
        domain=kamailio.host,
        user=KAMAILIO_USER,
        auth_user=KAMAILIO_USER,
        password=KAMAILIO_PASSWORD,
        expires=10,
        watch_extensions=WATCHED,
        # Refreshed every 5 s, so a restarted presence server is noticed quickly.
        subscription_expires=10,
        retry_base=0.5,
        retry_max=2.0,
    )
    transport = await SipTransport.start(config, events.append, bind_host="127.0.0.1", bind_port=0)
    try:
        yield transport
    finally:
        await transport.close()


def sipp_args(kamailio: Kamailio, scenario: str, extension: str, port: int) -> list[str]:
    return [
        f"{kamailio.host}:{kamailio.port}",
        "-sf",
        str(SIPP_DIR / scenario),
        "-s",
        extension,
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-m",
        "1",
        "-timeout",
        "30s",
        "-timeout_error",
    ]


def phone_call(kamailio: Kamailio, workdir: Path) -> None:
    """201 registers, rings, answers a caller and hangs up. Blocking (run in a thread)."""
    phone_port = free_udp_port()
    registered = run_sipp(
        sipp_args(kamailio, "register_phone.xml", "201", phone_port), 40.0, workdir=workdir / "reg"
    )
    assert registered.returncode == 0, "phone 201 did not register, see its log above"
    # The phone's SIPp listens on the port it registered from (a UAS: no remote address).
    uas_args = sipp_args(kamailio, "uas_answer_hangup.xml", "201", phone_port)[1:]
    with ThreadPoolExecutor(1) as pool:
        uas = pool.submit(run_sipp, uas_args, 40.0, workdir=workdir / "phone")
        # Kamailio's INVITE retransmissions (Timer A) cover a phone still starting up.
        caller = run_sipp(
            sipp_args(kamailio, "uac_call_answered.xml", "201", free_udp_port()),
            40.0,
            workdir=workdir / "caller",
        )
        phone = uas.result()
    assert caller.returncode == 0, "the caller's call failed, see its log above"
    assert phone.returncode == 0, "the phone's call failed, see its log above"


def notified(events: list[Event], extension: str, since: float) -> list[str]:
    return [
        e.body.decode()
        for e in events
        if isinstance(e, DialogNotified) and e.extension == extension and e.at >= since
    ]


def in_order(wanted: list[str], seen: list[str]) -> bool:
    """``wanted`` appears in ``seen`` in this order (other items may come between)."""
    rest = iter(seen)
    return all(item in rest for item in wanted)


def active_since(events: list[Event], extension: str, since: float) -> bool:
    return any(
        isinstance(e, SubscriptionChanged)
        and e.extension == extension
        and e.state is SubscriptionState.ACTIVE
        and e.at >= since
        for e in events
    )


async def test_notifies_a_call_of_201_and_resubscribes_after_restart(
    presence_kamailio: Kamailio, tmp_path: Path
) -> None:
    kamailio = presence_kamailio
    events: list[Event] = []
    loop = asyncio.get_running_loop()
    async with watcher(kamailio, events) as transport:
        await wait_for(
            lambda: (
                set(transport.endpoint.subscription_states.values()) == {SubscriptionState.ACTIVE}
            ),
            timeout=15.0,
            what="both subscriptions active",
        )
        assert transport.registration_state is RegistrationState.REGISTERED
        # The 407 challenge was answered (presence.cfg authenticates SUBSCRIBE).
        assert transport.stats["subscribes_sent"] >= 4
        assert transport.stats["subscriptions_active"] == 2

        call_started = loop.time()
        await asyncio.to_thread(phone_call, kamailio, tmp_path / "call")

        def states_of_201() -> list[str]:
            seen = []
            for body in notified(events, "201", call_started):
                for state in ("early", "confirmed", "terminated"):
                    if f"<state>{state}</state>" in body:
                        seen.append(state)
            return seen

        await wait_for(
            lambda: "terminated" in states_of_201(),
            timeout=10.0,
            what="NOTIFYs for 201 up to terminated",
        )
        seen = states_of_201()
        assert "early" in seen and "confirmed" in seen, seen
        # In the order the call went: ringing, answered, hung up.
        assert in_order(["early", "confirmed", "terminated"], seen), seen
        for event in events:
            if isinstance(event, DialogNotified):
                assert event.content_type == "application/dialog-info+xml"
        # 202 was never called: whatever it was told holds no early or confirmed dialog.
        for body in notified(events, "202", call_started):
            assert "<state>early</state>" not in body and "<state>confirmed</state>" not in body
        stats = transport.stats
        assert stats["notifies_received"] >= 3
        assert stats["parse_errors"] == 0 and stats["rejected_host"] == 0

        # Kamailio restarts: presence (in memory) forgets every subscription.
        failures = stats["subscription_failures"]
        kamailio.restart()
        restarted_at = loop.time()
        await wait_for(
            lambda: all(active_since(events, ext, restarted_at) for ext in WATCHED),
            timeout=30.0,
            what="both subscriptions active again at the restarted Kamailio",
        )
        # The refresh of the old dialog was refused (481) and a new one made, or the
        # restart was seen by the registration: either way callpop did it by itself.
        assert transport.stats["subscription_failures"] > failures or any(
            isinstance(e, SubscriptionChanged)
            and e.state is SubscriptionState.SUBSCRIBING
            and e.at >= restarted_at
            for e in events
        )
        await wait_for(
            lambda: bool(notified(events, "201", restarted_at)),
            timeout=10.0,
            what="a NOTIFY for 201 from the restarted Kamailio",
        )
