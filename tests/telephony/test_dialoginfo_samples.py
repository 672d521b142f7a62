"""dialog-info parsing on callpop's own samples and hostile inputs; runs everywhere.

``tests/data/dialog-info/`` holds documents written for these tests, one per variation
the shared corpus's SOURCES.md describes (kept-back samples included) and the ones it
could not find; ``expected.json`` there says what must be read. ``hostile/`` holds what
must be refused. Every refusal is a ``DialogInfoError``; the fuzz checks below let
nothing else through, and ``test_a_bug_in_the_parser_is_not_swallowed`` proves that
they would see a bug. The shared corpus itself is read by ``test_dialoginfo.py``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import telephony.dialoginfo as dialoginfo
from callpop.explain import ExplainError, explain_notify
from telephony.dialoginfo import (
    MAX_BODY_BYTES,
    DialogInfo,
    DialogInfoError,
    dialog_info_of_message,
    parse_dialog_info,
)

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "dialog-info"
HOSTILE = SAMPLES / "hostile"
EXPECTED: dict[str, Any] = json.loads((SAMPLES / "expected.json").read_text("utf-8"))["files"]
# The fields of the corpus's expected.json that every parser must get right.
DIALOG_FIELDS = (
    "id",
    "call_id",
    "direction",
    "state",
    "event",
    "remote_identity",
    "remote_display",
    "local_identity",
)
# expected.json "extras" that are also Dialog fields; checked where the file lists them.
EXTRA_FIELDS = ("local_display", "local_tag", "remote_tag", "remote_target", "local_target")
# XML and SIP syntax bytes, NUL, a lone UTF-8 lead byte and a byte that is never UTF-8.
MUTATION_BYTES = b"<>/=\"'&;#!?[]-: \t\r\nx0123456789\x00\xc3\xff"


def read(path: Path) -> DialogInfo:
    """A ``.sip`` file is a whole NOTIFY, anything else a bare body."""
    data = path.read_bytes()
    return dialog_info_of_message(data) if path.suffix == ".sip" else parse_dialog_info(data)


def check_against(info: DialogInfo, expected: dict[str, Any]) -> None:
    document = {"version": info.version, "state": info.state, "entity": info.entity}
    assert document == expected["document"]
    assert len(info.dialogs) == len(expected["dialogs"])
    for dialog, want in zip(info.dialogs, expected["dialogs"], strict=True):
        assert {name: getattr(dialog, name) for name in DIALOG_FIELDS} == {
            name: want[name] for name in DIALOG_FIELDS
        }
        extras = want.get("extras", {})
        for name in EXTRA_FIELDS:
            if name in extras:
                assert getattr(dialog, name) == extras[name], name
        if "duration" in extras:
            assert dialog.duration == extras["duration"]


def explained(expected: dict[str, Any]) -> dict[str, Any]:
    """What ``explain-notify`` must print for a file: expected.json without extras."""
    return {
        "document": expected["document"],
        "dialogs": [{name: d[name] for name in DIALOG_FIELDS} for d in expected["dialogs"]],
    }


# --- fuzz checks (also used by test_dialoginfo.py on the shared corpus) ----------


def _parse_or_refuse(read_bytes: Callable[[bytes], DialogInfo], data: bytes) -> None:
    try:
        info = read_bytes(data)
    except DialogInfoError as exc:
        assert "\n" not in str(exc)
        return
    assert info.state in ("full", "partial")


def reader_for(name: str) -> Callable[[bytes], DialogInfo]:
    return dialog_info_of_message if name.endswith(".sip") else parse_dialog_info


def check_prefixes(data: bytes, read_bytes: Callable[[bytes], DialogInfo]) -> int:
    """Every prefix of ``data`` (a body or message cut short) is parsed or refused."""
    for end in range(len(data) + 1):
        _parse_or_refuse(read_bytes, data[:end])
    return len(data) + 1


def check_mutations(
    data: bytes, read_bytes: Callable[[bytes], DialogInfo], *, seed: str, rounds: int = 300
) -> int:
    """``rounds`` copies with 1-4 bytes overwritten, inserted, deleted or bit-flipped;
    deterministic per ``seed`` so a failure reproduces."""
    rng = random.Random(seed)
    for _ in range(rounds):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(mutated) or 1)
            choice = rng.random()
            if not mutated or choice < 0.15:
                mutated.insert(position, rng.choice(MUTATION_BYTES))
            elif choice < 0.3:
                del mutated[position]
            elif choice < 0.5:
                mutated[position] ^= 1 << rng.randrange(8)
            else:
                mutated[position] = rng.choice(MUTATION_BYTES)
        _parse_or_refuse(read_bytes, bytes(mutated))
    return rounds


# --- our own samples -----------------------------------------------------------


def test_every_sample_file_has_an_expectation() -> None:
    on_disk = {path.name for path in SAMPLES.iterdir() if path.suffix in (".xml", ".sip")}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_parses_as_expected(name: str) -> None:
    check_against(read(SAMPLES / name), EXPECTED[name])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_explain_notify_prints_the_expected_fields(name: str) -> None:
    assert explain_notify((SAMPLES / name).read_bytes()) == explained(EXPECTED[name])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_survives_truncation_and_mutation(name: str) -> None:
    data = (SAMPLES / name).read_bytes()
    assert check_prefixes(data, reader_for(name)) > 1
    assert check_mutations(data, reader_for(name), seed=name) == 300


def test_frozen_and_typed() -> None:
    info = read(SAMPLES / "prefixed-namespace.xml")
    [dialog] = info.dialogs
    assert (dialog.local_tag, dialog.remote_tag, dialog.duration) == ("lt1", "rt1", 42)
    with pytest.raises(AttributeError):
        dialog.state = "terminated"  # type: ignore[misc]


def test_padding_that_carries_nothing_is_tolerated() -> None:
    # A body pasted into a file with a blank line before <?xml (not well-formed XML, but
    # nothing is lost), and a version padded inside its quotes (OpenSIPS rewrites it in
    # place over a fixed-width placeholder).
    data = (SAMPLES / "no-namespace.xml").read_bytes()
    assert parse_dialog_info(b"\r\n \n" + data).version == 3
    assert parse_dialog_info(b"\xef\xbb\xbf" + data).version == 3
    padded = data.replace(b'version="3"', b'version=" 3          "')
    assert padded != data
    assert parse_dialog_info(padded).version == 3


def test_body_after_headers_without_an_empty_line_is_the_body() -> None:
    # The Yealink manual's rendering: the XML follows Content-Length directly. Without
    # the split at the first "<" line, "<?xml ...?>" is read as a header and refused.
    data = (SAMPLES / "yealink-style-confirmed.sip").read_bytes()
    assert b"\n\n" not in data
    assert read(SAMPLES / "yealink-style-confirmed.sip").dialogs[0].call_id == (
        "0_123456789@192.0.2.31"
    )


def test_content_length_shorter_than_the_body_is_honoured() -> None:
    # RFC 3261 §18.3: over UDP, bytes past Content-Length are discarded.
    data = (SAMPLES / "crlf-compact-notify.sip").read_bytes()
    assert dialog_info_of_message(data + b"garbage after the body").version == 6
    cut = data.replace(b"l: 270", b"l: 100")
    assert cut != data
    with pytest.raises(DialogInfoError, match="not XML"):
        dialog_info_of_message(cut)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ((b"o: Dialog;id=1", b"o: presence"), "Event is 'presence'"),
        ((b"o: Dialog;id=1\r\n", b""), "no Event header"),
        ((b"c: application/dialog-info+xml", b"c: application/pidf+xml"), "Content-Type"),
        ((b"NOTIFY sip:callpop@192.0.2.9:5062", b"MESSAGE sip:callpop@192.0.2.9:5062"), "MESSAGE"),
        ((b"NOTIFY sip:callpop@192.0.2.9:5062 SIP/2.0", b"SIP/2.0 200 OK"), "200 response"),
    ],
)
def test_a_message_that_is_not_a_dialog_notify_is_refused(
    change: tuple[bytes, bytes], reason: str
) -> None:
    data = (SAMPLES / "crlf-compact-notify.sip").read_bytes()
    changed = data.replace(*change)
    assert changed != data
    with pytest.raises(DialogInfoError, match=reason):
        dialog_info_of_message(changed)


def test_a_notify_without_a_body_is_refused() -> None:
    data = (SAMPLES / "crlf-compact-notify.sip").read_bytes()
    head = data[: data.index(b"\r\n\r\n") + 4].replace(b"l: 270", b"l: 0")
    with pytest.raises(DialogInfoError, match="no body"):
        dialog_info_of_message(head)


# --- hostile input -------------------------------------------------------------

HOSTILE_REASONS = {
    "billion-laughs.xml": "DTD is not allowed",
    "external-entity.xml": "DTD is not allowed",
    "external-dtd.xml": "DTD is not allowed",
    "undefined-entity.xml": "not XML: undefined entity",
    "truncated.xml": "not XML",
    "wrong-namespace.xml": "namespace 'urn:ietf:params:xml:ns:pidf'",
    "wrong-root.xml": "root element is <presence>",
    "latin1.xml": "not UTF-8",
    "utf16.xml": "not UTF-8",
    "missing-version.xml": "no version",
    "negative-version.xml": "version is '-1'",
    "huge-version.xml": "version is",
    "bad-state.xml": "state is 'everything'",
    "dialog-without-id.xml": "has no id",
    "dialog-without-state.xml": "has no <state>",
    "not-xml.txt": "not XML",
    "nul-bytes.xml": "not XML",
    "empty.xml": "empty body",
}


def test_every_hostile_file_has_a_reason() -> None:
    assert {path.name for path in HOSTILE.iterdir()} == set(HOSTILE_REASONS)


@pytest.mark.parametrize("name", sorted(HOSTILE_REASONS))
def test_hostile_body_is_refused_with_one_line(name: str) -> None:
    with pytest.raises(DialogInfoError, match=HOSTILE_REASONS[name]) as refused:
        parse_dialog_info((HOSTILE / name).read_bytes())
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("name", sorted(HOSTILE_REASONS))
def test_hostile_input_is_refused_by_explain_notify(name: str) -> None:
    with pytest.raises(ExplainError, match="^not dialog-info: "):
        explain_notify((HOSTILE / name).read_bytes())


def test_billion_laughs_is_refused_without_expanding_anything() -> None:
    # The refusal comes from the DOCTYPE itself: the stdlib parser, by contrast, would
    # expand &lol9; into 10^9 "lol"s. The entity text must not reach the result or the error.
    with pytest.raises(DialogInfoError) as refused:
        parse_dialog_info((HOSTILE / "billion-laughs.xml").read_bytes())
    assert "lol" not in str(refused.value)


def test_external_entity_never_reads_the_file() -> None:
    with pytest.raises(DialogInfoError) as refused:
        parse_dialog_info((HOSTILE / "external-entity.xml").read_bytes())
    assert "root:" not in str(refused.value)


def test_ten_megabytes_are_refused_before_parsing() -> None:
    body = b"<dialog-info " + b" " * (10 * 1024 * 1024) + b"/>"
    with pytest.raises(DialogInfoError, match=f"over the {MAX_BODY_BYTES} limit"):
        parse_dialog_info(body)
    with pytest.raises(DialogInfoError, match="limit"):
        dialog_info_of_message(b"NOTIFY sip:a@b SIP/2.0\r\n" + body)


def test_a_body_just_under_the_limit_is_read() -> None:
    dialog = b'<dialog id="d"><state>terminated</state></dialog>'
    head = b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full">'
    count = (MAX_BODY_BYTES - len(head) - 20) // len(dialog)
    body = head + dialog * count + b"</dialog-info>"
    assert len(body) <= MAX_BODY_BYTES
    assert len(parse_dialog_info(body).dialogs) == count
    with pytest.raises(DialogInfoError, match="limit"):
        parse_dialog_info(head + dialog * (count + 50) + b"</dialog-info>")


def test_deep_nesting_is_parsed_or_refused_not_crashed() -> None:
    depth = 5000
    body = (
        b'<dialog-info version="1" state="full"><dialog id="a"><state>early</state>'
        + b"<x>" * depth
        + b"</x>" * depth
        + b"</dialog></dialog-info>"
    )
    assert parse_dialog_info(body).dialogs[0].state == "early"


def test_a_bug_in_the_parser_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fuzz checks accept DialogInfoError only: an injected IndexError must reach them.
    def broken(element: object) -> object:
        raise IndexError("injected")

    monkeypatch.setattr(dialoginfo, "_dialog", broken)
    data = (SAMPLES / "japanese-display.xml").read_bytes()
    with pytest.raises(IndexError, match="injected"):
        check_prefixes(data, parse_dialog_info)  # the last prefix is the whole document
