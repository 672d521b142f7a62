"""The screenshots in docs/screenshots/, taken from the real service and a real call.

Always runs (so a broken page shows up here too) and writes to test-artifacts/;
with ``CALLPOP_UPDATE_SCREENSHOTS=1`` it writes docs/screenshots/pop.png (Japanese)
and pop-en.png (English) instead, both 1280x800:

    CALLPOP_UPDATE_SCREENSHOTS=1 python -m pytest tests/browser/test_screenshots.py

It uses a service of its own on a fresh database, so the cards show the demo data
as a new visitor would see it, not the call log the other browser tests leave.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import REPO, Dialer, Service, log_in, run_service

pytestmark = pytest.mark.browser

RING_TIMEOUT_MS = 20_000


@pytest.fixture
def fresh_service(tmp_path: Path) -> Iterator[Service]:
    with run_service(tmp_path) as svc:
        yield svc


def _settle(page: Any) -> None:
    """Fonts loaded and the arrival animation finished, so the picture is stable."""
    page.evaluate("document.fonts.ready.then(() => true)")
    page.wait_for_function(
        """() => document.getAnimations().every(
            a => a.playState !== "running" || a.effect.getTiming().iterations === Infinity)"""
    )


def test_screenshots(new_page: Any, fresh_service: Service) -> None:
    update = os.environ.get("CALLPOP_UPDATE_SCREENSHOTS") == "1"
    target = REPO / "docs" / "screenshots" if update else REPO / "test-artifacts"
    target.mkdir(parents=True, exist_ok=True)
    dialer = Dialer(fresh_service)
    try:
        ja = new_page(viewport=(1280, 800))
        log_in(ja, fresh_service)
        en = new_page(viewport=(1280, 800))
        en.goto(fresh_service.url)
        en.evaluate("localStorage.setItem('callpop.lang', 'en')")
        log_in(en, fresh_service)

        def ended(page: Any, text: str) -> None:
            page.locator(
                "#recent-list [data-testid=call-card][data-state=ended]", has_text=text
            ).wait_for(timeout=RING_TIMEOUT_MS)

        # Two earlier calls, so the recent-calls column shows how ended calls look.
        dialer.finish(dialer.call("090-9999-0000", ring_seconds=1, answered_elsewhere=True))
        dialer.finish(dialer.call("anonymous", ring_seconds=1, withheld="anonymous"))
        for page in (ja, en):
            ended(page, "090-9999-0000")
        ended(ja, "非通知")
        ended(en, "Withheld")

        call = dialer.call(
            "03-1234-5678", ring_seconds=12, name="ヤマダ タロウ", line="03-3555-0100"
        )
        for page in (ja, en):
            page.locator(
                "[data-testid=call-card][data-state=ringing]", has_text="山田 太郎"
            ).wait_for(timeout=RING_TIMEOUT_MS)
            _settle(page)
        assert ja.title() == "着信: 山田 太郎 様"
        ja.screenshot(path=str(target / "pop.png"), animations="disabled")
        en.screenshot(path=str(target / "pop-en.png"), animations="disabled")
        dialer.finish(call)
    finally:
        dialer.close()
    for name in ("pop.png", "pop-en.png"):
        assert (target / name).stat().st_size > 10_000
