"""The shared dialog-info corpus (real PBX and phone NOTIFYs) through the parser.

Every file is checked against the corpus's own ``expected.json`` (its "about" gives the
meanings), through ``parse_dialog_info``/``dialog_info_of_message`` and through what
``callpop explain-notify`` prints, then cut short and mutated: only ``DialogInfoError``
or a result may come out.

The corpus is third-party text and is not kept in this repository: it is read from
``$CALLPOP_DIALOGINFO_DIR``, else from ``../shared/corpora/dialog-info`` beside the
checkout. Where neither exists this module is skipped with one line saying so; our own
samples of the same variations (``test_dialoginfo_samples.py``) run everywhere.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from callpop.explain import explain_notify
from telephony.dialoginfo import dialog_info_of_message, parse_dialog_info
from tests.corpora import shared_corpus
from tests.telephony.test_dialoginfo_samples import (
    check_against,
    check_mutations,
    check_prefixes,
    explained,
    reader_for,
)

CORPUS_VARIABLE = "CALLPOP_DIALOGINFO_DIR"
CORPUS = shared_corpus("dialog-info", CORPUS_VARIABLE, "dir with expected.json")
EXPECTED: dict[str, Any] = json.loads((CORPUS / "expected.json").read_text("utf-8"))["files"]


def test_every_corpus_file_has_an_expectation() -> None:
    on_disk = {path.name for path in CORPUS.iterdir() if path.suffix in (".xml", ".sip")}
    assert on_disk == set(EXPECTED)
    assert on_disk  # an empty directory would make every parametrised test vanish


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_parses_as_expected(name: str) -> None:
    data = (CORPUS / name).read_bytes()
    check_against(reader_for(name)(data), EXPECTED[name])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_explain_notify_prints_what_expected_json_says(name: str) -> None:
    assert explain_notify((CORPUS / name).read_bytes()) == explained(EXPECTED[name])


@pytest.mark.parametrize("name", sorted(name for name in EXPECTED if name.endswith(".sip")))
def test_sip_framing_as_recorded(name: str) -> None:
    """expected.json's "sip": the body is everything from ``<?xml``; it reads the same
    alone, and the message has the recorded Event, Content-Type and (missing) empty line."""
    data = (CORPUS / name).read_bytes()
    sip = EXPECTED[name]["sip"]
    body = data[data.index(b"<?xml") :]
    # counted without the file's final line break
    assert len(body.removesuffix(b"\n")) == sip["body_bytes_as_stored_lf"]
    assert parse_dialog_info(body) == dialog_info_of_message(data)
    head = data[: data.index(b"<?xml")].decode()
    assert (b"\n\n" in data[: data.index(b"<?xml") + 1]) == sip["blank_line_before_body"]
    assert f"Event: {sip['event']}" in head
    assert f"Content-Type: {sip['content_type']}" in head
    assert data.startswith(sip["method"].encode() + b" ")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_survives_truncation_and_mutation(name: str) -> None:
    data = (CORPUS / name).read_bytes()
    assert check_prefixes(data, reader_for(name)) > 1
    assert check_mutations(data, reader_for(name), seed=name) == 300
