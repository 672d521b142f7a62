"""Digest authentication arithmetic against the RFCs' own worked examples."""

from __future__ import annotations

import hashlib

import pytest

from telephony.digest import (
    Challenge,
    Credentials,
    DigestError,
    authorization,
    choose_challenge,
    compute_response,
    parse_challenge,
)

# RFC 7616 §3.9.1: user "Mufasa", password "Circle of Life", GET /dir/index.html.
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
MUFASA = Credentials(username="Mufasa", password="Circle of Life")


def rfc7616_challenge(algorithm: str) -> str:
    return (
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", '
        f'algorithm={algorithm}, nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_example_responses(algorithm: str, expected: str) -> None:
    challenge = parse_challenge(rfc7616_challenge(algorithm))
    assert challenge.realm == "http-auth@example.org"
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.opaque == RFC7616_OPAQUE
    response = compute_response(
        challenge, MUFASA, method="GET", uri="/dir/index.html", cnonce=RFC7616_CNONCE, nc=1
    )
    assert response == expected


def test_rfc7616_authorization_header_fields() -> None:
    challenge = parse_challenge(rfc7616_challenge("SHA-256"))
    value = authorization(
        challenge, MUFASA, method="GET", uri="/dir/index.html", nc=1, cnonce=RFC7616_CNONCE
    )
    assert value.startswith("Digest ")
    assert 'username="Mufasa"' in value
    assert 'uri="/dir/index.html"' in value
    assert "algorithm=SHA-256" in value
    assert "qop=auth," in value  # a token, unquoted (RFC 7616 §3.4)
    assert "nc=00000001" in value
    assert f'cnonce="{RFC7616_CNONCE}"' in value
    assert f'opaque="{RFC7616_OPAQUE}"' in value
    assert 'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"' in value


def test_rfc2617_example_with_unquoted_qop_and_nonce_count() -> None:
    # RFC 2617 §3.5.
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    response = compute_response(
        challenge,
        Credentials(username="Mufasa", password="Circle Of Life"),
        method="GET",
        uri="/dir/index.html",
        cnonce="0a4f113b",
        nc=1,
    )
    assert response == "6629fae49393a05397450978507c4ef1"


def test_no_qop_is_rfc2069_style() -> None:
    challenge = parse_challenge('Digest realm="pbx", nonce="abc123"')
    value = authorization(
        challenge,
        Credentials(username="callpop", password="pw"),
        method="REGISTER",
        uri="sip:pbx.example",
    )

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    expected = md5(f"{md5('callpop:pbx:pw')}:abc123:{md5('REGISTER:sip:pbx.example')}")
    assert f'response="{expected}"' in value
    assert "qop=" not in value and "cnonce=" not in value and "nc=" not in value


def test_sess_variant_mixes_nonces_into_a1() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth", algorithm=MD5-sess')
    assert challenge.is_session and challenge.base_algorithm == "MD5"

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{md5('u:r:p')}:n:c")
    expected = md5(f"{ha1}:n:00000002:c:auth:{md5('REGISTER:sip:r')}")
    got = compute_response(
        challenge,
        Credentials(username="u", password="p"),
        method="REGISTER",
        uri="sip:r",
        cnonce="c",
        nc=2,
    )
    assert got == expected
    rendered = authorization(
        challenge, Credentials(username="u", password="p"), method="REGISTER", uri="sip:r"
    )
    assert "algorithm=MD5-sess" in rendered


def test_parse_quoted_pairs_commas_and_stale() -> None:
    challenge = parse_challenge(
        'Digest realm="a \\"quoted\\", realm",nonce="x,y",stale=TRUE,algorithm="md5"'
    )
    assert challenge.realm == 'a "quoted", realm'
    assert challenge.nonce == "x,y"
    assert challenge.stale is True
    assert challenge.algorithm == "MD5"


def test_choose_prefers_sha256_over_md5() -> None:
    chosen = choose_challenge(
        [
            'Digest realm="r", nonce="n1", algorithm=MD5, qop="auth"',
            'Digest realm="r", nonce="n2", algorithm=SHA-256, qop="auth"',
        ]
    )
    assert chosen == Challenge(realm="r", nonce="n2", algorithm="SHA-256", qop=("auth",))


@pytest.mark.parametrize(
    "value",
    [
        'Basic realm="r"',
        'Digest realm="r"',  # no nonce
        'Digest realm="r", nonce="n", algorithm=SHA-1',
    ],
)
def test_unanswerable_challenges(value: str) -> None:
    with pytest.raises(DigestError):
        parse_challenge(value)
    with pytest.raises(DigestError):
        choose_challenge([value])


def test_auth_int_only_is_refused() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth-int"')
    with pytest.raises(DigestError, match="qop"):
        authorization(challenge, MUFASA, method="REGISTER", uri="sip:r")
