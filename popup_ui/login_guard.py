"""Login attempts and password checks: the limits that keep guessing slow and cheap.

- :class:`LoginLimiter` counts attempts *before* the password is checked, per client
  address across logins and per login across addresses (a sliding window).
- :class:`PasswordCheck` runs argon2 (a core and 64 MiB each for tens of milliseconds)
  in small pools of its own at the lowest CPU priority, with short queues; beyond them a
  login is refused at once (:class:`LoginBusy` → 503), so strangers posting logins cannot
  starve the pops.

Knows addresses, logins and callables; nothing of HTTP, sessions or the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


# --- login attempts -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """A reserved login attempt: given back by :meth:`LoginLimiter.release` on success."""

    keys: tuple[str, str]
    at: float


class LoginLimiter:
    """Login attempts per client address and per login, in a sliding window.

    An attempt is counted when it starts (:meth:`reserve`), before the password check
    awaits: checked first and recorded after, 200 parallel guesses all passed the check
    before the first failure was written. A successful login gives its attempt back
    (:meth:`release`); failures stay for ``window`` seconds. Per address across logins
    stops one host spraying many logins; per login across addresses stops many hosts
    guessing one. The price of the second: strangers can hold a login closed for up to
    ``window`` seconds; the person can still wait it out, and it is logged.
    """

    def __init__(
        self,
        *,
        per_login: int = 10,
        per_address: int = 30,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.per_login = per_login
        self.per_address = per_address
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}
        self.refused = 0
        self.keys_forgotten = 0

    @property
    def limit(self) -> int:
        """The smaller limit: at most this many failures for one login from one address."""
        return min(self.per_login, self.per_address)

    def _recent(self, key: str, now: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            return deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits

    def reserve(self, login: str, address: str) -> Attempt | int:
        """Count an attempt now, or refuse it: the seconds to wait (``Retry-After``).

        No ``await`` between the check and the count, so it is atomic on the event loop.
        """
        now = self._clock()
        keys = (f"login:{login.casefold()}", f"address:{address}")
        limits = (self.per_login, self.per_address)
        recent = [self._recent(key, now) for key in keys]
        full = [hits for hits, limit in zip(recent, limits, strict=True) if len(hits) >= limit]
        if full:
            self.refused += 1
            return max(1, max(int(hits[0] + self.window - now) + 1 for hits in full))
        self._make_room(now)
        for key, hits, limit in zip(keys, recent, limits, strict=True):
            hits.append(now)
            self._hits[key] = hits
            if len(hits) == limit:
                kind, _, who = key.partition(":")
                log.warning(
                    "login limit reached for %s %r: %d attempts in %g s; refusing more",
                    kind,
                    who[:64],
                    limit,
                    self.window,
                )
        return Attempt(keys, now)

    def release(self, attempt: Attempt) -> None:
        """Give a reserved attempt back (it succeeded, or never reached the check)."""
        for key in attempt.keys:
            hits = self._hits.get(key)
            if hits is not None and attempt.at in hits:
                hits.remove(attempt.at)

    def _make_room(self, now: float) -> None:
        if len(self._hits) < self._max_keys:
            return
        # Bounded memory under a spray of logins: forget keys with no recent attempt,
        # then, if a flood keeps them all recent, the oldest keys (logged and counted).
        self._hits = {k: q for k, q in self._hits.items() if q and q[-1] > now - self.window}
        excess = len(self._hits) - self._max_keys * 9 // 10
        if excess > 0:
            for key in list(self._hits)[:excess]:
                del self._hits[key]
            self.keys_forgotten += excess
            log.warning("login limiter full: forgot the %d oldest of its keys", excess)


class LoginBusy(Exception):
    """Too many password checks running and waiting: answer 503 at once."""


def _lower_priority() -> None:
    """Run this worker thread at the lowest CPU priority (Linux: nice is per thread, and
    the threads argon2 starts for its lanes inherit it), so hashing takes only the CPU
    the event loop leaves: pops first, logins with what is left."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class _Lane:
    """A pool of ``workers`` threads with ``queue`` places to wait; no more."""

    def __init__(self, name: str, workers: int, queue: int) -> None:
        self.workers = workers
        self.queue = queue
        self.executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=name, initializer=_lower_priority
        )
        self.pending = 0  # running + waiting, decremented when the thread is done


class PasswordCheck:
    """Password checks off the event loop, a few at a time, at the lowest CPU priority.

    argon2id with callpop's parameters takes 64 MiB and all cores for tens of
    milliseconds: in Starlette's shared pool (40 threads) a flood of logins ran 40 at a
    time, took the CPU from the pops and a gigabyte of memory. Here they get ``workers``
    threads of their own and ``queue`` places to wait; one more is refused at once
    (:class:`LoginBusy`) without touching the database or the hasher.

    An address someone logged in from successfully in the last ``known_for`` seconds
    gets a lane of its own (``known_workers`` + ``known_queue``): strangers filling the
    main lane do not keep the office's own PCs out. Its addresses are the peer as
    uvicorn resolved it, which a stranger cannot choose (docs/security.md).
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        queue: int = 8,
        known_workers: int = 1,
        known_queue: int = 3,
        known_for: float = 24 * 3600.0,
        max_known: int = 1000,
        log_every: float = 10.0,
    ) -> None:
        self.workers = workers
        self.queue = queue
        self._main = _Lane("login", workers, queue)
        self._known_lane = _Lane("login-known", known_workers, known_queue)
        self._known: OrderedDict[str, float] = OrderedDict()
        self._known_for = known_for
        self._max_known = max_known
        self._lock = threading.Lock()
        self.refused = 0
        self._log_every = log_every
        self._logged_at = -log_every
        self._refused_at_log = 0

    @property
    def pending(self) -> int:
        return self._main.pending + self._known_lane.pending

    def succeeded(self, address: str) -> None:
        """A login from ``address`` succeeded: it gets the known lane from now on."""
        self._known[address] = time.monotonic() + self._known_for
        self._known.move_to_end(address)
        while len(self._known) > self._max_known:
            self._known.popitem(last=False)

    def _lanes(self, address: str) -> list[_Lane]:
        until = self._known.get(address)
        if until is not None and until > time.monotonic():
            return [self._known_lane, self._main]
        return [self._main]

    async def run(self, address: str, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            lane = next(
                (lane for lane in self._lanes(address) if lane.pending < lane.workers + lane.queue),
                None,
            )
            if lane is None:
                self.refused += 1
                self._say_refused()
                raise LoginBusy
            lane.pending += 1
        future: ThreadFuture[T] = lane.executor.submit(fn, *args)

        def done(_future: ThreadFuture[Any]) -> None:
            # Counted until the thread finishes, even when the request is cancelled first.
            with self._lock:
                lane.pending -= 1

        future.add_done_callback(done)
        return await asyncio.wrap_future(future)

    def _say_refused(self) -> None:
        now = time.monotonic()
        if now - self._logged_at >= self._log_every:
            log.warning(
                "login refused for load: %d password checks running or waiting "
                "(%d refused since the last line)",
                self.pending,
                self.refused - self._refused_at_log,
            )
            self._logged_at, self._refused_at_log = now, self.refused

    def close(self) -> None:
        for lane in (self._main, self._known_lane):
            lane.executor.shutdown(wait=False, cancel_futures=True)


# --- sessions -------------------------------------------------------------------------------
