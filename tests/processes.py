"""Processes the tests start: free loopback ports, the ``callpop`` command, and ending
what we started by its PID.

Shared by the browser tier (``callpop demo``), the end-to-end tier (``callpop serve``)
and the peer tests (SIPp, Kamailio).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """An ephemeral TCP port on ``host`` (bound and released, so free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_udp_port(host: str = "127.0.0.1") -> int:
    """An ephemeral UDP port on ``host`` (bound and released, so free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def callpop_command() -> list[str]:
    """The installed ``callpop`` script, else the same entry point through Python."""
    script = shutil.which("callpop")
    return [script] if script else [sys.executable, "-m", "callpop.cli"]


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """End a process we started: SIGINT (as Ctrl+C would), then SIGKILL, by its PID."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


def wait_until_serving(proc: subprocess.Popen[Any], url: str, timeout: float) -> str | None:
    """None once ``{url}healthz`` answers HTTP (healthy or not); else why it did not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"the service exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"{url}healthz", timeout=2) as response:
                if response.status == 200:
                    return None
        except urllib.error.HTTPError:
            return None  # it answers HTTP: up (health may be degraded, that is not this check)
        except OSError:
            pass
        time.sleep(0.1)
    return f"the service did not answer {url}healthz within {timeout:.0f} s"
