"""HTTP Digest authentication for SIP requests (RFC 3261 §22, RFC 7616, RFC 8760).

This module owns the arithmetic of a digest challenge: parsing a ``WWW-Authenticate`` /
``Proxy-Authenticate`` value, computing the response for MD5, SHA-256 and their
``-sess`` variants with ``qop=auth`` (cnonce + nonce count) or without qop (RFC 2069),
and rendering the ``Authorization`` / ``Proxy-Authorization`` value. It knows nothing
of transactions, sockets or which request is being authenticated beyond its method
and Request-URI.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

# RFC 7616 §6.1 / RFC 8760 §2: the algorithms a SIP UA may meet. SHA-512-256 needs a
# hashlib built with it, so it is offered only where the platform has it.
_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}
if "sha512_256" in hashlib.algorithms_available:
    _HASHES["SHA-512-256"] = lambda data: hashlib.new("sha512_256", data).hexdigest()

# RFC 7616 §3.4.2: preference order when several challenges are offered.
_PREFERENCE = ("SHA-512-256", "SHA-256", "MD5")


class DigestError(ValueError):
    """A challenge that cannot be answered (not Digest, unknown algorithm, no nonce...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    """One parsed ``Digest`` challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"  # upper-cased, may end in "-SESS"
    qop: tuple[str, ...] = ()  # lower-cased options offered, e.g. ("auth", "auth-int")
    opaque: str | None = None
    stale: bool = False

    @property
    def base_algorithm(self) -> str:
        return self.algorithm.removesuffix("-SESS")

    @property
    def is_session(self) -> bool:
        return self.algorithm.endswith("-SESS")


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    username: str
    password: str


def _split_params(text: str) -> dict[str, str]:
    """Parse ``a=b, c="d, e"`` auth-params (RFC 7235 §2.1); names are lower-cased."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        start = i
        while i < n and text[i] not in "=, \t":
            i += 1
        name = text[start:i].strip().lower()
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != "=":
            # A bare token (no value) is not valid here; skip it rather than guess.
            continue
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            value_chars: list[str] = []
            while i < n and text[i] != '"':
                # RFC 7230 §3.2.6 quoted-pair.
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value_chars.append(text[i])
                i += 1
            i += 1  # closing quote (or end of text)
            value = "".join(value_chars)
        else:
            start = i
            while i < n and text[i] != ",":
                i += 1
            value = text[start:i].strip()
        if name:
            params[name] = value
    return params


def parse_challenge(value: str) -> Challenge:
    """Parse one ``WWW-Authenticate`` / ``Proxy-Authenticate`` header value."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"unsupported authentication scheme {scheme!r}")
    params = _split_params(rest)
    if "nonce" not in params:
        raise DigestError("digest challenge without nonce")
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm.removesuffix("-SESS") not in _HASHES:
        raise DigestError(f"unsupported digest algorithm {algorithm}")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(
        realm=params.get("realm", ""),
        nonce=params["nonce"],
        algorithm=algorithm,
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


def choose_challenge(values: list[str]) -> Challenge:
    """Pick the strongest answerable challenge among several (RFC 7616 §3.7 / RFC 8760 §2.4)."""
    usable: list[Challenge] = []
    errors: list[str] = []
    for value in values:
        try:
            usable.append(parse_challenge(value))
        except DigestError as exc:
            errors.append(str(exc))
    if not usable:
        raise DigestError("; ".join(errors) or "no challenge")
    usable.sort(key=lambda ch: _PREFERENCE.index(ch.base_algorithm))
    return usable[0]


def compute_response(
    challenge: Challenge,
    credentials: Credentials,
    *,
    method: str,
    uri: str,
    cnonce: str,
    nc: int,
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1, RFC 2617 §3.2.2.1 for the no-qop case)."""
    digest = _HASHES[challenge.base_algorithm]

    def h(text: str) -> str:
        return digest(text.encode("utf-8"))

    ha1 = h(f"{credentials.username}:{challenge.realm}:{credentials.password}")
    if challenge.is_session:
        # RFC 7616 §3.4.2: the -sess variants mix the nonces into A1.
        ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}")
    # Only qop=auth is offered: SIP bodies are not integrity-protected here (auth-int).
    ha2 = h(f"{method}:{uri}")
    if "auth" in challenge.qop:
        return h(f"{ha1}:{challenge.nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
    # RFC 2069 compatibility: no qop offered.
    return h(f"{ha1}:{challenge.nonce}:{ha2}")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(
    challenge: Challenge,
    credentials: Credentials,
    *,
    method: str,
    uri: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The full ``Authorization`` / ``Proxy-Authorization`` header value."""
    if challenge.qop and "auth" not in challenge.qop:
        raise DigestError(f"only qop=auth is supported, offered {','.join(challenge.qop)}")
    use_cnonce = challenge.is_session or "auth" in challenge.qop
    if cnonce is None:
        cnonce = secrets.token_hex(8)
    response = compute_response(
        challenge, credentials, method=method, uri=uri, cnonce=cnonce, nc=nc
    )
    parts = [
        f"username={_quote(credentials.username)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
        f"algorithm={challenge.base_algorithm}{'-sess' if challenge.is_session else ''}",
    ]
    if use_cnonce:
        parts.append(f"cnonce={_quote(cnonce)}")
    if "auth" in challenge.qop:
        # RFC 7616 §3.4: qop and nc are unquoted tokens.
        parts.append("qop=auth")
        parts.append(f"nc={nc:08x}")
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    return "Digest " + ", ".join(parts)
