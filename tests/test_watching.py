"""Watching staff extensions (RFC 4235), the composition's side: settings, the merged
watch list handed to the SIP endpoint, and what SipWatch does with the events."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import pytest

from callpop.calls import CallService
from callpop.service import SipWatch, endpoint_config, watched_extensions
from callpop.settings import ConfigError, Settings, load_settings
from telephony.events import DialogNotified, SubscriptionChanged, SubscriptionState


def settings_with(tmp_path: Path, sip: str) -> Settings:
    config = tmp_path / "callpop.toml"
    config.write_text(f'[sip]\nregistrar_host = "192.0.2.10"\n{sip}\n', encoding="utf-8")
    return load_settings(config)


def test_watch_list_settings_are_checked(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, 'watch_extensions = ["201", "*98"]')
    assert settings.sip.watch_extensions == ["201", "*98"]
    assert settings.sip.subscription_expires == 600
    with pytest.raises(ConfigError, match=r"sip\.watch_extensions\.0"):
        settings_with(tmp_path, 'watch_extensions = ["201>;x"]')
    many = ", ".join(f'"{1000 + i}"' for i in range(501))
    with pytest.raises(ConfigError, match=r"sip\.watch_extensions"):
        settings_with(tmp_path, f"watch_extensions = [{many}]")
    with pytest.raises(ConfigError, match=r"sip\.subscription_expires"):
        settings_with(tmp_path, "subscription_expires = 10")


def test_configured_then_staff_extensions_each_once_bounded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_with(
        tmp_path, 'watch_extensions = ["300", "201"]\nsubscription_expires = 900'
    )
    with caplog.at_level(logging.WARNING, logger="callpop"):
        watched = watched_extensions(settings, ["201", "202", "内線5"])
    assert watched == ("300", "201", "202")
    assert "1 staff extension(s) cannot be watched" in caplog.text
    config = endpoint_config(settings, local_host="192.0.2.1", staff_extensions=["202"])
    assert config.watch_extensions == ("300", "201", "202")
    assert config.subscription_expires == 900
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="callpop"):
        watched = watched_extensions(settings, [str(1000 + i) for i in range(600)])
    assert len(watched) == 500 and watched[:2] == ("300", "201")
    assert "602 extensions to watch; only the first 500" in caplog.text


def test_sipwatch_logs_subscriptions_and_hands_dialogs_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[DialogNotified] = []
    watch = SipWatch(calls=cast(CallService, None), on_dialog=seen.append)
    with caplog.at_level(logging.DEBUG, logger="callpop.sip"):
        watch.handle(
            SubscriptionChanged(
                extension="201", state=SubscriptionState.ACTIVE, detail="active for 600 s", at=1
            )
        )
        watch.handle(
            SubscriptionChanged(
                extension="202", state=SubscriptionState.FAILED, detail="404 Not Found", at=1
            )
        )
        notified = DialogNotified(
            extension="201",
            body=b"<dialog-info>sip:0312345678@pbx</dialog-info>",
            content_type="application/dialog-info+xml",
            at=2,
        )
        watch.handle(notified)
    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert ("INFO", "watching extension 201: active (active for 600 s)") in levels
    assert ("WARNING", "watching extension 202: failed (404 Not Found)") in levels
    assert seen == [notified]
    # The body names callers: never in the log, not even at DEBUG.
    assert "0312345678" not in caplog.text
    assert "dialog NOTIFY for 201: 45 bytes" in caplog.text


def test_a_pbx_restart_is_not_hundreds_of_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    watch = SipWatch(calls=cast(CallService, None))
    with caplog.at_level(logging.INFO, logger="callpop.sip"):
        for extension in range(200, 300):
            watch.handle(
                SubscriptionChanged(
                    extension=str(extension),
                    state=SubscriptionState.FAILED,
                    detail="481 Subscription does not exist",
                    at=1,
                )
            )
    assert len(caplog.records) == 1
