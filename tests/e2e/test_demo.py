"""The README's first command, as a newcomer meets it: ``callpop demo`` prints a URL, a
login and a test-call command, and that command pops 山田 太郎 様 in a logged-in client.

The demo runs as a subprocess on free loopback ports with its own data directory; the
test reads what it prints and uses nothing else. Every process is ended by its PID.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.clients import next_message, staff_browser
from tests.processes import (
    callpop_command,
    free_tcp_port,
    free_udp_port,
    stop_process,
    wait_until_serving,
)

pytestmark = pytest.mark.asyncio

SHOWCASE = "03-1234-5678"


@dataclass(frozen=True, slots=True)
class Printed:
    """What ``callpop demo`` told the person who started it."""

    url: str
    login: str
    password: str
    call: list[str]  # the test-call command, without the number


def start_demo(data_dir: Path) -> tuple[subprocess.Popen[bytes], Printed]:
    log_path = data_dir / "demo.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *callpop_command(),
                "demo",
                "--http-port",
                str(free_tcp_port()),
                "--sip-port",
                str(free_udp_port()),
                "--data-dir",
                str(data_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    text = ""
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and process.poll() is None:
        text = log_path.read_text(encoding="utf-8", errors="replace")
        if re.search(r"^\s*Stop:", text, re.MULTILINE):
            break
        time.sleep(0.1)
    url = re.search(r"URL:\s+(http://\S+/)", text)
    login = re.search(r"Login:\s+(\S+) / (\S+)", text)
    call = re.search(rf"Test call:\s+(.+?) {re.escape(SHOWCASE)}", text)
    if not (url and login and call):
        stop_process(process)
        pytest.fail(f"callpop demo did not print a URL, a login and a test call:\n{text}")
    return process, Printed(url[1], login[1], login[2], shlex.split(call[1]))


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Printed]:
    process, printed = start_demo(tmp_path)
    try:
        problem = wait_until_serving(process, printed.url, 45)
        assert problem is None, problem
        yield printed
    finally:
        stop_process(process)


async def test_the_printed_login_and_test_call_pop_the_showcase_customer(
    demo: Printed,
) -> None:
    assert demo.url.startswith("http://127.0.0.1:")
    async with staff_browser(demo.url, demo.login, demo.password) as (_, ws):
        dial = await asyncio.create_subprocess_exec(
            *demo.call,
            SHOWCASE,
            "--ring-seconds",
            "1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            ringing = await next_message(ws)
            ended = await next_message(ws)
            output, _ = await asyncio.wait_for(dial.communicate(), 30)
        finally:
            if dial.returncode is None:
                dial.kill()
                await dial.wait()
    assert dial.returncode == 0, output.decode(errors="replace")
    assert "180" in output.decode() and "487" in output.decode()
    assert ringing["type"] == "call.ringing"
    assert ringing["call"]["caller"]["national"] == SHOWCASE
    [yamada] = ringing["card"]["customers"]
    assert (yamada["name"], yamada["furigana"]) == ("山田 太郎", "やまだ たろう")
    assert yamada["assigned_staff"]["extension"] == "203"
    assert ended["type"] == "call.ended" and ended["call"]["outcome"] == "abandoned"
