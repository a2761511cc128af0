"""Open the store a URL names: `sqlite:///path.db` (embedded default) or `neo4j://` / `bolt://` for Neo4j."""

from __future__ import annotations

from urllib.parse import urlsplit

from graph.errors import InvalidInput
from graph.program_store import Store

NEO4J_SCHEMES = frozenset({"neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc"})


def redact(url: str) -> str:
    """The URL without its password, safe for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def sqlite_path(url: str) -> str:
    """The file a `sqlite://` URL names: sqlite:///rel.db -> rel.db, sqlite:////abs.db -> /abs.db."""
    path = url[len("sqlite://") :]
    if path.startswith("/"):
        path = path[1:]
    if not path:
        raise InvalidInput(f"store URL {url!r} names no file: use sqlite:///path/to/file.db")
    return path


def open_store(url: str, *, database: str = "neo4j") -> Store:
    """Open (and set up) the store named by `url`; raises `InvalidInput` or `StoreUnavailable` clearly."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        from graph.sqlite_store import SqliteStore

        return SqliteStore(sqlite_path(url))
    if scheme in NEO4J_SCHEMES:
        from graph.neo4j_store import Neo4jStore

        return Neo4jStore(url, database=database)
    raise InvalidInput(
        f"store URL {redact(url)!r} is not understood: use sqlite:///path.db, neo4j://host:port "
        "or bolt://user:password@host:port"
    )
