"""Who is calling and which office line they dialled, read from one parsed INVITE.

This module owns the caller-ID rules: which header to believe (RFC 3325
P-Asserted-Identity, then draft-ietf-sip-privacy Remote-Party-ID, then From),
how a URI becomes a raw number, and how a withheld number is recognised
(RFC 3323 ``Privacy``, ``anonymous@anonymous.invalid``, and the NTT NGN display
names for payphone / unavailable / interaction). It knows nothing of number
normalisation, customers or sockets: numbers leave here raw, as SIP gave them.

``extract_caller_id`` never raises on a request that ``parse_message`` accepted:
a header it cannot read is skipped and the next source is tried.
"""

from __future__ import annotations

from dataclasses import dataclass

from telephony.events import CallerId, CallerIdSource, Withheld
from telephony.message import SipParseError, SipRequest
from telephony.uri import NameAddr, SipUri, TelUri, parse_name_addr, parse_uri

__all__ = ["extract_caller_id", "number_from_uri"]

# Visual separators of RFC 3966 §5.1.1 (and a space some PBXs leave in).
_SEPARATORS = str.maketrans("", "", "-.() ")
_DIALABLE = frozenset("0123456789*#")

# Display names and users that name a withholding reason rather than a person.
# NTT NGN (Hikari Denwa) sends these display names with sip:anonymous@anonymous.invalid.
_REASON_BY_NAME: dict[str, Withheld] = {
    "coin line/payphone": Withheld.PAYPHONE,
    "payphone": Withheld.PAYPHONE,
    "公衆電話": Withheld.PAYPHONE,
    "unavailable": Withheld.UNAVAILABLE,
    "表示圏外": Withheld.UNAVAILABLE,
    "interaction with other service": Withheld.INTERACTION,
    "interaction": Withheld.INTERACTION,
    "anonymous": Withheld.ANONYMOUS,
    "非通知": Withheld.ANONYMOUS,
}

# RFC 3323 §4.2 priv-values that hide the identity (plus RPID's "full").
_HIDING_PRIVACY = frozenset({"id", "header", "user", "full"})
# draft-ietf-sip-privacy-04 §6: RPID privacy values that hide the number.
_RPID_HIDES_NUMBER = frozenset({"full", "uri"})


@dataclass(frozen=True, slots=True)
class _Identity:
    number: str | None
    display_name: str | None
    withheld: Withheld | None


def number_from_uri(uri: object) -> str | None:
    """Raw number of a ``tel:`` URI or the user part of a ``sip:``/``sips:`` URI.

    A phone-like user loses its visual separators and ``;phone-context=...``-style
    user parameters (``+81-3-1234-5678;npdi`` -> ``+81312345678``); any other user
    (``alice``, ``1002``) is returned as is. ``None`` when there is no user.
    """
    if isinstance(uri, TelUri):
        raw = uri.number
    elif isinstance(uri, SipUri) and uri.user:
        raw = uri.user
    else:
        return None
    main = raw.split(";", 1)[0]
    compact = main.translate(_SEPARATORS)
    digits = compact[1:] if compact.startswith("+") else compact
    if digits and _DIALABLE.issuperset(digits):
        return compact
    return main.strip() or None


def _is_phone_number(number: str | None) -> bool:
    if not number:
        return False
    digits = number[1:] if number.startswith("+") else number
    return bool(digits) and _DIALABLE.issuperset(digits)


def _reason_in(name_addr: NameAddr) -> Withheld | None:
    display = (name_addr.display_name or "").strip().lower()
    uri = name_addr.uri
    user = ""
    host = ""
    if isinstance(uri, SipUri):
        user = (uri.user or "").lower()
        host = uri.host.lower()
    # The display name names the reason (NTT NGN sends the reason there and
    # "anonymous" as the user for all four), so it is read first.
    reason = _REASON_BY_NAME.get(display) or _REASON_BY_NAME.get(user)
    if reason is None and host == "anonymous.invalid":  # RFC 3323 §4.1.1.3
        reason = Withheld.ANONYMOUS
    return reason


def _parse_all(values: list[str]) -> list[NameAddr]:
    parsed: list[NameAddr] = []
    for value in values:
        try:
            parsed.append(parse_name_addr(value))
        except SipParseError:
            continue
    return parsed


def _identity(name_addr: NameAddr) -> _Identity | None:
    """What one identity header says, or ``None`` when it says nothing usable."""
    reason = _reason_in(name_addr)
    if reason is not None:
        return _Identity(None, None, reason)
    number = number_from_uri(name_addr.uri)
    if number is None:
        return None
    display = name_addr.display_name.strip() if name_addr.display_name else None
    return _Identity(number, display or None, None)


def _from_pai(request: SipRequest) -> _Identity | None:
    candidates = _parse_all(request.headers.get_all("p-asserted-identity"))
    # RFC 3325 §9.1: a PAI may come as one sip: and one tel: value; the one with a
    # phone number is the one to show.
    for name_addr in candidates:
        identity = _identity(name_addr)
        if identity is not None and (
            identity.withheld is not None or _is_phone_number(identity.number)
        ):
            if identity.withheld is None and identity.display_name is None:
                # The values assert one identity: a name given on another value counts.
                names = [
                    c.display_name.strip()
                    for c in candidates
                    if c.display_name and c.display_name.strip() and _reason_in(c) is None
                ]
                if names:
                    return _Identity(identity.number, names[0], None)
            return identity
    for name_addr in candidates:
        identity = _identity(name_addr)
        if identity is not None:
            return identity
    return None


def _from_rpid(request: SipRequest) -> _Identity | None:
    for name_addr in _parse_all(request.headers.get_all("remote-party-id")):
        # draft-ietf-sip-privacy-04 §6: party=called describes the callee; skip it.
        if (name_addr.params.get("party") or "calling").lower() != "calling":
            continue
        privacy = (name_addr.params.get("privacy") or "off").lower()
        if privacy in _RPID_HIDES_NUMBER:
            return _Identity(None, None, Withheld.ANONYMOUS)
        identity = _identity(name_addr)
        if identity is None:
            continue
        if privacy == "name":
            return _Identity(identity.number, None, identity.withheld)
        return identity
    return None


def _from_from(request: SipRequest) -> tuple[_Identity | None, NameAddr | None]:
    value = request.headers.get("from")
    if value is None:
        return None, None
    try:
        name_addr = parse_name_addr(value)
    except SipParseError:
        return None, None
    return _identity(name_addr), name_addr


def _privacy_hides(request: SipRequest) -> bool:
    values: list[str] = []
    for name, value in request.headers.items():
        if name == "privacy":
            values.extend(value.replace(",", ";").split(";"))
    return any(value.strip().lower() in _HIDING_PRIVACY for value in values)


def _lenient_number(value: str) -> str | None:
    """A number from a value that is not a valid name-addr (``<0191349809@ntt-east.ne.jp>``).

    NTT NGN sends P-Called-Party-ID without a URI scheme; the digits before '@' are
    still the line that was called.
    """
    inner = value
    if "<" in inner and ">" in inner:
        inner = inner[inner.index("<") + 1 : inner.index(">")]
    inner = inner.split(";", 1)[0].strip()
    if ":" in inner.split("@", 1)[0]:
        inner = inner.split(":", 1)[1]
    user = inner.split("@", 1)[0]
    number = user.translate(_SEPARATORS)
    return number if _is_phone_number(number) else None


def _number_of_value(value: str) -> str | None:
    try:
        return number_from_uri(parse_name_addr(value).uri)
    except SipParseError:
        return _lenient_number(value)


def _dialed(request: SipRequest) -> str | None:
    # RFC 5806 §3 Diversion, RFC 3455 §4.2 P-Called-Party-ID, then To and the
    # Request-URI (which a PBX often rewrites to our extension, hence last).
    for name in ("diversion", "p-called-party-id"):
        values = request.headers.get_all(name)
        if values:
            number = _number_of_value(values[0])
            if number is not None:
                return number
    to = request.headers.get("to")
    if to is not None:
        number = _number_of_value(to)
        if number is not None:
            return number
    try:
        return number_from_uri(parse_uri(request.uri))
    except SipParseError:
        return None


def extract_caller_id(request: SipRequest) -> CallerId:
    """Caller and dialled line of an INVITE (see the module docstring for the rules)."""
    from_identity, from_addr = _from_from(request)
    chosen: _Identity | None = None
    source: CallerIdSource | None = None
    for candidate_source, finder in (
        (CallerIdSource.P_ASSERTED_IDENTITY, _from_pai),
        (CallerIdSource.REMOTE_PARTY_ID, _from_rpid),
    ):
        chosen = finder(request)
        if chosen is not None:
            source = candidate_source
            break
    if chosen is None and from_identity is not None:
        chosen, source = from_identity, CallerIdSource.FROM
    dialed = _dialed(request)
    if chosen is None:
        return CallerId(number=None, display_name=None, withheld=None, source=None, dialed=dialed)
    if chosen.withheld is not None or (chosen.number is not None and _privacy_hides(request)):
        # RFC 3323 §4.2: "Privacy: id" asks that the identity not be shown; a withheld
        # caller has no number and no name.
        return CallerId(
            number=None,
            display_name=None,
            withheld=chosen.withheld or Withheld.ANONYMOUS,
            source=source,
            dialed=dialed,
        )
    display = chosen.display_name
    if display is None and from_addr is not None and from_identity is not None:
        if from_identity.withheld is None and from_addr.display_name:
            display = from_addr.display_name.strip() or None
    return CallerId(
        number=chosen.number, display_name=display, withheld=None, source=source, dialed=dialed
    )
