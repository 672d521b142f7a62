"""Known-customer routing in the INVITE server: 100 only, then 302 with the decided Contact.

Bytes in, bytes and events out, time as an argument: the routed line's INVITE waits
for ``SipEndpoint.redirect`` (or its deadline), the 302 is retransmitted on Timer G
until the ACK, a CANCEL before the decision is a 487 as for any ringing call.
"""

from __future__ import annotations

import pytest

from telephony.endpoint import EndpointConfig, SipEndpoint
from telephony.events import CallEnded, CallerId, CallRedirected, CallRinging, EndReason
from telephony.timers import T1, TIMER_H
from tests.telephony.test_endpoint import PBX, events, feed, request, responses, to_tag

RING_GROUP = "sip:600@pbx.example"
ASSIGNEE = "sip:203@pbx.example"
OFFICE_LINE = "0335550100"  # the routed line
OTHER_LINE = "0335550101"


def route_for(caller: CallerId) -> str | None:
    return RING_GROUP if caller.dialed == OFFICE_LINE else None


def make_endpoint(deadline: float = 0.5) -> SipEndpoint:
    return SipEndpoint(
        EndpointConfig(
            mode="trunk",
            local_host="192.0.2.1",
            local_port=5070,
            allowed_hosts=frozenset({PBX[0]}),
            ring_timeout=60.0,
            route_for=route_for,
            route_deadline=deadline,
        )
    )


def invite(line: str = OFFICE_LINE, **kwargs: str) -> bytes:
    return request("INVITE", extra=f"P-Called-Party-ID: <tel:{line}>\r\n", **kwargs)


def routed(endpoint: SipEndpoint, now: float = 10.0) -> CallRinging:
    feed(endpoint, invite(), now)
    [trying] = responses(endpoint)
    assert (trying.status, to_tag(trying)) == (100, None)
    [event] = events(endpoint)
    assert isinstance(event, CallRinging)
    return event


def test_a_routed_line_gets_100_only_and_a_ringing_event_awaiting_a_route() -> None:
    endpoint = make_endpoint()
    event = routed(endpoint)
    assert event.awaiting_route and event.call_id == "call1@pbx"
    assert event.caller.dialed == OFFICE_LINE
    # Only the decision deadline is pending: no ring timeout, nothing sent meanwhile.
    assert endpoint.get_timer() == pytest.approx(10.5)
    assert endpoint.active_calls == 1


def test_another_line_rings_as_before() -> None:
    endpoint = make_endpoint()
    feed(endpoint, invite(OTHER_LINE), 10.0)
    assert [r.status for r in responses(endpoint)] == [100, 180]
    [event] = events(endpoint)
    assert isinstance(event, CallRinging) and not event.awaiting_route


def test_redirect_sends_302_with_contact_and_to_tag_until_the_ack() -> None:
    endpoint = make_endpoint()
    routed(endpoint)
    assert endpoint.redirect("call1@pbx", ASSIGNEE, 10.1)
    [moved] = responses(endpoint)
    assert (moved.status, moved.reason) == (302, "Moved Temporarily")
    assert moved.headers.get("Contact") == f"<{ASSIGNEE}>"
    assert to_tag(moved)  # RFC 3261 §8.2.6.2: a final response has a To tag
    assert moved.call_id == "call1@pbx" and moved.cseq == (1, "INVITE")
    assert events(endpoint) == [
        CallRedirected(call_id="call1@pbx", target=ASSIGNEE, by_deadline=False, at=10.1)
    ]
    assert endpoint.active_calls == 0
    # Timer G: the 302 again after T1 while no ACK came.
    assert endpoint.get_timer() == pytest.approx(10.1 + T1)
    endpoint.handle_timer(10.1 + T1)
    [again] = responses(endpoint)
    assert again.status == 302 and to_tag(again) == to_tag(moved)
    # The ACK (same branch: RFC 3261 §17.1.1.3, non-2xx) stops Timer G and H.
    feed(endpoint, request("ACK", cseq="1 ACK", to_tag=to_tag(moved)), 11.0)
    endpoint.handle_timer(12.0)
    assert responses(endpoint) == []
    assert endpoint.stats["redirects"] == 1
    assert endpoint.stats["redirect_deadline_fallbacks"] == 0
    assert endpoint.stats["protocol_errors"] == 0
    assert events(endpoint) == []  # no CallEnded for callpop's leg


def test_retransmitted_invite_gets_100_before_and_the_302_again_after() -> None:
    endpoint = make_endpoint()
    routed(endpoint)
    feed(endpoint, invite(), 10.2)
    assert [r.status for r in responses(endpoint)] == [100]
    endpoint.redirect("call1@pbx", ASSIGNEE, 10.3)
    [moved] = responses(endpoint)
    feed(endpoint, invite(), 10.4)
    [again] = responses(endpoint)
    assert again.status == 302 and again.headers.get("Contact") == f"<{ASSIGNEE}>"
    assert to_tag(again) == to_tag(moved)
    assert [type(e) for e in events(endpoint)] == [CallRedirected]


def test_cancel_before_the_decision_gets_487_and_a_late_decision_is_ignored() -> None:
    endpoint = make_endpoint()
    routed(endpoint)
    feed(endpoint, request("CANCEL", cseq="1 CANCEL"), 10.2)
    ok, terminated = responses(endpoint)
    assert (ok.status, ok.cseq[1]) == (200, "CANCEL")
    assert (terminated.status, terminated.cseq[1]) == (487, "INVITE")
    assert events(endpoint) == [CallEnded(call_id="call1@pbx", reason=EndReason.ABANDONED, at=10.2)]
    assert not endpoint.redirect("call1@pbx", ASSIGNEE, 10.3)
    assert responses(endpoint) == []
    assert endpoint.stats["redirects"] == 0 and endpoint.stats["redirects_late"] == 1
    # The deadline that was pending is gone with the decision it waited for.
    endpoint.handle_timer(11.0)
    assert all(r.status == 487 for r in responses(endpoint))
    assert endpoint.stats["redirect_deadline_fallbacks"] == 0


def test_no_decision_within_the_deadline_redirects_to_the_fallback() -> None:
    endpoint = make_endpoint(deadline=0.5)
    routed(endpoint)
    endpoint.handle_timer(10.4)
    assert responses(endpoint) == []
    endpoint.handle_timer(10.5)
    [moved] = responses(endpoint)
    assert moved.status == 302 and moved.headers.get("Contact") == f"<{RING_GROUP}>"
    assert events(endpoint) == [
        CallRedirected(call_id="call1@pbx", target=RING_GROUP, by_deadline=True, at=10.5)
    ]
    assert endpoint.stats["redirect_deadline_fallbacks"] == 1
    # The decision that arrives after the fallback changes nothing.
    assert not endpoint.redirect("call1@pbx", ASSIGNEE, 10.6)
    assert responses(endpoint) == []
    # Timer H ends the transaction if the ACK never comes.
    endpoint.handle_timer(10.5 + TIMER_H)
    assert endpoint.get_timer() is None


def test_redirect_of_a_call_that_is_not_routed_sends_nothing() -> None:
    endpoint = make_endpoint()
    feed(endpoint, invite(OTHER_LINE), 10.0)
    responses(endpoint)
    assert not endpoint.redirect("call1@pbx", ASSIGNEE, 10.1)
    assert responses(endpoint) == []
    assert endpoint.active_calls == 1


@pytest.mark.parametrize(
    "target", ["sip:203@pbx>\r\nX: y", "tel:+81312345678", "203", "sip:203 @pbx", ""]
)
def test_a_target_that_does_not_fit_a_contact_header_is_refused(target: str) -> None:
    endpoint = make_endpoint()
    routed(endpoint)
    with pytest.raises(ValueError):
        endpoint.redirect("call1@pbx", target, 10.1)
    assert responses(endpoint) == []
