"""A `valuerec serve` subprocess in tests: a free port, and waiting until it answers."""

from __future__ import annotations

import socket
import subprocess
import time

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(proc: subprocess.Popen, base: str, seconds: float = 120.0) -> None:
    """Poll ``base/health`` until it answers 200; fail with the server's output if it exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.25)
    pytest.fail(f"server at {base} did not answer /health within {seconds:.0f} s")
