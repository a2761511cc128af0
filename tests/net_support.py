"""Loopback plumbing shared by the tests that start real servers (SMTP sinks, Neo4j, Redis, uvicorn, Chromium)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
