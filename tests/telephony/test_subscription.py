"""The SUBSCRIBE client (RFC 4235 dialog events) through the sans-I/O endpoint.

A PBX is played here with the project's own message builder: it answers the REGISTER,
then the SUBSCRIBEs the endpoint sends once registered (407 with a digest challenge,
200 with the granted Expires, 481, silence), and sends NOTIFYs in the subscription's
dialog. Bytes in, bytes and events out; time only moves when a test passes a later
``now``.
"""

from __future__ import annotations

import hashlib

import pytest

from telephony.endpoint import MAX_WATCHED, SUBSCRIBE_SPACING, EndpointConfig, SipEndpoint
from telephony.events import (
    DialogNotified,
    Event,
    RegistrationChanged,
    SubscriptionChanged,
    SubscriptionState,
)
from telephony.message import SipRequest, SipResponse, build_request, build_response, parse_message
from telephony.subscription import MAX_NOTIFY_BODY
from telephony.timers import TIMER_F
from telephony.uri import parse_name_addr

PBX = ("192.0.2.10", 5060)
PASSWORD = "s3cret"
PRESENCE_CONTACT = "sip:presence@192.0.2.10:5060"
EARLY = (
    b'<?xml version="1.0"?>\n<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
    b'version="1" state="full" entity="sip:201@pbx.example">'
    b'<dialog id="a1" direction="recipient"><state>early</state></dialog></dialog-info>'
)


def make_endpoint(**overrides: object) -> SipEndpoint:
    fields: dict[str, object] = {
        "mode": "register",
        "local_host": "192.0.2.1",
        "local_port": 5070,
        "registrar_host": PBX[0],
        "registrar_port": PBX[1],
        "domain": "pbx.example",
        "user": "callpop",
        "password": PASSWORD,
        "expires": 3600,  # the REGISTER refresh stays out of the way (3570 s)
        "watch_extensions": ("201",),
        "subscription_expires": 600,
    }
    fields.update(overrides)
    return SipEndpoint(EndpointConfig(**fields))  # type: ignore[arg-type]


def sent(endpoint: SipEndpoint, method: str) -> list[SipRequest]:
    out = []
    for data, destination in endpoint.datagrams_to_send():
        message = parse_message(data)
        if isinstance(message, SipRequest):
            assert destination == PBX  # SUBSCRIBE goes where REGISTER goes
            if message.method == method:
                out.append(message)
    return out


def subscribe(endpoint: SipEndpoint) -> SipRequest:
    (request,) = sent(endpoint, "SUBSCRIBE")
    return request


def answer(
    endpoint: SipEndpoint,
    request: SipRequest,
    status: int,
    now: float,
    headers: list[tuple[str, str]] | None = None,
    to_tag: str = "pres1",
) -> None:
    data = build_response(request, status, to_tag=to_tag, headers=headers or [])
    endpoint.receive_datagram(data, PBX, now)


def registered(endpoint: SipEndpoint, now: float = 0.0) -> None:
    """Start the endpoint and let the PBX accept its REGISTER."""
    endpoint.start(now)
    (register,) = sent(endpoint, "REGISTER")
    granted = register.headers.get("Expires") or ""
    answer(endpoint, register, 200, now, [("Expires", granted)], to_tag="reg1")


def active(endpoint: SipEndpoint, now: float = 0.0) -> SipRequest:
    """Registered and subscribed to the one watched extension; the SUBSCRIBE it took."""
    registered(endpoint, now)
    request = subscribe(endpoint)
    answer(endpoint, request, 200, now, [("Expires", "600"), ("Contact", f"<{PRESENCE_CONTACT}>")])
    return request


def notify(
    endpoint: SipEndpoint,
    subscribe_request: SipRequest,
    now: float,
    *,
    state: str = "active;expires=600",
    body: bytes = EARLY,
    from_tag: str = "pres1",
    cseq: int = 1,
    branch: str = "z9hG4bKnotify1",
    call_id: str | None = None,
    event: str = "dialog",
) -> None:
    our_tag = parse_name_addr(subscribe_request.headers.get("From") or "").tag
    target = parse_name_addr(subscribe_request.headers.get("To") or "").uri
    assert hasattr(target, "user")
    data = build_request(
        "NOTIFY",
        "sip:callpop@192.0.2.1:5070",
        [
            ("Via", f"SIP/2.0/UDP {PBX[0]}:{PBX[1]};branch={branch}"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{target.user}@pbx.example>;tag={from_tag}"),
            ("To", f"<sip:callpop@pbx.example>;tag={our_tag}"),
            ("Call-ID", call_id or subscribe_request.call_id),
            ("CSeq", f"{cseq} NOTIFY"),
            ("Contact", f"<{PRESENCE_CONTACT}>"),
            ("Event", event),
            ("Subscription-State", state),
            ("Content-Type", "application/dialog-info+xml"),
        ],
        body,
    )
    endpoint.receive_datagram(data, PBX, now)


def responses(endpoint: SipEndpoint) -> list[SipResponse]:
    out = []
    for data, destination in endpoint.datagrams_to_send():
        message = parse_message(data)
        assert isinstance(message, SipResponse)
        assert destination == PBX
        out.append(message)
    return out


def drain(endpoint: SipEndpoint) -> list[Event]:
    out = []
    while (event := endpoint.next_event()) is not None:
        out.append(event)
    return out


def changes(endpoint: SipEndpoint) -> list[tuple[str, SubscriptionState, str]]:
    return [
        (e.extension, e.state, e.detail)
        for e in drain(endpoint)
        if isinstance(e, SubscriptionChanged)
    ]


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def auth_params(value: str) -> dict[str, str]:
    scheme, _, rest = value.partition(" ")
    assert scheme == "Digest"
    params = {}
    for part in rest.split(", "):
        name, _, raw = part.partition("=")
        params[name] = raw.strip('"')
    return params


def tag_of(header: str | None) -> str | None:
    return parse_name_addr(header or "").tag


# --- subscribing ------------------------------------------------------------------------


def test_no_subscribe_before_registration_then_one_per_extension_staggered() -> None:
    endpoint = make_endpoint(watch_extensions=("201", "202"))
    endpoint.start(0.0)
    assert sent(endpoint, "SUBSCRIBE") == []  # the PBX does not know us yet
    endpoint = make_endpoint(watch_extensions=("201", "202"))
    registered(endpoint, 1.0)
    first = subscribe(endpoint)
    assert first.uri == "sip:201@pbx.example"
    assert first.headers.get("Event") == "dialog"
    assert first.headers.get("Accept") == "application/dialog-info+xml"
    assert first.headers.get("Expires") == "600"
    assert first.headers.get("Contact") == "<sip:callpop@192.0.2.1:5070;transport=udp>"
    assert (
        parse_name_addr(first.headers.get("From") or "").uri
        == parse_name_addr("<sip:callpop@pbx.example>").uri
    )
    assert tag_of(first.headers.get("To")) is None  # a new dialog
    # The second extension's SUBSCRIBE follows after the spacing, not in the same burst.
    assert endpoint.get_timer() == pytest.approx(1.0 + SUBSCRIBE_SPACING)
    endpoint.handle_timer(1.0 + SUBSCRIBE_SPACING)
    second = subscribe(endpoint)
    assert second.uri == "sip:202@pbx.example"
    assert second.call_id != first.call_id
    assert changes(endpoint) == [
        ("201", SubscriptionState.SUBSCRIBING, ""),
        ("202", SubscriptionState.SUBSCRIBING, ""),
    ]


@pytest.mark.parametrize(
    ("status", "challenge_header", "answer_header"),
    [
        (401, "WWW-Authenticate", "Authorization"),
        (407, "Proxy-Authenticate", "Proxy-Authorization"),
    ],
)
def test_challenge_then_authenticated_subscribe_then_active(
    status: int, challenge_header: str, answer_header: str
) -> None:
    endpoint = make_endpoint()
    registered(endpoint)
    first = subscribe(endpoint)
    challenge = 'Digest realm="pbx.example", nonce="n0nce", qop="auth", algorithm=MD5'
    answer(endpoint, first, status, 0.1, [(challenge_header, challenge)])
    second = subscribe(endpoint)
    # RFC 3261 §22.2: the same request again: same Call-ID and From tag, next CSeq.
    assert second.call_id == first.call_id
    assert tag_of(second.headers.get("From")) == tag_of(first.headers.get("From"))
    assert second.cseq == (2, "SUBSCRIBE")
    params = auth_params(second.headers.get(answer_header) or "")
    assert params["username"] == "callpop"
    assert params["uri"] == "sip:201@pbx.example"
    ha1 = md5(f"callpop:pbx.example:{PASSWORD}")
    ha2 = md5("SUBSCRIBE:sip:201@pbx.example")
    assert params["response"] == md5(f"{ha1}:n0nce:{params['nc']}:{params['cnonce']}:auth:{ha2}")
    drain(endpoint)
    answer(endpoint, second, 200, 0.2, [("Expires", "600")])
    assert changes(endpoint) == [("201", SubscriptionState.ACTIVE, "active for 600 s")]
    assert endpoint.subscription_states == {"201": SubscriptionState.ACTIVE}
    stats = endpoint.stats
    assert stats["subscriptions_active"] == 1
    assert stats["subscribes_sent"] == 2
    assert stats["subscription_failures"] == 0


def test_rejected_credentials_fail_and_retry() -> None:
    endpoint = make_endpoint()
    registered(endpoint)
    challenge = [("Proxy-Authenticate", 'Digest realm="r", nonce="a", qop="auth"')]
    answer(endpoint, subscribe(endpoint), 407, 0.0, challenge)
    answer(endpoint, subscribe(endpoint), 407, 0.0, challenge)
    (change,) = [c for c in changes(endpoint) if c[1] is not SubscriptionState.SUBSCRIBING]
    assert change[1] is SubscriptionState.FAILED
    assert "credentials rejected" in change[2]
    assert endpoint.stats["subscription_failures"] == 1


# --- NOTIFY -----------------------------------------------------------------------------


def test_notify_is_handed_up_as_bytes_and_answered_200_once() -> None:
    endpoint = make_endpoint()
    request = active(endpoint)
    drain(endpoint)
    notify(endpoint, request, 5.0)
    (ok,) = responses(endpoint)
    assert (ok.status, ok.cseq) == (200, (1, "NOTIFY"))
    assert tag_of(ok.headers.get("To")) == tag_of(request.headers.get("From"))
    (event,) = drain(endpoint)
    assert event == DialogNotified(
        extension="201", body=EARLY, content_type="application/dialog-info+xml", at=5.0
    )
    # A retransmission gets the same 200 and no second event (RFC 3261 §17.2.2).
    notify(endpoint, request, 5.5)
    assert [r.status for r in responses(endpoint)] == [200]
    assert drain(endpoint) == []
    assert endpoint.stats["notifies_received"] == 1


def test_notify_before_the_2xx_is_accepted_and_makes_the_dialog() -> None:
    endpoint = make_endpoint()
    registered(endpoint)
    request = subscribe(endpoint)
    drain(endpoint)
    # RFC 6665 §4.1.2.4: the NOTIFY overtook the 200 to SUBSCRIBE.
    notify(endpoint, request, 0.1, from_tag="early-tag")
    assert [r.status for r in responses(endpoint)] == [200]
    assert [type(e) for e in drain(endpoint)] == [DialogNotified]
    answer(endpoint, request, 200, 0.2, [("Expires", "600")], to_tag="early-tag")
    assert changes(endpoint)[-1][1] is SubscriptionState.ACTIVE
    endpoint.handle_timer(0.2 + 480)
    refresh = subscribe(endpoint)
    assert tag_of(refresh.headers.get("To")) == "early-tag"
    assert refresh.uri == PRESENCE_CONTACT  # the NOTIFY's Contact is the remote target


def test_unmatched_in_dialog_notify_gets_481_out_of_dialog_200() -> None:
    endpoint = make_endpoint()
    request = active(endpoint)
    drain(endpoint)
    notify(endpoint, request, 1.0, call_id="someone-else@pbx", branch="z9hG4bKx1")
    notify(endpoint, request, 1.0, from_tag="a-forked-notifier", branch="z9hG4bKx2")
    notify(endpoint, request, 1.0, event="presence", branch="z9hG4bKx3")
    assert [r.status for r in responses(endpoint)] == [481, 481, 481]
    assert drain(endpoint) == []
    # An unsolicited NOTIFY (no To tag, e.g. message-summary) is still acknowledged.
    unsolicited = build_request(
        "NOTIFY",
        "sip:callpop@192.0.2.1:5070",
        [
            ("Via", f"SIP/2.0/UDP {PBX[0]}:{PBX[1]};branch=z9hG4bKmwi"),
            ("From", "<sip:pbx.example>;tag=m"),
            ("To", "<sip:callpop@pbx.example>"),
            ("Call-ID", "mwi@pbx"),
            ("CSeq", "1 NOTIFY"),
            ("Event", "message-summary"),
        ],
    )
    endpoint.receive_datagram(unsolicited, PBX, 1.0)
    assert [r.status for r in responses(endpoint)] == [200]
    assert endpoint.stats["notifies_unmatched"] == 3


def test_notify_body_over_the_limit_gets_413_and_is_counted() -> None:
    endpoint = make_endpoint()
    request = active(endpoint)
    drain(endpoint)
    notify(endpoint, request, 1.0, body=b"x" * (MAX_NOTIFY_BODY + 1))
    assert [r.status for r in responses(endpoint)] == [413]
    assert drain(endpoint) == []
    notify(endpoint, request, 1.1, body=b"x" * MAX_NOTIFY_BODY, cseq=2, branch="z9hG4bKn2")
    assert [r.status for r in responses(endpoint)] == [200]
    assert endpoint.stats["notifies_too_large"] == 1
    assert endpoint.subscription_states["201"] is SubscriptionState.ACTIVE


# --- refresh and recovery ---------------------------------------------------------------


def test_refresh_in_the_dialog_before_expiry() -> None:
    endpoint = make_endpoint()
    request = active(endpoint, 1.0)
    drain(endpoint)
    # Granted 600 s: refreshed at min(80 %, 30 s early) = 480 s after the 200.
    assert endpoint.get_timer() == pytest.approx(1.0 + 480)
    endpoint.handle_timer(480.9)
    assert sent(endpoint, "SUBSCRIBE") == []
    endpoint.handle_timer(481.0)
    refresh = subscribe(endpoint)
    assert refresh.call_id == request.call_id
    assert refresh.cseq == (2, "SUBSCRIBE")
    assert refresh.uri == PRESENCE_CONTACT
    assert tag_of(refresh.headers.get("To")) == "pres1"
    assert refresh.headers.get("Expires") == "600"
    answer(endpoint, refresh, 200, 481.1, [("Expires", "600")])
    assert changes(endpoint) == []  # still active: not news
    assert endpoint.get_timer() == pytest.approx(481.1 + 480)


def test_notify_with_a_shorter_expiry_brings_the_refresh_forward() -> None:
    endpoint = make_endpoint()
    request = active(endpoint)
    notify(endpoint, request, 10.0, state="active;expires=100")
    # RFC 6665 §4.1.3: the NOTIFY's expires wins when sooner; refresh 30 s before it.
    assert endpoint.get_timer() == pytest.approx(10.0 + 70)


def test_481_to_a_refresh_resubscribes_with_back_off() -> None:
    endpoint = make_endpoint()
    old = active(endpoint)
    drain(endpoint)
    endpoint.handle_timer(480.0)
    answer(endpoint, subscribe(endpoint), 481, 480.1)
    assert changes(endpoint) == [
        ("201", SubscriptionState.FAILED, "481 Call/Transaction Does Not Exist")
    ]
    assert endpoint.stats["subscriptions_active"] == 0
    endpoint.handle_timer(482.0)
    assert sent(endpoint, "SUBSCRIBE") == []  # back-off: retry_base = 2 s
    endpoint.handle_timer(482.1)
    fresh = subscribe(endpoint)
    assert fresh.call_id != old.call_id  # a new subscription is a new dialog
    assert tag_of(fresh.headers.get("To")) is None
    assert fresh.uri == "sip:201@pbx.example"
    # The old dialog is gone: its NOTIFYs get 481.
    notify(endpoint, old, 482.2)
    assert [r.status for r in responses(endpoint)] == [481]
    # Failing again doubles the wait, and Retry-After is honoured when longer.
    answer(endpoint, fresh, 503, 482.3, [("Retry-After", "30")])
    assert endpoint.get_timer() == pytest.approx(482.3 + 30)
    endpoint.handle_timer(482.3 + 30)
    answer(endpoint, subscribe(endpoint), 500, 513.0)
    assert endpoint.get_timer() == pytest.approx(513.0 + 8)  # 2, 4, 8 s
    endpoint.handle_timer(521.0)
    answer(endpoint, subscribe(endpoint), 200, 521.1, [("Expires", "600")])
    assert endpoint.subscription_states["201"] is SubscriptionState.ACTIVE
    assert endpoint.stats["subscription_failures"] == 3


def test_no_response_is_retransmitted_then_resubscribed_after_timer_f() -> None:
    endpoint = make_endpoint()
    registered(endpoint)
    first = subscribe(endpoint)
    drain(endpoint)
    endpoint.handle_timer(0.5)  # Timer E
    (again,) = sent(endpoint, "SUBSCRIBE")
    assert again.headers.get("Via") == first.headers.get("Via")  # the same transaction
    now = 0.5
    while (timer := endpoint.get_timer()) is not None and timer < TIMER_F:
        now = timer
        endpoint.handle_timer(now)
        sent(endpoint, "SUBSCRIBE")
    endpoint.handle_timer(TIMER_F)
    assert changes(endpoint) == [("201", SubscriptionState.FAILED, "no response (Timer F)")]
    endpoint.handle_timer(TIMER_F + 2.0)
    retry = subscribe(endpoint)
    assert retry.call_id != first.call_id


def test_terminated_notify_resubscribes_after_back_off_or_retry_after() -> None:
    endpoint = make_endpoint()
    request = active(endpoint)
    drain(endpoint)
    notify(endpoint, request, 10.0, state="terminated;reason=deactivated", body=b"")
    assert [r.status for r in responses(endpoint)] == [200]
    assert changes(endpoint) == [
        ("201", SubscriptionState.TERMINATED, "terminated by the PBX (reason=deactivated)")
    ]
    assert endpoint.get_timer() == pytest.approx(12.0)
    endpoint.handle_timer(12.0)
    fresh = subscribe(endpoint)
    assert fresh.call_id != request.call_id
    answer(endpoint, fresh, 200, 12.1, [("Expires", "600")])
    notify(
        endpoint, fresh, 20.0, state="terminated;reason=probation;retry-after=90", branch="z9hG4bKt"
    )
    assert endpoint.get_timer() == pytest.approx(20.0 + 90)


def test_two_extensions_are_independent() -> None:
    endpoint = make_endpoint(watch_extensions=("201", "202"))
    registered(endpoint)
    first = subscribe(endpoint)
    endpoint.handle_timer(SUBSCRIBE_SPACING)
    second = subscribe(endpoint)
    assert (first.uri, second.uri) == ("sip:201@pbx.example", "sip:202@pbx.example")
    drain(endpoint)
    answer(endpoint, first, 200, 0.1, [("Expires", "600")])
    answer(endpoint, second, 404, 0.1)
    assert changes(endpoint) == [
        ("201", SubscriptionState.ACTIVE, "active for 600 s"),
        ("202", SubscriptionState.FAILED, "404 Not Found"),
    ]
    notify(endpoint, first, 1.0)
    (event,) = drain(endpoint)
    assert isinstance(event, DialogNotified) and event.extension == "201"
    responses(endpoint)
    endpoint.handle_timer(2.1)  # 202 retries; 201 is not touched
    (retry,) = sent(endpoint, "SUBSCRIBE")
    assert retry.uri == "sip:202@pbx.example"
    assert endpoint.subscription_states == {
        "201": SubscriptionState.ACTIVE,
        "202": SubscriptionState.SUBSCRIBING,
    }
    stats = endpoint.stats
    assert (stats["subscriptions_watched"], stats["subscriptions_active"]) == (2, 1)


def test_registration_re_established_restarts_the_subscriptions() -> None:
    endpoint = make_endpoint(expires=300)
    old = active(endpoint)
    drain(endpoint)
    endpoint.handle_timer(240.0)  # REGISTER refresh (80 % of 300 s) ...
    (register,) = sent(endpoint, "REGISTER")
    answer(endpoint, register, 503, 240.1, to_tag="reg1")  # ... the PBX is restarting
    assert [type(e) for e in drain(endpoint)] == [RegistrationChanged]
    endpoint.handle_timer(242.1)
    (register,) = sent(endpoint, "REGISTER")
    answer(endpoint, register, 200, 242.2, [("Expires", "300")], to_tag="reg2")
    fresh = subscribe(endpoint)
    assert fresh.call_id != old.call_id
    assert tag_of(fresh.headers.get("To")) is None
    assert changes(endpoint) == [("201", SubscriptionState.SUBSCRIBING, "")]


def test_stop_unsubscribes_with_expires_zero() -> None:
    endpoint = make_endpoint()
    request = active(endpoint)
    drain(endpoint)
    endpoint.stop(5.0)
    unsubscribe = subscribe(endpoint)
    assert unsubscribe.headers.get("Expires") == "0"  # RFC 6665 §4.1.2.3
    assert unsubscribe.call_id == request.call_id
    answer(endpoint, unsubscribe, 200, 5.1)
    assert ("201", SubscriptionState.TERMINATED, "unsubscribed") in changes(endpoint)


def test_watch_list_is_bounded_and_checked() -> None:
    make_endpoint(watch_extensions=tuple(str(1000 + i) for i in range(MAX_WATCHED)))
    with pytest.raises(ValueError, match="at most 500"):
        make_endpoint(watch_extensions=tuple(str(1000 + i) for i in range(MAX_WATCHED + 1)))
    with pytest.raises(ValueError, match="extension"):
        make_endpoint(watch_extensions=("201>\r\nX-Evil: 1",))
    # Trunk mode has no registrar to subscribe through: nothing is watched.
    trunk = SipEndpoint(
        EndpointConfig(
            mode="trunk", local_host="192.0.2.1", local_port=5070, watch_extensions=("201",)
        )
    )
    trunk.start(0.0)
    assert trunk.datagrams_to_send() == [] and trunk.stats["subscriptions_watched"] == 0


def test_refresh_follows_the_record_route_of_the_2xx_in_reverse() -> None:
    endpoint = make_endpoint()
    registered(endpoint)
    request = subscribe(endpoint)
    record_route = [
        ("Record-Route", "<sip:edge.pbx.example;lr>"),
        ("Record-Route", "<sip:core.pbx.example;lr>"),
    ]
    answer(endpoint, request, 200, 0.0, [("Expires", "600"), *record_route])
    endpoint.handle_timer(480.0)
    refresh = subscribe(endpoint)
    # RFC 3261 §12.1.2: the UAC's route set is the Record-Route list in reverse.
    assert refresh.headers.get_all("Route") == [
        "<sip:core.pbx.example;lr>",
        "<sip:edge.pbx.example;lr>",
    ]
    assert request.headers.get_all("Route") == []
