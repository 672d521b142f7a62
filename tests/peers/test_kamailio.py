"""The listener in register mode behind a real Kamailio 5.6 (registrar + ring group).

Kamailio runs ``kamailio/registrar.cfg`` on 127.0.0.1:<free port>: digest auth for user
``callpop``, locations in memory, and ``sip:100@<domain>`` relayed to the registered
``callpop``. SIPp plays the outside caller. The listener must register with digest
auth, ring on the relayed INVITE, end on the relayed CANCEL, and register again by
itself when Kamailio restarts with an empty location table.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from telephony.endpoint import EndpointConfig
from telephony.events import (
    CallEnded,
    CallRinging,
    EndReason,
    Event,
    RegistrationChanged,
    RegistrationState,
)
from telephony.transport import SipTransport
from tests.waiting import wait_for

from .conftest import (
    KAMAILIO_PASSWORD,
    KAMAILIO_USER,
    Kamailio,
    call_ring_group,
)

pytestmark = [pytest.mark.kamailio, pytest.mark.sipp, pytest.mark.asyncio]


@asynccontextmanager
async def listener(
    kamailio: Kamailio, events: list[Event], *, password: str = KAMAILIO_PASSWORD
) -> AsyncIterator[SipTransport]:
    config = EndpointConfig(
        mode="register",
        local_host="127.0.0.1",
        local_port=0,
        registrar_host=kamailio.host,
        registrar_port=kamailio.port,
        domain=kamailio.host,
        user=KAMAILIO_USER,
        auth_user=KAMAILIO_USER,
        password=password,
        expires=10,  # refreshed every 5 s, so a restarted registrar is found quickly
        ring_timeout=30.0,
        retry_base=0.5,
        retry_max=2.0,
    )
    transport = await SipTransport.start(config, events.append, bind_host="127.0.0.1", bind_port=0)
    try:
        yield transport
    finally:
        await transport.close()


def registration_states(events: list[Event]) -> list[RegistrationChanged]:
    return [e for e in events if isinstance(e, RegistrationChanged)]


async def test_registers_rings_and_reregisters_after_restart(
    kamailio: Kamailio, tmp_path: Path
) -> None:
    events: list[Event] = []
    async with listener(kamailio, events) as transport:
        await wait_for(
            lambda: transport.registration_state is RegistrationState.REGISTERED,
            timeout=10.0,
            what="the first registration",
        )
        registered = registration_states(events)[-1]
        assert registered.state is RegistrationState.REGISTERED
        assert registered.expires_at is not None
        assert [e.state for e in registration_states(events)] == [
            RegistrationState.REGISTERING,
            RegistrationState.REGISTERED,
        ]

        await asyncio.to_thread(call_ring_group, kamailio, tmp_path / "call1")
        await wait_for(
            lambda: any(isinstance(e, CallEnded) for e in events), timeout=5.0, what="CallEnded"
        )
        (ring,) = [e for e in events if isinstance(e, CallRinging)]
        (ended,) = [e for e in events if isinstance(e, CallEnded)]
        assert ring.caller.number == "+81312345678"  # the PAI SIPp sent, through Kamailio
        assert ring.caller.display_name == "山田 太郎"
        assert ring.remote == (kamailio.host, kamailio.port)
        assert ended.call_id == ring.call_id
        # Row 1 CANCELs with "Reason: SIP;cause=200"; Kamailio's tm builds its own CANCEL
        # downstream but carries the Reason over (RFC 3326), so: answered elsewhere.
        assert ended.reason is EndReason.ANSWERED_ELSEWHERE
        assert transport.endpoint.active_calls == 0

        # A registrar that restarts forgets every binding (usrloc in memory).
        kamailio.restart()
        restarted_at = asyncio.get_running_loop().time()

        def bound_after_restart() -> bool:
            expires_at = transport.endpoint.registration_expires_at
            return (
                transport.registration_state is RegistrationState.REGISTERED
                and expires_at is not None
                and expires_at - 10 > restarted_at
            )

        await wait_for(
            bound_after_restart, timeout=20.0, what="a registration at the restarted Kamailio"
        )
        events.clear()
        await asyncio.to_thread(call_ring_group, kamailio, tmp_path / "call2")
        await wait_for(
            lambda: any(isinstance(e, CallEnded) for e in events), timeout=5.0, what="CallEnded"
        )
        assert [type(e) for e in events if not isinstance(e, RegistrationChanged)] == [
            CallRinging,
            CallEnded,
        ]
        stats = transport.stats
        assert stats["rejected_host"] == 0 and stats["parse_errors"] == 0
    # close() unregistered: the last event says so.
    assert registration_states(events)[-1].state is RegistrationState.DISABLED


async def test_wrong_password_fails_and_keeps_retrying(kamailio: Kamailio) -> None:
    events: list[Event] = []
    async with listener(kamailio, events, password="not-the-password") as transport:
        await wait_for(
            lambda: transport.registration_state is RegistrationState.FAILED,
            timeout=10.0,
            what="FAILED",
        )
        failed = registration_states(events)[-1]
        assert failed.state is RegistrationState.FAILED
        assert "401" in failed.detail or "403" in failed.detail, failed.detail
        attempts = transport.stats["registrations"]
        # Back-off 0.5 s, 1 s, 2 s ... : more attempts follow, and it stays FAILED.
        await wait_for(
            lambda: transport.stats["registrations"] >= attempts + 4,
            timeout=15.0,
            what="further attempts",
        )
        assert transport.registration_state is RegistrationState.FAILED
        assert all(e.state is not RegistrationState.REGISTERED for e in registration_states(events))
