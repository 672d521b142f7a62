"""SIP addressing syntax: URIs, name-addr and Via values (RFC 3261 §19.1, §20, §25.1; RFC 3966).

This module owns turning the text of one header value into structured data:
``sip:``/``sips:``/``tel:`` URIs (other schemes are kept opaque), ``"Display"
<uri>;params`` (From, To, Contact, P-Asserted-Identity, ...) and one Via value.
It knows nothing of whole messages, transactions, or what a caller number means.

Every failure is a ``SipParseError`` (a ``ValueError``) whose text says what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from telephony.message import SipParseError

__all__ = [
    "AbsoluteUri",
    "NameAddr",
    "SipUri",
    "TelUri",
    "Uri",
    "Via",
    "hostport",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "unescape",
]

_ALPHA = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME_CHARS = _ALPHA | frozenset("0123456789+-.")
# RFC 3261 §25.1 hostname/IPv4 characters ("_" tolerated: seen in the wild).
_HOST_CHARS = _ALPHA | frozenset("0123456789-._")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
# RFC 3261 §25.1: token; display-name tokens may also hold UTF-8 from lenient PBXs.
_TOKEN_CHARS = _ALPHA | frozenset("0123456789-.!%*_+`'~")
_WHITESPACE = frozenset(" \t\r\n")
_HEX = frozenset("0123456789abcdefABCDEF")
_ANGLE_QUOTE = frozenset('<>"')
# RFC 3966 §3: digits, visual separators, DTMF and (local numbers) hex digits.
_TEL_CHARS = _HEX | frozenset("0123456789+-.()*#pwPW")


@dataclass(frozen=True, slots=True)
class SipUri:
    scheme: str  # "sip" or "sips", lower-case
    user: str | None  # %-unescaped
    password: str | None
    host: str  # as written; IPv6 keeps its brackets
    port: int | None
    params: dict[str, str | None]  # names lower-case, values %-unescaped
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class TelUri:
    number: str  # as written, e.g. "+81-3-1234-5678" or "0312345678"
    params: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    scheme: str  # lower-case
    rest: str  # everything after the colon, opaque


Uri = SipUri | TelUri | AbsoluteUri


@dataclass(frozen=True, slots=True)
class NameAddr:
    display_name: str | None  # unquoted and unescaped; None when absent or empty
    uri: Uri
    params: dict[str, str | None]  # header parameters (after '>' or after an addr-spec)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


@dataclass(frozen=True, slots=True)
class Via:
    transport: str  # upper-case, e.g. "UDP"
    host: str
    port: int | None
    params: dict[str, str | None]  # names lower-case

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")


def hostport(host: str, port: int) -> str:
    """``host:port`` for a SIP URI or Via sent-by; an IPv6 address gets its brackets.

    RFC 3261 §25.1: ``hostport = host [ ":" port ]`` with ``host = hostname / IPv4address
    / IPv6reference`` and ``IPv6reference = "[" IPv6address "]"``. A host given already
    bracketed is kept as is.
    """
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def unescape(text: str) -> str:
    """Undo %HH escapes (RFC 3261 §19.1.2); a malformed escape is kept literally."""
    if "%" not in text:
        return text
    out = bytearray()
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if (
            char == "%"
            and index + 2 < length
            and text[index + 1] in _HEX
            and text[index + 2] in _HEX
        ):
            out.append(int(text[index + 1 : index + 3], 16))
            index += 3
            continue
        out.extend(char.encode("utf-8"))
        index += 1
    return out.decode("utf-8", errors="replace")


def _split_scheme(text: str) -> tuple[str, str]:
    scheme, colon, rest = text.partition(":")
    if not colon or not scheme or scheme[0] not in _ALPHA:
        raise SipParseError(f"URI without scheme: {text[:60]!r}")
    if not _SCHEME_CHARS.issuperset(scheme):
        raise SipParseError(f"bad URI scheme {scheme[:30]!r}")
    return scheme.lower(), rest


def parse_uri(text: str) -> Uri:
    """Parse one URI; ``sip``/``sips`` and ``tel`` structurally, other schemes opaquely."""
    if not text:
        raise SipParseError("empty URI")
    if not _WHITESPACE.isdisjoint(text):
        raise SipParseError(f"whitespace in URI {text[:60]!r}")  # RFC 4475 §3.1.2.14 badaspec
    scheme, rest = _split_scheme(text)
    if not rest:
        raise SipParseError(f"empty {scheme}: URI")
    if scheme in ("sip", "sips"):
        return _parse_sip_uri(scheme, rest)
    if scheme == "tel":
        return _parse_tel_uri(rest)
    if not _ANGLE_QUOTE.isdisjoint(rest):
        raise SipParseError(f"bad character in URI {text[:60]!r}")
    return AbsoluteUri(scheme, rest)


def _parse_params(text: str, *, escaped: bool) -> dict[str, str | None]:
    """``a=b;c;d=e`` -> dict; names lower-case. Empty pieces are an error (RFC 4475 badinv01)."""
    params: dict[str, str | None] = {}
    for piece in _split_semicolons(text) if '"' in text else text.split(";"):
        name, equals, value = piece.partition("=")
        name = name.strip(" \t")
        if not name:
            raise SipParseError(f"empty parameter in {text[:60]!r}")
        if escaped:
            name = unescape(name)
        value = value.strip(" \t")
        if equals:
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = _unquote(value[1:-1])
            elif escaped:
                value = unescape(value)
        params[name.lower()] = value if equals else None
    return params


def _parse_sip_uri(scheme: str, rest: str) -> SipUri:
    # RFC 3261 §25.1: userinfo may contain ';', '?' and ':' but never an unescaped '@',
    # and neither host, params nor headers may hold one: the first '@' ends userinfo.
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at != -1:
        userinfo, hostpart = rest[:at], rest[at + 1 :]
        raw_user, colon, raw_password = userinfo.partition(":")
        if not raw_user:
            raise SipParseError(f"empty user in {scheme}: URI")
        user = unescape(raw_user)
        password = unescape(raw_password) if colon else None
    else:
        hostpart = rest
    host_and_port, question, header_text = hostpart.partition("?")
    host_and_port, semi, param_text = host_and_port.partition(";")
    host, port = _parse_hostport(host_and_port)
    params = _parse_params(param_text, escaped=True) if semi else {}
    headers: dict[str, str] = {}
    if question:
        for piece in header_text.split("&"):
            name, equals, value = piece.partition("=")
            if not name or not equals:
                raise SipParseError(f"bad URI header {piece[:40]!r}")
            headers[unescape(name)] = unescape(value)
    return SipUri(scheme, user, password, host, port, params, headers)


def _parse_hostport(text: str) -> tuple[str, int | None]:
    if not text:
        raise SipParseError("empty host")
    if text[0] == "[":
        close = text.find("]")
        if close == -1:
            raise SipParseError(f"unterminated IPv6 reference {text[:60]!r}")
        host = text[: close + 1]
        if close == 1 or not _IPV6_CHARS.issuperset(text[1:close]):
            raise SipParseError(f"bad IPv6 reference {host[:60]!r}")
        after = text[close + 1 :]
        if after and after[0] != ":":
            raise SipParseError(f"bad host {text[:60]!r}")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text_raw = text.partition(":")
        if not host or not _HOST_CHARS.issuperset(host):
            raise SipParseError(f"bad host {host[:60]!r}")
        port_text = port_text_raw if colon else None
    if port_text is None:
        return host, None
    if not port_text or not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise SipParseError(f"bad port {port_text[:20]!r}")
    port = int(port_text)
    if port > 65535:
        raise SipParseError(f"port out of range: {port}")
    return host, port


def _parse_tel_uri(rest: str) -> TelUri:
    # RFC 3966 §3: telephone-subscriber = global-number / local-number, then ;par
    number, semi, param_text = rest.partition(";")
    if not number or not all(
        char.isascii() and (char.isalnum() or char in "+-.()*#") for char in number
    ):
        raise SipParseError(f"bad tel: number {number[:40]!r}")
    params = _parse_params(param_text, escaped=True) if semi else {}
    return TelUri(number, params)


def _unquote(inner: str) -> str:
    """Body of a quoted-string without its quotes: undo quoted-pair (RFC 3261 §25.1)."""
    if "\\" not in inner:
        return inner
    out: list[str] = []
    index = 0
    while index < len(inner):
        char = inner[index]
        if char == "\\" and index + 1 < len(inner):
            out.append(inner[index + 1])
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Quoted string starting at ``text[start] == '"'``; returns (unescaped, index after it)."""
    index = start + 1
    length = len(text)
    while index < length:
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == '"':
            return _unquote(text[start + 1 : index]), index + 1
        index += 1
    raise SipParseError("unterminated quoted string")  # RFC 4475 §3.1.2.6 quotbal


def _split_semicolons(text: str) -> list[str]:
    """Split header parameters on ';' outside quoted strings (``+sip.instance="<urn:a;b>"``)."""
    pieces: list[str] = []
    start = 0
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char == '"':
            index = _read_quoted(text, index)[1]
            continue
        if char == ";":
            pieces.append(text[start:index])
            start = index + 1
        index += 1
    pieces.append(text[start:])
    return pieces


def _header_params(text: str) -> dict[str, str | None]:
    """Parameters after an address: ``;tag=x ; q = 0.3`` (leading ';' required)."""
    text = text.strip(" \t")
    if not text:
        return {}
    if text[0] != ";":
        raise SipParseError(f"unexpected text after address: {text[:40]!r}")
    return _parse_params(text[1:], escaped=False)


def _check_display_tokens(display: str) -> str:
    # RFC 3261 §25.1: display-name = *(token LWS) / quoted-string. ASCII separators
    # such as ',' are refused (RFC 4475 §3.1.2.15 baddn); non-ASCII is tolerated
    # because Japanese PBXs send unquoted UTF-8 names.
    words = display.split()
    for word in words:
        for char in word:
            if char.isascii() and char not in _TOKEN_CHARS:
                raise SipParseError(f"bad character {char!r} in display name")
    return " ".join(words)


def parse_name_addr(text: str) -> NameAddr:
    """Parse ``"Display" <uri>;params``, ``Display <uri>;params`` or ``addr-spec;params``."""
    text = text.strip(" \t")
    if not text:
        raise SipParseError("empty address")
    display: str | None
    if text[0] == '"':
        display, index = _read_quoted(text, 0)
        rest = text[index:].lstrip(" \t")
        if not rest.startswith("<"):
            raise SipParseError("quoted display name not followed by <uri>")
        return _angle_addr(display, rest)
    angle = text.find("<")
    if angle != -1:
        if '"' in text[:angle]:
            raise SipParseError("stray quote in display name")
        display = _check_display_tokens(text[:angle])
        return _angle_addr(display, text[angle:])
    # RFC 3261 §20: without '<>' the URI may not carry ',', '?' or ';' of its own:
    # everything after the first ';' is a header parameter.
    split_from = 0
    at = text.find("@")
    if at != -1 and 0 <= text.find(";") < at and text[:4].lower() in ("sip:", "sips"):
        # Lenient: a user part with ';' (";phone-context=...") outside '<>' is seen from
        # gateways; RFC 3261 §20 would cut it at the first ';', leaving no host.
        split_from = at
    semi_at = text.find(";", split_from)
    uri_text, semi, param_text = (
        (text, "", "") if semi_at == -1 else (text[:semi_at], ";", text[semi_at + 1 :])
    )
    uri_text = uri_text.rstrip(" \t")
    if "?" in uri_text or "," in uri_text:
        raise SipParseError(f"addr-spec with '?' or ',' must be in <>: {uri_text[:60]!r}")
    uri = parse_uri(uri_text)
    params = _parse_params(param_text, escaped=False) if semi else {}
    return NameAddr(None, uri, params)


def _angle_addr(display: str | None, rest: str) -> NameAddr:
    close = rest.find(">")
    if close == -1:
        raise SipParseError("'<' without '>'")
    uri = parse_uri(rest[1:close])
    params = _header_params(rest[close + 1 :])
    return NameAddr(display or None, uri, params)


def parse_via(text: str) -> Via:
    """Parse one via-parm: ``SIP / 2.0 / UDP host:port;branch=...`` (LWS allowed, §25.1)."""
    head, semi, param_text = text.partition(";")
    parts = head.split("/")
    if len(parts) != 3:
        raise SipParseError(f"bad Via {text[:60]!r}")
    protocol, version, tail = (part.strip(" \t") for part in parts)
    if protocol.upper() != "SIP" or not version:
        raise SipParseError(f"bad Via protocol {head[:40]!r}")
    pieces = tail.split(None, 1)
    if len(pieces) != 2:
        raise SipParseError(f"bad Via {text[:60]!r}")
    transport, sent_by = pieces
    if not transport or not _TOKEN_CHARS.issuperset(transport):
        raise SipParseError(f"bad Via transport {transport[:20]!r}")
    # COLON = SWS ":" SWS between host and port; no other whitespace may remain.
    sent_by = ":".join(piece.strip(" \t") for piece in sent_by.strip(" \t").split(":"))
    if not _WHITESPACE.isdisjoint(sent_by):
        raise SipParseError(f"bad Via sent-by {sent_by[:40]!r}")
    host, port = _parse_hostport(sent_by)
    params = _parse_params(param_text, escaped=False) if semi else {}
    return Via(transport.upper(), host, port, params)
