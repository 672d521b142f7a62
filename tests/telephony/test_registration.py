"""The REGISTER client through the sans-I/O endpoint: bytes in, bytes/events/timers out.

A small registrar is played here with the project's own message builder: it reads the
REGISTER the endpoint sent and answers it the way a PBX would (401 with a digest
challenge, 423, 200 with the granted expiry, silence). Time only moves when a test
passes a later ``now``.
"""

from __future__ import annotations

import hashlib

import pytest

from telephony.endpoint import EndpointConfig, SipEndpoint
from telephony.events import RegistrationChanged, RegistrationState
from telephony.message import SipRequest, build_response, parse_message
from telephony.uri import parse_name_addr

REGISTRAR = ("192.0.2.10", 5060)
PASSWORD = "s3cret"


def make_endpoint(**overrides: object) -> SipEndpoint:
    fields: dict[str, object] = {
        "mode": "register",
        "local_host": "192.0.2.1",
        "local_port": 5070,
        "registrar_host": REGISTRAR[0],
        "registrar_port": REGISTRAR[1],
        "domain": "pbx.example",
        "user": "callpop",
        "auth_user": "callpop",
        "password": PASSWORD,
        "expires": 300,
    }
    fields.update(overrides)
    return SipEndpoint(EndpointConfig(**fields))  # type: ignore[arg-type]


def sent_register(endpoint: SipEndpoint) -> SipRequest:
    out = endpoint.datagrams_to_send()
    assert len(out) == 1, out
    data, destination = out[0]
    assert destination == REGISTRAR
    request = parse_message(data)
    assert isinstance(request, SipRequest) and request.method == "REGISTER"
    return request


def events(endpoint: SipEndpoint) -> list[RegistrationChanged]:
    out = []
    while (event := endpoint.next_event()) is not None:
        assert isinstance(event, RegistrationChanged)
        out.append(event)
    return out


def answer(
    endpoint: SipEndpoint,
    request: SipRequest,
    status: int,
    now: float,
    headers: list[tuple[str, str]] | None = None,
) -> None:
    data = build_response(request, status, to_tag="reg1", headers=headers or [])
    endpoint.receive_datagram(data, REGISTRAR, now)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def auth_params(value: str) -> dict[str, str]:
    scheme, _, rest = value.partition(" ")
    assert scheme == "Digest"
    params = {}
    for part in rest.split(", "):
        name, _, raw = part.partition("=")
        params[name] = raw.strip('"')
    return params


def test_first_register_has_contact_expires_and_aor() -> None:
    endpoint = make_endpoint()
    endpoint.start(0.0)
    request = sent_register(endpoint)
    assert request.uri == "sip:pbx.example"
    assert request.headers.get("Contact") == "<sip:callpop@192.0.2.1:5070;transport=udp>"
    assert request.headers.get("Expires") == "300"
    assert (
        parse_name_addr(request.headers.get("To") or "").uri
        == parse_name_addr("<sip:callpop@pbx.example>").uri
    )
    assert request.cseq == (1, "REGISTER")
    assert [e.state for e in events(endpoint)] == [RegistrationState.REGISTERING]
    assert endpoint.registration_state is RegistrationState.REGISTERING


@pytest.mark.parametrize(
    ("algorithm", "h"),
    [("MD5", md5), ("SHA-256", sha256)],
)
def test_401_digest_then_200(algorithm: str, h: object) -> None:
    hash_ = h  # keeps mypy and the parametrize id simple
    assert callable(hash_)
    endpoint = make_endpoint()
    endpoint.start(0.0)
    first = sent_register(endpoint)
    events(endpoint)
    challenge = f'Digest realm="pbx.example", nonce="n0nce", qop="auth", algorithm={algorithm}'
    answer(endpoint, first, 401, 0.05, [("WWW-Authenticate", challenge)])
    second = sent_register(endpoint)
    assert second.cseq == (2, "REGISTER")
    assert second.call_id == first.call_id  # RFC 3261 §10.2: one Call-ID per binding
    params = auth_params(second.headers.get("Authorization") or "")
    assert params["username"] == "callpop"
    assert params["uri"] == "sip:pbx.example"
    assert params["algorithm"] == algorithm
    ha1 = hash_(f"callpop:pbx.example:{PASSWORD}")
    ha2 = hash_("REGISTER:sip:pbx.example")
    expected = hash_(f"{ha1}:n0nce:{params['nc']}:{params['cnonce']}:auth:{ha2}")
    assert params["response"] == expected

    answer(
        endpoint,
        second,
        200,
        0.1,
        [("Contact", "<sip:callpop@192.0.2.1:5070;transport=udp>;expires=120")],
    )
    (registered,) = events(endpoint)
    assert registered.state is RegistrationState.REGISTERED
    assert registered.expires_at == pytest.approx(0.1 + 120)
    assert endpoint.registration_state is RegistrationState.REGISTERED
    # Refresh at min(0.8 * 120, 120 - 30) = 90 s after the 200.
    assert endpoint.get_timer() == pytest.approx(0.1 + 90)
    endpoint.handle_timer(90.1)
    refresh = sent_register(endpoint)
    assert refresh.cseq == (3, "REGISTER")
    # The last challenge is answered again with the next nonce count.
    assert auth_params(refresh.headers.get("Authorization") or "")["nc"] == "00000002"
    assert events(endpoint) == []  # still registered while refreshing


def test_407_proxy_authenticate_answered_with_proxy_authorization() -> None:
    endpoint = make_endpoint()
    endpoint.start(0.0)
    first = sent_register(endpoint)
    answer(endpoint, first, 407, 0.1, [("Proxy-Authenticate", 'Digest realm="x", nonce="y"')])
    second = sent_register(endpoint)
    assert second.headers.get("Authorization") is None
    params = auth_params(second.headers.get("Proxy-Authorization") or "")
    expected = md5(f"{md5(f'callpop:x:{PASSWORD}')}:y:{md5('REGISTER:sip:pbx.example')}")
    assert params["response"] == expected  # no qop: RFC 2069 style


def test_wrong_password_fails_then_keeps_retrying_with_backoff() -> None:
    endpoint = make_endpoint()
    endpoint.start(0.0)
    challenge = [("WWW-Authenticate", 'Digest realm="r", nonce="a", qop="auth"')]
    answer(endpoint, sent_register(endpoint), 401, 0.0, challenge)
    answer(endpoint, sent_register(endpoint), 401, 0.0, challenge)
    states = events(endpoint)
    assert states[-1].state is RegistrationState.FAILED
    assert "401" in states[-1].detail
    delays = []
    now = 0.0
    for _ in range(7):
        timer = endpoint.get_timer()
        assert timer is not None
        delays.append(timer - now)
        now = timer
        endpoint.handle_timer(now)
        # Cached credentials first, then a fresh challenge, rejected again.
        answer(endpoint, sent_register(endpoint), 401, now, challenge)
        answer(endpoint, sent_register(endpoint), 401, now, challenge)
    assert delays == [2, 4, 8, 16, 32, 60, 60]
    assert endpoint.registration_state is RegistrationState.FAILED
    assert events(endpoint) == []  # the same failure again is not news


def test_stale_nonce_is_answered_again_not_failed() -> None:
    endpoint = make_endpoint()
    endpoint.start(0.0)
    answer(
        endpoint,
        sent_register(endpoint),
        401,
        0.0,
        [("WWW-Authenticate", 'Digest realm="r", nonce="a", qop="auth"')],
    )
    answer(
        endpoint,
        sent_register(endpoint),
        401,
        0.1,
        [("WWW-Authenticate", 'Digest realm="r", nonce="b", qop="auth", stale=true')],
    )
    third = sent_register(endpoint)
    assert auth_params(third.headers.get("Authorization") or "")["nonce"] == "b"
    answer(endpoint, third, 200, 0.2, [("Expires", "300")])
    assert endpoint.registration_state is RegistrationState.REGISTERED


def test_no_password_configured_fails_on_challenge() -> None:
    endpoint = make_endpoint(password="")
    endpoint.start(0.0)
    answer(endpoint, sent_register(endpoint), 401, 0.0, [("WWW-Authenticate", 'Digest nonce="a"')])
    assert endpoint.registration_state is RegistrationState.FAILED
    assert "no password" in events(endpoint)[-1].detail


def test_423_uses_min_expires() -> None:
    endpoint = make_endpoint(expires=30)
    endpoint.start(0.0)
    answer(endpoint, sent_register(endpoint), 423, 0.0, [("Min-Expires", "600")])
    retry = sent_register(endpoint)
    assert retry.headers.get("Expires") == "600"
    answer(endpoint, retry, 200, 0.1)  # no Contact, no Expires: what we asked is granted
    assert endpoint.registration_state is RegistrationState.REGISTERED
    assert endpoint.get_timer() == pytest.approx(0.1 + 480)  # min(0.8 * 600, 600 - 30)


def test_granted_expiry_from_expires_header_and_short_grant_floor() -> None:
    endpoint = make_endpoint()
    endpoint.start(0.0)
    answer(
        endpoint,
        sent_register(endpoint),
        200,
        1.0,
        [("Contact", "<sip:someone-else@198.51.100.7>;expires=3600"), ("Expires", "4")],
    )
    assert endpoint.registration_state is RegistrationState.REGISTERED
    assert endpoint.get_timer() == pytest.approx(1.0 + 5)  # never below 5 s


def test_no_response_retransmits_then_times_out_and_recovers() -> None:
    endpoint = make_endpoint()
    endpoint.start(0.0)
    first = sent_register(endpoint)
    events(endpoint)
    # RFC 3261 §17.1.2.2 Timer E: 0.5, 1, 2, 4, 4, 4 ... until Timer F (32 s).
    retransmits = []
    while True:
        timer = endpoint.get_timer()
        assert timer is not None
        endpoint.handle_timer(timer)
        if endpoint.registration_state is RegistrationState.FAILED:
            break
        again = sent_register(endpoint)
        assert again.headers.get("Via") == first.headers.get("Via")
        retransmits.append(timer)
    assert retransmits[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert timer == pytest.approx(32.0)
    assert endpoint.stats["registrations"] == 1
    (failed,) = events(endpoint)
    assert failed.detail == "no response from registrar"
    # Back-off: the next attempt two seconds later is a new transaction, answered.
    assert endpoint.get_timer() == pytest.approx(34.0)
    endpoint.handle_timer(34.0)
    retry = sent_register(endpoint)
    assert retry.headers.get("Via") != first.headers.get("Via")
    assert endpoint.stats["bindings_confirmed"] == 0
    answer(endpoint, retry, 200, 34.1, [("Expires", "300")])
    (registered,) = events(endpoint)
    assert registered.state is RegistrationState.REGISTERED
    assert endpoint.stats["registrations"] == 2
    assert endpoint.stats["bindings_confirmed"] == 1


def test_provisional_slows_retransmission_to_t2() -> None:
    endpoint = make_endpoint()
    endpoint.start(0.0)
    first = sent_register(endpoint)
    answer(endpoint, first, 100, 0.1)
    assert endpoint.get_timer() == pytest.approx(4.1)


def test_failure_response_and_backoff_reset_after_success() -> None:
    endpoint = make_endpoint()
    endpoint.start(0.0)
    answer(endpoint, sent_register(endpoint), 403, 0.0)
    failed = events(endpoint)[-1]
    assert failed.state is RegistrationState.FAILED and failed.detail == "403 Forbidden"
    endpoint.handle_timer(2.0)
    answer(endpoint, sent_register(endpoint), 503, 2.0)
    assert endpoint.get_timer() == pytest.approx(2.0 + 4)
    endpoint.handle_timer(6.0)
    answer(endpoint, sent_register(endpoint), 200, 6.0, [("Expires", "60")])
    assert endpoint.registration_state is RegistrationState.REGISTERED
    assert endpoint.stats["bindings_confirmed"] == 1
    # Refresh fails: back-off starts again at the base delay.
    endpoint.handle_timer(6.0 + 30)
    answer(endpoint, sent_register(endpoint), 500, 36.0)
    assert endpoint.registration_state is RegistrationState.FAILED
    assert endpoint.get_timer() == pytest.approx(36.0 + 2)


def test_stray_and_duplicate_responses_are_ignored() -> None:
    endpoint = make_endpoint()
    endpoint.start(0.0)
    first = sent_register(endpoint)
    answer(endpoint, first, 200, 0.1, [("Expires", "300")])
    events(endpoint)
    answer(endpoint, first, 200, 0.2, [("Expires", "300")])  # duplicate
    answer(endpoint, first, 403, 0.3)  # late and contradicting
    assert endpoint.registration_state is RegistrationState.REGISTERED
    assert events(endpoint) == []
    assert endpoint.stats["stray_responses"] == 2
    assert endpoint.datagrams_to_send() == []


def test_stop_unregisters_with_expires_zero() -> None:
    endpoint = make_endpoint()
    endpoint.start(0.0)
    answer(endpoint, sent_register(endpoint), 200, 0.1, [("Expires", "300")])
    events(endpoint)
    endpoint.stop(5.0)
    bye = sent_register(endpoint)
    assert bye.headers.get("Expires") == "0"
    answer(endpoint, bye, 200, 5.1)
    (disabled,) = events(endpoint)
    assert disabled.state is RegistrationState.DISABLED
    assert endpoint.get_timer() is None


def test_registrar_host_is_allowed_to_send_invites_and_others_are_not() -> None:
    endpoint = make_endpoint()
    endpoint.start(0.0)
    endpoint.datagrams_to_send()
    options = (
        b"OPTIONS sip:callpop@192.0.2.1:5070 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKopt1\r\n"
        b"From: <sip:pbx@pbx.example>;tag=a\r\nTo: <sip:callpop@pbx.example>\r\n"
        b"Call-ID: opt1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    endpoint.receive_datagram(options, REGISTRAR, 1.0)
    ((data, destination),) = endpoint.datagrams_to_send()
    assert destination == REGISTRAR and data.startswith(b"SIP/2.0 200 ")
    endpoint.receive_datagram(options, ("198.51.100.66", 5060), 1.0)
    assert endpoint.datagrams_to_send() == []
    assert endpoint.stats["rejected_host"] == 1


def named_registrar_endpoint(**overrides: object) -> SipEndpoint:
    """Register mode with the registrar configured by name, resolved to REGISTRAR."""
    fields: dict[str, object] = {
        "mode": "register",
        "local_host": "192.0.2.1",
        "local_port": 5070,
        "registrar_host": "PBX.example.jp",
        "registrar_port": REGISTRAR[1],
        "password": PASSWORD,
    }
    fields.update(overrides)
    return SipEndpoint(EndpointConfig(**fields), registrar_addr=REGISTRAR)  # type: ignore[arg-type]


def test_aor_domain_defaults_to_the_registrar_host_as_configured() -> None:
    endpoint = named_registrar_endpoint()
    endpoint.start(0.0)
    request = sent_register(endpoint)  # sent to the resolved address
    # RFC 3261 §10.2: Request-URI sip:domain, To/From the AOR sip:user@domain. The name,
    # not the resolved address, is what the registrar knows itself by.
    assert request.uri == "sip:PBX.example.jp"
    for header in ("To", "From"):
        uri = parse_name_addr(request.headers.get(header) or "").uri
        assert uri == parse_name_addr("<sip:callpop@PBX.example.jp>").uri


def test_an_ipv6_registrar_is_a_bracketed_domain() -> None:
    endpoint = named_registrar_endpoint(registrar_host="2001:db8::10")
    endpoint.start(0.0)
    request = sent_register(endpoint)
    assert request.uri == "sip:[2001:db8::10]"  # RFC 3261 §25.1 IPv6reference
    assert "<sip:callpop@[2001:db8::10]>" in (request.headers.get("To") or "")


def test_a_configured_domain_wins_over_the_registrar_host() -> None:
    endpoint = named_registrar_endpoint(domain="office.example")
    endpoint.start(0.0)
    request = sent_register(endpoint)
    assert request.uri == "sip:office.example"
    assert "sip:callpop@office.example" in (request.headers.get("To") or "")


def test_the_registrar_is_allowed_without_being_listed() -> None:
    # allowed_hosts is empty: the endpoint adds the registrar (by its resolved address,
    # which is where its datagrams come from) itself.
    endpoint = named_registrar_endpoint(allowed_hosts=frozenset({"198.51.100.1"}))
    endpoint.start(0.0)
    endpoint.datagrams_to_send()
    options = (
        b"OPTIONS sip:callpop@192.0.2.1:5070 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKopt2\r\n"
        b"From: <sip:pbx@pbx.example>;tag=a\r\nTo: <sip:callpop@pbx.example>\r\n"
        b"Call-ID: opt2\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    for source in (REGISTRAR, ("198.51.100.1", 5060), ("::ffff:192.0.2.10", 5060)):
        endpoint.receive_datagram(options, source, 1.0)
        assert [data[:12] for data, _ in endpoint.datagrams_to_send()] == [b"SIP/2.0 200 "]
    endpoint.receive_datagram(options, ("198.51.100.66", 5060), 1.0)
    assert endpoint.datagrams_to_send() == []
    assert endpoint.stats["rejected_host"] == 1


def test_register_mode_without_a_registrar_is_refused() -> None:
    with pytest.raises(ValueError, match="registrar_host"):
        make_endpoint(registrar_host="")


def test_huge_expires_is_capped_and_unusable_min_expires_fails_cleanly() -> None:
    endpoint = make_endpoint()
    endpoint.start(0.0)
    # RFC 3261 §20.19: at most 2**32-1 seconds; 5000 digits must not reach int().
    answer(endpoint, sent_register(endpoint), 200, 1.0, [("Expires", "9" * 5000)])
    (registered,) = events(endpoint)[-1:]
    assert registered.detail == f"registered for {2**32 - 1} s"
    assert endpoint.get_timer() == pytest.approx(1.0 + 0.8 * (2**32 - 1))

    for min_expires in ("\u00b2", "-600", "9" * 5000):
        other = make_endpoint(expires=30)
        other.start(0.0)
        answer(other, sent_register(other), 423, 0.0, [("Min-Expires", min_expires)])
        assert other.stats["internal_errors"] == 0
        if min_expires.startswith("9"):
            assert sent_register(other).headers.get("Expires") == str(2**32 - 1)
        else:
            assert other.datagrams_to_send() == []
            assert other.registration_state is RegistrationState.FAILED


def test_zero_padded_min_expires_is_read_as_its_value() -> None:
    endpoint = make_endpoint(expires=30)
    endpoint.start(0.0)
    answer(endpoint, sent_register(endpoint), 423, 0.0, [("Min-Expires", "0" * 5000 + "600")])
    assert sent_register(endpoint).headers.get("Expires") == "600"
