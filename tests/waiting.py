"""The one way tests wait: poll a condition until it holds, under a deadline.

No test sleeps for a fixed time hoping something happened; it waits for the thing
itself and fails naming it when the deadline passes.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


async def wait_for(
    condition: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 5.0,
    what: str = "condition",
    interval: float = 0.02,
) -> T:
    """Call ``condition`` (sync or async) until it returns something truthy; return it.

    Fails the test with ``what`` after ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
