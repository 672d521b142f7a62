"""Logging for an operator: configured once, one line per event, no customer data at INFO.

``configure_logging`` is called by the CLI before anything else runs (level and
format from ``[log]``, ``--log-level`` over it). What the parts log, and at which
level, is theirs to say; this module only decides how it looks and where it goes
(stderr, which systemd's journal and ``docker logs`` read). Uvicorn's access log is
kept below INFO: its lines carry query strings such as ``/api/lookup?number=…``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Send every logger's records at ``level`` and above to stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Uvicorn keeps its own handlers unless told otherwise (the CLI passes
    # log_config=None); its records then reach the root handler like everyone's.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    access = logging.DEBUG if level.lower() == "debug" else logging.WARNING
    logging.getLogger("uvicorn.access").setLevel(access)


class Throttle:
    """Say a recurring thing at most once per ``interval`` per key; count the rest.

    For what a stranger can make happen at will (datagrams from a scanner, a flood of
    malformed packets): the first one is logged, the repeats within the interval are
    counted and the count is said with the next line. Remembers at most ``max_keys``.
    """

    def __init__(
        self,
        interval: float = 60.0,
        *,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._max_keys = max_keys
        self._clock = clock
        self._last: dict[str, tuple[float, int]] = {}  # key -> (said at, repeats since)

    def allow(self, key: str) -> int | None:
        """None to stay quiet; otherwise the number of repeats held back since last said."""
        now = self._clock()
        said = self._last.get(key)
        if said is not None and now - said[0] < self.interval:
            self._last[key] = (said[0], said[1] + 1)
            return None
        if said is None and len(self._last) >= self._max_keys:
            self._last = {k: v for k, v in self._last.items() if now - v[0] < self.interval}
            if len(self._last) >= self._max_keys:
                return None  # a flood of distinct keys: the counters in /healthz still move
        self._last[key] = (now, 0)
        return 0 if said is None else said[1]
