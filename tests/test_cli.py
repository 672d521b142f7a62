"""The ``callpop`` commands a person types, run as real processes on a real SQLite file.

``serve``, ``demo`` and ``call`` are exercised end to end in tests/e2e and the browser
tier; here: ``user add``, ``lookup`` and ``explain-invite``, with their exit codes and
the one-line errors a person can act on.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from db.engine import make_engine, make_session_factory
from db.staff import authenticate
from tests.processes import callpop_command
from tests.web.conftest import seed

INVITES = Path(__file__).parent / "data" / "invites"


def callpop(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*callpop_command(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config whose database holds the demo data."""
    url = f"sqlite:///{tmp_path / 'callpop.db'}"
    seed(url)
    path = tmp_path / "callpop.toml"
    path.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    return path


def test_user_add_creates_a_login_that_works_and_refuses_a_second_one(config: Path) -> None:
    args = ("user", "add", "tanaka", "--name", "田中 一郎", "--extension", "205")
    added = callpop(*args, "--password-stdin", "--config", str(config), stdin="tanaka-pass-1\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added tanaka (田中 一郎, role staff)"

    url = config.read_text().split('"')[1]
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            staff = authenticate(session, "tanaka", "tanaka-pass-1")
            assert staff is not None and staff.extension == "205"
            assert authenticate(session, "tanaka", "wrong-password") is None
    finally:
        engine.dispose()

    again = callpop(*args, "--password-stdin", "--config", str(config), stdin="other-pass-2\n")
    assert again.returncode == 2
    assert again.stderr.strip() == "callpop: login 'tanaka' already exists"
    short = callpop(
        "user", "add", "kimura", "--name", "木村", "--password-stdin", "--config", str(config),
        stdin="short\n",
    )  # fmt: skip
    assert short.returncode == 2
    assert short.stderr.strip() == "callpop: password must be at least 8 characters"


def test_lookup_prints_the_caller_card(config: Path) -> None:
    known = callpop("lookup", "03-1234-5678", "--config", str(config))
    assert known.returncode == 0, known.stderr
    card = json.loads(known.stdout)
    assert card["status"] == "matched"
    assert (card["number"], card["national"]) == ("+81312345678", "03-1234-5678")
    [yamada] = card["customers"]
    assert yamada["name"] == "山田 太郎"
    assert yamada["assigned_staff"]["extension"] == "203"

    unknown = json.loads(callpop("lookup", "090-9999-0000", "--config", str(config)).stdout)
    assert unknown["status"] == "unknown" and unknown["customers"] == []
    extension = json.loads(callpop("lookup", "203", "--config", str(config)).stdout)
    assert extension["status"] == "internal"


def test_lookup_with_a_broken_config_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[database]\nurll = "sqlite:///x.db"\n', encoding="utf-8")
    result = callpop("lookup", "03-1234-5678", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith(f"callpop: config error: {config}: database.urll")
    assert len(result.stderr.strip().splitlines()) == 1


def test_explain_invite_reads_a_file_or_stdin_and_refuses_what_is_not_a_request() -> None:
    path = INVITES / "ntt_ngn_payphone.sip"
    from_file = callpop("explain-invite", str(path))
    assert from_file.returncode == 0, from_file.stderr
    explained = json.loads(from_file.stdout)
    assert set(explained) == {"number", "national", "display_name", "withheld", "source", "dialed"}
    assert explained["withheld"] == "payphone" and explained["number"] is None
    from_stdin = callpop("explain-invite", "-", stdin=path.read_text(encoding="utf-8"))
    assert json.loads(from_stdin.stdout) == explained

    garbage = callpop("explain-invite", "-", stdin="SIP/2.0 200 OK\r\n\r\n")
    assert garbage.returncode == 2
    assert garbage.stdout == ""
    assert len(garbage.stderr.strip().splitlines()) == 1
    missing = callpop("explain-invite", "/nonexistent/invite.sip")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "callpop: /nonexistent/invite.sip: No such file or directory"


def test_explain_notify_reads_a_body_or_a_message_from_a_file_or_stdin() -> None:
    samples = Path(__file__).parent / "data" / "dialog-info"
    expected = json.loads((samples / "expected.json").read_text(encoding="utf-8"))["files"]
    body = callpop("explain-notify", str(samples / "japanese-display.xml"))
    assert body.returncode == 0, body.stderr
    printed = json.loads(body.stdout)
    assert printed["document"] == expected["japanese-display.xml"]["document"]
    [dialog] = printed["dialogs"]
    assert list(dialog) == [
        "id", "call_id", "direction", "state", "event",
        "remote_identity", "remote_display", "local_identity",
    ]  # fmt: skip
    assert (dialog["state"], dialog["remote_display"]) == ("early", "山田 太郎")

    message = samples / "yealink-style-confirmed.sip"
    from_stdin = callpop("explain-notify", "-", stdin=message.read_text(encoding="utf-8"))
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert json.loads(from_stdin.stdout) == json.loads(
        callpop("explain-notify", str(message)).stdout
    )
    assert json.loads(from_stdin.stdout)["document"]["version"] == 3


def test_explain_notify_refuses_what_is_not_dialog_info_in_one_line() -> None:
    hostile = Path(__file__).parent / "data" / "dialog-info" / "hostile"
    for stdin in ("SIP/2.0 200 OK\r\n\r\n", "<html><body>hello</body></html>", "garbage"):
        refused = callpop("explain-notify", "-", stdin=stdin)
        assert refused.returncode == 2
        assert refused.stdout == ""
        assert refused.stderr.startswith("callpop: not dialog-info: ")
        assert len(refused.stderr.strip().splitlines()) == 1
    laughs = callpop("explain-notify", str(hostile / "billion-laughs.xml"))
    assert (laughs.returncode, laughs.stderr.strip()) == (
        2,
        "callpop: not dialog-info: a DTD is not allowed in dialog-info",
    )
    missing = callpop("explain-notify", "/nonexistent/notify.xml")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "callpop: /nonexistent/notify.xml: No such file or directory"
