"""The board survives a service restart: it shows 再接続中…, reconnects with back-off,
keeps its session and shows the next call. Uses a service of its own, since it
stops and starts it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Dialer, log_in, run_service

pytestmark = pytest.mark.browser

RING_TIMEOUT_MS = 20_000


def test_board_reconnects_after_a_restart(new_page: Any, tmp_path: Path) -> None:
    page = new_page()
    with run_service(tmp_path) as first:
        log_in(page, first)
        ports = (first.http_port, first.sip_port)
        dialer = Dialer(first)
        try:
            dialer.finish(dialer.call("090-9999-0000", ring_seconds=1, answered_elsewhere=True))
        finally:
            dialer.close()
        recent = page.locator("#recent-list [data-testid=call-card]", has_text="090-9999-0000")
        recent.wait_for(timeout=RING_TIMEOUT_MS)

    # The service is gone: the page says so and keeps what it showed.
    page.locator("#conn-status[data-state=reconnecting]").wait_for()
    assert page.locator("#conn-status").inner_text() == "再接続中…"
    assert recent.count() == 1

    with run_service(tmp_path, ports=ports) as second:
        page.locator("#conn-status[data-state=open]").wait_for(timeout=60_000)
        assert page.locator("#conn-status").inner_text() == "接続中"
        assert page.locator("#board-screen").is_visible()  # same session, no new login
        dialer = Dialer(second)
        try:
            call = dialer.call("03-1234-5678", ring_seconds=4)
            page.locator(
                "[data-testid=call-card][data-state=ringing]", has_text="山田 太郎"
            ).wait_for(timeout=RING_TIMEOUT_MS)
            dialer.finish(call)
        finally:
            dialer.close()
