"""Private Neo4j and Redis servers the fault tests may kill, restart and cut off without touching the shared ones.

Each server runs on a free loopback port with its own data directory, is started lazily by the first test that
asks for it (session scope), and can be stopped (`crash=True`: SIGKILL, as a machine dying; otherwise SIGTERM, a
clean stop) and started again on the same port and data, so a client that keeps its URL sees the same server
come back. Whatever a test leaves behind, the session's end stops both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from engine.worker_process import kill_worker, start_worker, stop_worker
from tests.integration.test_outreach_dispatch import Mailbox, smtp_sink
from tests.net_support import free_port

ROOT = Path(__file__).resolve().parents[2]
NEO4J_MODULE = ROOT / "tools" / "neo4j-server"
NEO4J_MAIN = "neo4jlauncher.Neo4jServer"
NEO4J_START_S = 120.0
REDIS_START_S = 10.0
WORKER_START_S = 120.0


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen[bytes], *, crash: bool, timeout_s: float = 60.0) -> None:
    """SIGKILL (a crash) or SIGTERM (a clean stop) the server's process group, and wait until it is gone."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL if crash else signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


class RedisServer:
    """`redis-server` with the project's flags (scripts/redis-up.sh), persistence off: a restart loses every key."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.log = directory / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    "redis-server",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + REDIS_START_S
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    pytest.fail(f"private redis-server exited with {self._proc.returncode}:\n{self.log.read_text()}")
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return
                time.sleep(0.05)
        finally:
            client.close()
        pytest.fail(f"private redis-server did not answer on port {self.port} within {REDIS_START_S:g} s")

    def stop(self, *, crash: bool = False) -> None:
        if self._proc is not None:
            _stop(self._proc, crash=crash)
            self._proc = None

    def restart(self, *, down_s: float = 0.0) -> None:
        """Crash, stay down `down_s`, come back empty on the same port."""
        self.stop(crash=True)
        time.sleep(down_s)
        self.start()

    def flush(self) -> None:
        client = redis.Redis(port=self.port)
        try:
            client.flushall()
        finally:
            client.close()


class Neo4jServer:
    """The embedded Neo4j launcher (tools/neo4j-server, as scripts/neo4j-up.sh runs it) with a 512 MB heap."""

    def __init__(self, home: Path, *, heap: str = "512m", pagecache: str = "64m") -> None:
        self.home = home
        self.port = free_port()
        self.heap = heap
        self.pagecache = pagecache
        self.log = home.parent / "neo4j-server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"bolt://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        target = NEO4J_MODULE / "target"
        return [
            "java",
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseSerialGC",  # a small heap on a shared 2-core machine: no parallel GC threads
            "-XX:-OmitStackTraceInFastThrow",
            "-XX:+DisableExplicitGC",
            "-XX:TieredStopAtLevel=1",  # a short-lived test server: start fast rather than peak late
            "-Djdk.nio.maxCachedBufferSize=1024",
            "-Dio.netty.tryReflectionSetAccessible=true",
            "-Dlog4j2.disable.jmx=true",
            "--add-opens=java.base/java.nio=ALL-UNNAMED",
            "--add-opens=java.base/java.io=ALL-UNNAMED",
            "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
            "--add-opens=java.base/java.lang=ALL-UNNAMED",
            "-cp",
            f"{target / 'classes'}:{target / 'lib'}/*",
            NEO4J_MAIN,
            str(self.home),
        ]

    def start(self) -> None:
        if self.running:
            return
        if not (NEO4J_MODULE / "target" / "classes").is_dir():
            pytest.fail("the Neo4j launcher is not built: run `make neo4j-up` once (it builds tools/neo4j-server)")
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "NEO4J_BOLT_PORT": str(self.port),
            "NEO4J_DATA_DIR": str(self.home),
            "NEO4J_HEAP": self.heap,
            "NEO4J_PAGECACHE": self.pagecache,
        }
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ready = f"neo4j-server: ready bolt://127.0.0.1:{self.port}".encode()
        deadline = time.monotonic() + NEO4J_START_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                pytest.fail(f"private Neo4j exited with {self._proc.returncode}:\n{self._log_tail(offset)}")
            with self.log.open("rb") as log:
                log.seek(offset)
                if ready in log.read() and port_open(self.port):
                    return
            time.sleep(0.2)
        pytest.fail(f"private Neo4j not ready within {NEO4J_START_S:g} s:\n{self._log_tail(offset)}")

    def _log_tail(self, offset: int) -> str:
        with self.log.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")[-4000:]

    def stop(self, *, crash: bool = False) -> None:
        if self._proc is not None:
            _stop(self._proc, crash=crash)
            self._proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private Redis (started now, stopped at the session's end); tests may crash and restart it."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop(crash=True)


@pytest.fixture
def fresh_redis(redis_server: RedisServer) -> RedisServer:
    """The private Redis, running and empty."""
    redis_server.start()
    redis_server.flush()
    return redis_server


@pytest.fixture(scope="session")
def neo4j_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Neo4jServer]:
    """A private Neo4j (started now, stopped at the session's end); tests may kill and restart it."""
    server = Neo4jServer(tmp_path_factory.mktemp("neo4j") / "home")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_neo4j(neo4j_server: Neo4jServer) -> Neo4jServer:
    """The private Neo4j, running and empty."""
    from graph.neo4j_store import Neo4jStore

    neo4j_server.start()
    store = Neo4jStore(neo4j_server.url)
    try:
        store.delete_all()
    finally:
        store.close()
    return neo4j_server


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    """A real SMTP server (aiosmtpd) recording each delivered message by recipient and Message-ID."""
    with smtp_sink() as sink:
        yield sink


def outreach_env(store_url: str, server: RedisServer, smtp_port: int, *, lease_s: float = 4.0) -> dict[str, str]:
    """A worker's settings: the private Redis as broker (db 0) and as the contact limiter (db 1), SMTP to the sink."""
    return {
        "ADVOCACY_STORE": store_url,
        "ADVOCACY_REDIS__URL": server.url(0),
        "ADVOCACY_CONTACT__BACKEND": "redis",
        "ADVOCACY_CONTACT__REDIS_DB_URL": server.url(1),
        "ADVOCACY_CONTACT__SMTP_HOST": "127.0.0.1",
        "ADVOCACY_CONTACT__SMTP_PORT": str(smtp_port),
        "ADVOCACY_CONTACT__LEASE_S": str(lease_s),
        "ADVOCACY_API__PUBLIC_BASE_URL": "https://shop.example",
    }


class Workers:
    """Starts workers for one test and SIGKILLs whatever is still running at its end, whatever happened."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, broker_url: str, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """A real `celery worker` (prefork, 2 processes) answering a ping; one that never answers is killed."""
        proc = start_worker(broker_url, self.directory / f"{name}.log", name=name, env=env, timeout_s=WORKER_START_S)
        self._procs.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its pool at once: no clean shutdown, no acks, like a machine dying."""
        kill_worker(proc)

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        """A warm shutdown: the worker finishes its current tasks."""
        stop_worker(proc)

    def close(self) -> None:
        for proc in self._procs:
            kill_worker(proc)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    try:
        yield pool
    finally:
        pool.close()
