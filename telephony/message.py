"""SIP message syntax: bytes to parsed requests/responses and back (RFC 3261 §7, §20, RFC 4475).

This module owns the wire format of one SIP message: the start line, header
fields (folding, compact forms, comma lists), Content-Length framing, and the
building of requests and responses. It knows nothing of transactions, dialogs,
sockets, clocks or callers; those live in the core and transport modules.

``parse_message`` raises ``SipParseError`` where it has decided the input is bad, and
says why; every such decision is an explicit check below (a length before an index, the
digits of a number before ``int()``, the encoding before a decode). Any other exception
is a bug in this module and propagates, so the RFC 4475 corpus and the fuzzers see it;
the endpoint drops and logs such a datagram, so a bug never takes the listener down
(RFC 4475 §1).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "COMMA_LIST_HEADERS",
    "Headers",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "build_request",
    "build_response",
    "canonical_name",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_message",
    "split_comma_list",
]


class SipParseError(ValueError):
    """The bytes are not a SIP message we can use; the text says what is wrong.

    ``partial`` is the message as far as it could be read when only a header
    field was missing or malformed (start line and header block were fine), so
    the core can still answer ``400 Bad Request`` (RFC 3261 §8.2.2, RFC 4475
    §3.3.1 ``insuf``) when the Via is usable. It is ``None`` otherwise.
    """

    def __init__(self, message: str, *, partial: SipMessage | None = None) -> None:
        super().__init__(message)
        self.partial = partial


# RFC 3261 §7.3.3 and the IANA "Header Fields" registry: compact forms.
_COMPACT: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# Header fields whose grammar is ``#element`` (RFC 3261 §7.3.1): several values may
# share one line, separated by commas. From/To/Date/Authorization and friends are
# NOT here: their values legitimately contain commas.
COMMA_LIST_HEADERS: frozenset[str] = frozenset(
    {
        "accept",
        "accept-contact",
        "accept-encoding",
        "accept-language",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "diversion",
        "error-info",
        "history-info",
        "in-reply-to",
        "p-asserted-identity",
        "p-associated-uri",
        "p-preferred-identity",
        "path",
        "proxy-require",
        "reason",
        "record-route",
        "reject-contact",
        "remote-party-id",
        "require",
        "route",
        "security-client",
        "security-server",
        "security-verify",
        "service-route",
        "supported",
        "unsupported",
        "via",
    }
)

# RFC 3261 §25.1: token characters.
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")

_REASONS: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    481: "Call/Transaction Does Not Exist",
    480: "Temporarily Unavailable",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
}

# RFC 3261 §8.1.1.5: CSeq numbers are below 2**31 (ten digits at most).
_CSEQ_LIMIT = 2**31
_CSEQ_DIGITS = len(str(_CSEQ_LIMIT))


def _bounded_int(digits: str, width: int) -> int | None:
    """Value of the ASCII digit string ``digits``; ``None`` past ``width`` significant digits.

    Decided on the text, before any ``int()``: CPython refuses to convert more than 4300
    digits (``sys.get_int_max_str_digits``, leading zeros included), and a datagram can
    carry far more.
    """
    significant = digits.lstrip("0")
    if len(significant) > width:
        return None
    return int(significant) if significant else 0


def _shorten(text: str, width: int = 20) -> str:
    return text if len(text) <= width else text[:width] + "..."


def canonical_name(name: str) -> str:
    """Lower-case long form of a header name: ``f`` -> ``from``, ``Call-ID`` -> ``call-id``."""
    lowered = name.lower()
    return _COMPACT.get(lowered, lowered)


def split_comma_list(value: str) -> list[str]:
    """Split ``a, "b,c" <sip:x,y>, d`` on commas outside quotes and angle brackets."""
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    parts: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif in_quotes:
            if char == "\\":
                escaped = True
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == "<":
            in_angle = True
        elif char == ">":
            in_angle = False
        elif char == "," and not in_angle:
            piece = value[start:index].strip()
            if piece:
                parts.append(piece)
            start = index + 1
    piece = value[start:].strip()
    if piece:
        parts.append(piece)
    return parts


class Headers:
    """Ordered multi-dict of header fields, keyed by canonical (lower-case long) name."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items]

    def get(self, name: str) -> str | None:
        """First value of ``name`` (case-insensitive, compact form accepted), or ``None``."""
        key = canonical_name(name)
        for item_name, value in self._items:
            if item_name == key:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order; comma-list headers are split into elements."""
        key = canonical_name(name)
        values = [value for item_name, value in self._items if item_name == key]
        if key not in COMMA_LIST_HEADERS:
            return values
        result: list[str] = []
        for value in values:
            result.extend(split_comma_list(value))
        return result

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def remove(self, name: str) -> None:
        """Drop every field called ``name``."""
        key = canonical_name(name)
        self._items = [item for item in self._items if item[0] != key]

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name)
        return any(item_name == key for item_name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._items == other._items

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def _parse_cseq(value: str | None) -> tuple[int, str]:
    if value is None:
        raise SipParseError("missing CSeq header")
    parts = value.split()
    if len(parts) != 2 or not parts[0].isascii() or not parts[0].isdigit():
        raise SipParseError(f"unparsable CSeq {_shorten(value, 60)!r}")
    number = _bounded_int(parts[0], _CSEQ_DIGITS)
    if number is None or number >= _CSEQ_LIMIT:
        raise SipParseError(f"CSeq number out of range: {_shorten(parts[0])}")
    if not _is_token(parts[1]):
        raise SipParseError(f"unparsable CSeq method {parts[1]!r}")
    return number, parts[1]


def _call_id(headers: Headers) -> str:
    value = headers.get("call-id")
    if not value:
        raise SipParseError("missing Call-ID header")
    return value


class _Identified:
    """What requests and responses share: the transaction's Call-ID and CSeq."""

    __slots__ = ()
    headers: Headers

    @property
    def call_id(self) -> str:
        return _call_id(self.headers)

    @property
    def cseq(self) -> tuple[int, str]:
        return _parse_cseq(self.headers.get("cseq"))


@dataclass(slots=True)
class SipRequest(_Identified):
    method: str
    uri: str
    version: str
    headers: Headers
    body: bytes


@dataclass(slots=True)
class SipResponse(_Identified):
    status: int
    reason: str
    version: str
    headers: Headers
    body: bytes


SipMessage = SipRequest | SipResponse


def _is_token(text: str) -> bool:
    return bool(text) and _TOKEN_CHARS.issuperset(text)


def _valid_version(text: str) -> bool:
    # RFC 3261 §25.1: SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT (literal case-insensitive)
    if len(text) < 7 or text[:4].upper() != "SIP/":
        return False
    major, dot, minor = text[4:].partition(".")
    return bool(dot) and major.isascii() and major.isdigit() and minor.isascii() and minor.isdigit()


def _find_header_end(data: bytes, start: int) -> tuple[int, int]:
    """Index where the header block ends and where the body starts.

    RFC 3261 §7.5 ends the header block with an empty line (CRLF CRLF); bare LF
    line ends are tolerated (§7.5 "implementations ... SHOULD" be lenient). The search
    begins at the start line (``start``), after any CRLFs that precede it.
    """
    crlf = data.find(b"\r\n\r\n", start)
    lf = data.find(b"\n\n", start)
    if lf != -1 and (crlf == -1 or lf < crlf):
        # "\n\r\n" (LF line then CRLF blank line) is also a blank line
        return lf, lf + 2
    if crlf != -1:
        mixed = data.find(b"\n\r\n", start, crlf)
        if mixed != -1:
            return mixed, mixed + 3
        return crlf, crlf + 4
    mixed = data.find(b"\n\r\n", start)
    if mixed != -1:
        return mixed, mixed + 3
    return -1, -1


def parse_message(data: bytes) -> SipMessage:
    """Parse one SIP message (one UDP datagram); raise ``SipParseError`` for bad input."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SipParseError("message must be bytes")
    data = bytes(data)
    # RFC 3261 §7.5: tolerate CRLFs before the start line (keep-alives).
    start = 0
    while data.startswith((b"\r\n", b"\n"), start):
        start += 2 if data[start] == 0x0D else 1
    if start == len(data):
        raise SipParseError("empty message")
    head_end, body_start = _find_header_end(data, start)
    if head_end == -1:
        # A datagram that ends right after its last header line (no empty line, no
        # body) is accepted (RFC 4475 baddn.dat is shaped so); one whose last line is
        # cut off is not.
        if not data.endswith(b"\n"):
            raise SipParseError("header block not terminated by an empty line")
        head_end = len(data) - (2 if data.endswith(b"\r\n") else 1)
        body_start = len(data)
    try:
        head = data[start:head_end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"header bytes are not UTF-8 (offset {exc.start + start})") from None
    body = data[body_start:]

    lines = head.split("\n")
    start_line = lines[0].removesuffix("\r")
    headers = Headers()
    items = headers._items  # filled in one pass on the hot path
    for raw_line in lines[1:]:
        line = raw_line.removesuffix("\r")
        if not line:
            raise SipParseError("empty line inside header block")
        if line[0] in " \t":
            # RFC 3261 §7.3.1: a continuation line is joined with a single SP.
            if not items:
                raise SipParseError("continuation line before any header")
            name, value = items[-1]
            continuation = line.strip(" \t")
            items[-1] = (name, f"{value} {continuation}" if value else continuation)
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"header line without colon: {line[:40]!r}")
        # RFC 3261 §25.1: HCOLON = *( SP / HTAB ) ":" SWS
        name = name.rstrip(" \t")
        if not _is_token(name):
            raise SipParseError(f"bad header name {name[:40]!r}")
        items.append((canonical_name(name), value.strip(" \t")))

    message = _parse_start_line(start_line, headers, body)
    try:
        _check_framing_and_fields(message, body)
    except SipParseError as exc:
        # The start line and header block were readable: hand the message along so the
        # core can answer 400 when the Via allows (RFC 4475 §3.1.2: "reject with 400").
        raise SipParseError(str(exc), partial=message) from None
    return message


def _check_framing_and_fields(message: SipMessage, body: bytes) -> None:
    if isinstance(message, SipRequest):
        _check_request_uri(message.uri)
    # Content-Length: RFC 3261 §18.3 (stream framing) and §20.14; on UDP it may be absent.
    lengths = {value for name, value in message.headers._items if name == "content-length"}
    if len(lengths) > 1:
        raise SipParseError("conflicting Content-Length headers")  # RFC 4475 §3.3.9 mcl01
    if lengths:
        text = lengths.pop()
        if not text.isascii() or not text.isdigit():
            # RFC 4475 §3.1.2.3 ncl; also "ten" or full-width digits
            raise SipParseError(f"bad Content-Length {_shorten(text)!r}")
        length = _bounded_int(text, len(str(len(body))))
        if length is None or length > len(body):
            # RFC 4475 §3.1.2.2 clerr
            raise SipParseError(
                f"body shorter than Content-Length ({len(body)} < {_shorten(text)})"
            )
        message.body = body[:length]
    _check_required(message)


def _parse_start_line(line: str, headers: Headers, body: bytes) -> SipMessage:
    # RFC 3261 §7.1/§7.2: elements are separated by exactly one SP.
    if line[:4].upper() == "SIP/":
        version, sp, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not sp or not _valid_version(version):
            raise SipParseError(f"bad status line {line[:60]!r}")
        if len(code) != 3 or not code.isascii() or not code.isdigit():
            raise SipParseError(f"bad status code {code[:20]!r}")
        status = int(code)
        if not 100 <= status <= 699:
            raise SipParseError(f"status code out of range: {status}")
        return SipResponse(status, reason, version.upper(), headers, body)
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(f"bad request line {line[:60]!r}")
    method, uri, version = parts
    if not _is_token(method):
        raise SipParseError(f"bad method {method[:40]!r}")
    if not _valid_version(version):
        raise SipParseError(f"bad SIP version {version[:20]!r}")
    return SipRequest(method, uri, version.upper(), headers, body)


def _check_request_uri(uri: str) -> None:
    # Local import: uri.py imports SipParseError from this module.
    from telephony.uri import SipUri, parse_uri

    if not uri or uri[0] == "<" or "\t" in uri:
        raise SipParseError(f"bad Request-URI {uri[:60]!r}")  # RFC 4475 §3.1.2.7 ltgtruri
    parsed = parse_uri(uri)
    if isinstance(parsed, SipUri) and parsed.headers:
        # RFC 3261 §19.1.1 table: the headers component is not allowed in a Request-URI
        raise SipParseError("headers component in Request-URI")  # RFC 4475 §3.1.2.11 escruri


def _check_required(message: SipMessage) -> None:
    # RFC 3261 §8.1.1: To, From, CSeq, Call-ID, Max-Forwards (may be absent here: the
    # core decides), Via. A response carries the same (§8.2.6.2 copies them).
    from telephony.uri import parse_name_addr, parse_via

    headers = message.headers
    counts: dict[str, int] = {}
    for name, _ in headers._items:
        if name in _SINGLETONS:
            counts[name] = counts.get(name, 0) + 1
    for name, label in _REQUIRED:
        if not counts.get(name):
            raise SipParseError(f"missing {label} header")
        if counts[name] > 1 and name != "via":
            # RFC 4475 §3.3.8 multi01: single-value fields given twice
            raise SipParseError(f"more than one {label} header")
    if not headers.get("call-id"):
        raise SipParseError("empty Call-ID header")
    _parse_cseq(headers.get("cseq"))
    for name in ("from", "to"):
        parse_name_addr(headers.get(name) or "")
    vias = headers.get_all("via")
    if not vias:
        raise SipParseError("empty Via header")
    for via in vias:
        parse_via(via)
    for contact in headers.get_all("contact"):
        if contact != "*":
            parse_name_addr(contact)


_REQUIRED = (
    ("via", "Via"),
    ("from", "From"),
    ("to", "To"),
    ("call-id", "Call-ID"),
    ("cseq", "CSeq"),
)
_SINGLETONS = frozenset({"from", "to", "call-id", "cseq", "via"})


def _reason_for(status: int) -> str:
    if status in _REASONS:
        return _REASONS[status]
    return {1: "Trying", 2: "OK", 3: "Redirect", 4: "Request Failure", 5: "Server Error"}.get(
        status // 100, "Global Failure"
    )


def _to_with_tag(to: str, tag: str) -> str:
    from telephony.uri import parse_name_addr

    try:
        if parse_name_addr(to).tag is not None:
            return to
    except SipParseError:
        # An unparsable To is copied as received; a crude check avoids a second tag.
        if ";tag=" in to.lower():
            return to
    return f"{to};tag={tag}"


def _serialise(start_line: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    lines = [start_line]
    for name, value in headers:
        lines.append(f"{_display_name(name)}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


_DISPLAY_NAMES: dict[str, str] = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "p-asserted-identity": "P-Asserted-Identity",
    "p-preferred-identity": "P-Preferred-Identity",
    "p-called-party-id": "P-Called-Party-ID",
    "remote-party-id": "Remote-Party-ID",
}


def _display_name(name: str) -> str:
    """``via`` -> ``Via``; names already in mixed case are kept as given."""
    if name != name.lower():
        return name
    known = _DISPLAY_NAMES.get(name)
    if known is not None:
        return known
    return "-".join(part.capitalize() for part in name.split("-"))


def build_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> bytes:
    """Bytes of a response to ``request`` (RFC 3261 §8.2.6.2).

    Every Via (in order), From, To, Call-ID and CSeq are copied; ``to_tag`` is
    added to To unless it already has a tag. Fields missing from a request that
    failed validation are skipped, so a 400 can still be built from
    ``SipParseError.partial``.
    """
    if not 100 <= status <= 699:
        raise ValueError(f"status out of range: {status}")
    out: list[tuple[str, str]] = []
    out.extend(("Via", value) for name, value in request.headers.items() if name == "via")
    for name, label in (("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq")):
        copied = request.headers.get(name)
        if copied is None:
            continue
        if name == "to" and to_tag is not None:
            copied = _to_with_tag(copied, to_tag)
        out.append((label, copied))
    out.extend((name, value) for name, value in headers if canonical_name(name) != "content-length")
    phrase = _reason_for(status) if reason is None else reason
    return _serialise(f"SIP/2.0 {status} {phrase}", out, body)


def build_request(
    method: str, uri: str, headers: Sequence[tuple[str, str]], body: bytes = b""
) -> bytes:
    """Bytes of a request; header order as given, Content-Length appended."""
    if not _is_token(method):
        raise ValueError(f"bad method {method!r}")
    kept = [(name, value) for name, value in headers if canonical_name(name) != "content-length"]
    return _serialise(f"{method} {uri} SIP/2.0", kept, body)


def new_branch() -> str:
    """A fresh RFC 3261 §8.1.1.7 branch (magic cookie + 128 random bits)."""
    return "z9hG4bK" + secrets.token_hex(16)


def new_tag() -> str:
    """A fresh From/To tag (RFC 3261 §19.3: at least 32 random bits)."""
    return secrets.token_hex(8)


def new_call_id(host: str) -> str:
    """A fresh globally unique Call-ID (RFC 3261 §8.1.1.4)."""
    return f"{secrets.token_hex(16)}@{host}"
