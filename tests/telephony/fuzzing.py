"""Fuzz checks for the SIP parser that any test can call: cut-short and mutated datagrams.

Each check feeds its inputs to ``parse_message`` and then ``extract_caller_id`` (on
whatever request survived, whole or partial). The only exception a check absorbs is the
parser's verdict, ``SipParseError``; anything else propagates, so a bug in the parser or
in the caller-ID rules turns the calling test red. ``test_torture.py`` proves that by
injecting an ``IndexError`` into the parser and watching these checks raise it.
"""

from __future__ import annotations

import random

from telephony.callerid import extract_caller_id
from telephony.message import SipMessage, SipParseError, SipRequest, parse_message

__all__ = ["MUTATION_BYTES", "check_mutations", "check_prefixes", "parse_or_partial"]

# Bytes that matter to SIP syntax, plus NUL and a byte that is never UTF-8.
MUTATION_BYTES = b' \t\r\n:;,<>"\\%@=/?[]0123456789\x00\xff'


def parse_or_partial(data: bytes) -> SipMessage | None:
    """The parsed message, or what a ``SipParseError`` salvaged (may be ``None``)."""
    try:
        return parse_message(data)
    except SipParseError as exc:
        return exc.partial


def _check(data: bytes) -> None:
    message = parse_or_partial(data)
    if isinstance(message, SipRequest):
        extract_caller_id(message)


def check_prefixes(data: bytes, *, step: int = 7) -> int:
    """Parse every ``step``-th prefix of ``data``, every prefix ending a line, and ``data``.

    Truncations model a datagram cut short. Returns how many inputs were tried.
    """
    ends = set(range(0, len(data) + 1, step))
    ends.update(index + 1 for index, byte in enumerate(data) if byte == 0x0A)
    ends.add(len(data))
    for end in sorted(ends):
        _check(data[:end])
    return len(ends)


def check_mutations(data: bytes, *, seed: str, rounds: int = 200) -> int:
    """Parse ``rounds`` copies of ``data`` with 1-4 bytes overwritten, inserted or deleted.

    Deterministic per ``seed`` (the file's name), so a failure reproduces. Returns how
    many inputs were tried.
    """
    if not data:
        return 0
    rng = random.Random(seed)
    for _ in range(rounds):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(mutated) or 1)
            choice = rng.random()
            if choice < 0.7 or not mutated:
                mutated[position : position + 1] = bytes([rng.choice(MUTATION_BYTES)])
            elif choice < 0.85:
                mutated.insert(position, rng.choice(MUTATION_BYTES))
            else:
                del mutated[position]
        _check(bytes(mutated))
    return rounds
