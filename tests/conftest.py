"""Hooks every test tier shares."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Keep each phase's report on the item, so fixtures can tell at teardown that the
    # test failed and print the peer's logs, the browser console or a screenshot.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
