"""One numbering plan for every entry point: the call path, ``callpop lookup`` and
``callpop explain-invite`` turn the same raw number into the same E.164.

The config carries the rewrite rule that config.example.toml shows (a PBX that puts
the outside-line 0 in front of the caller's number), so an entry point that ignored
the rules would read ``00312345678`` as invalid.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from tests.processes import callpop_command
from tests.waiting import wait_for
from tests.web.conftest import (
    DemoTemplate,
    SipCall,
    next_message,
    open_phone,
    snapshot,
    start_live,
    stop_live,
)

REWRITE = {"pattern": "0(0\\d{9,10})", "replace": "\\1"}
RAW_NUMBERS = ["00312345678", "0312345678", "+81312345678", "81312345678", "0033123456789"]


def _invite(number: str) -> str:
    return (
        "INVITE sip:0335550100@127.0.0.1:5062 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-numbering\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{number}@127.0.0.1>;tag=1\r\n"
        "To: <sip:0335550100@127.0.0.1>\r\n"
        "Call-ID: numbering@127.0.0.1\r\n"
        "CSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n"
    )


def _callpop(*args: str, stdin: str = "") -> str:
    result = subprocess.run(
        [*callpop_command(), *args], input=stdin, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.asyncio
async def test_the_call_path_lookup_and_explain_invite_agree(
    tmp_path: Path, demo_template: DemoTemplate
) -> None:
    live, task = await start_live(tmp_path, demo_template, numbering={"rewrite": [REWRITE]})
    config = tmp_path / "callpop.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{live.db_path}"\n\n'
        f"[[numbering.rewrite]]\npattern = '{REWRITE['pattern']}'\n"
        f"replace = '{REWRITE['replace']}'\n",
        encoding="utf-8",
    )
    try:
        popped: dict[str, str | None] = {}
        cookie = await live.session_cookie()
        async with open_phone(live.sip_address) as phone, live.websocket(cookie=cookie) as ws:
            await wait_for(lambda: live.services.hub.stats.subscribers == 1, what="subscriber")
            await snapshot(ws)
            for raw in RAW_NUMBERS:
                call = SipCall(phone, raw)
                call.invite()
                message = await next_message(ws)
                assert message["type"] == "call.ringing"
                popped[raw] = message["call"]["caller"]["number"]
                call.cancel()
                await phone.response("INVITE", 487)
                assert (await next_message(ws))["type"] == "call.ended"

        def cli_results() -> tuple[dict[str, str | None], dict[str, str | None]]:
            looked_up = {
                raw: json.loads(_callpop("lookup", raw, "--config", str(config)))["number"]
                for raw in RAW_NUMBERS
            }
            explained = {
                raw: json.loads(
                    _callpop("explain-invite", "--config", str(config), "-", stdin=_invite(raw))
                )["number"]
                for raw in RAW_NUMBERS
            }
            return looked_up, explained

        looked_up, explained = await asyncio.to_thread(cli_results)
    finally:
        await stop_live(live, task)

    assert popped["00312345678"] == "+81312345678"  # the rewrite rule applied
    assert popped["0033123456789"] == "+33123456789"  # a carrier prefix, not the rule
    assert popped == looked_up == explained
