"""Backups of both stores, and restores that check they got everything back.

SQLite (`backup_sqlite`, `restore_sqlite`): SQLite's online backup API copies the file page by page in one read
transaction, so the copy is the database as it stood at one instant even while the API and the workers write
(in WAL mode readers never block writers, nor writers readers). The copy is written to a temporary file in the
destination directory, switched to a self-contained rollback journal (no `-wal` beside it), checked with
`PRAGMA integrity_check`, and only then renamed into place, so a backup file either is whole or does not exist.
A restore checks the backup the same way and refuses one written by a newer program (`PRAGMA user_version` above
`graph.sqlite_store.SCHEMA_VERSION`); older ones are migrated when the store is next opened. It refuses to replace
a store that a process still has open (detected by asking for SQLite's exclusive lock) unless forced, and swaps
the file atomically: the old one stays as `<name>.before-restore`, and there is no moment without a store file.

Neo4j (`dump_neo4j`, `load_neo4j`): `neo4j-admin database dump` needs the database stopped and a server
install, so this is a logical copy through the official driver that works against any Neo4j (embedded launcher,
server, cluster, Aura). The dump is gzip JSON Lines: a header line

    {"format": "advocacy-network/neo4j-jsonl", "version": 1, "created_at": ..., "source": ..., "counts": {...}}

then one line per node, `{"node": <element id>, "labels": [...], "properties": {...}}`, then one per relationship,
`{"relationship": <type>, "start": <element id>, "end": <element id>, "properties": {...}}`. Property values are
JSON where JSON is exact; the other Neo4j types are tagged objects (a property can never be a map, so an object
is always a tag): `{"$datetime": local ISO time, "offset": seconds, "zone": "Europe/Paris"}`,
`{"$localdatetime": ...}`, `{"$date": ...}`, `{"$time": ..., "offset": ...}`, `{"$localtime": ...}`,
`{"$duration": [months, days, seconds, nanoseconds]}`, `{"$point": [x, y(, z)], "srid": ...}`,
`{"$bytes": base64}` and `{"$float": "nan" | "inf" | "-inf"}`; nanoseconds and named zones survive.

Neo4j reads are read-committed, not snapshots: a dump taken while something writes may see a relationship whose
node it had already passed. The dump therefore compares what it streamed with the database's own counts at the
end and fails if they differ; pause writers (workers, API) while dumping. The load recreates the data, not the
schema: run it on a store opened through `graph.factory.open_store`, which has created the constraints.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import math
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final, Literal, Protocol
from urllib.parse import urlsplit

import pytz  # type: ignore[import-untyped]  # the driver's own time zones; it ships no stubs
from neo4j import READ_ACCESS, Driver, ManagedTransaction
from neo4j.spatial import CartesianPoint, Point, WGS84Point
from neo4j.time import Date, DateTime, Duration, Time

from graph.errors import AdvocacyError, InvalidInput, PolicyViolation, StoreUnavailable
from graph.factory import NEO4J_SCHEMES, redact, sqlite_path
from graph.neo4j_store import Neo4jStore, translate
from graph.sqlite_store import SCHEMA_VERSION

FORMAT: Final = "advocacy-network/neo4j-jsonl"
FORMAT_VERSION: Final = 1
BEFORE_RESTORE: Final = ".before-restore"
"""Suffix of the file a SQLite restore keeps the replaced store in."""

_IDENTIFIER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_GZIP_MAGIC: Final = b"\x1f\x8b"
_RESTORE_LABEL: Final = "_AdvocacyRestore"
_RESTORE_KEY: Final = "_advocacy_restore_id"
_RESTORE_CONSTRAINT: Final = "advocacy_restore_id_unique"
_POINTS: Final[dict[int, type[Point]]] = {
    7203: CartesianPoint,
    9157: CartesianPoint,
    4326: WGS84Point,
    4979: WGS84Point,
}
_LOCK_WAIT_S: Final = 1.0
"""How long a restore waits for SQLite's exclusive lock before it concludes the store is in use."""

Route = Literal["sqlite", "neo4j"]


class Progress(Protocol):
    """Told how far a long step has got: task name, items done, items in all (None when unknown)."""

    def __call__(self, task: str, done: int, total: int | None) -> None: ...


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """What a backup or restore did: counts by kind ("table", or "label", "relationship type" and "total")."""

    route: Route
    path: Path
    """The backup file written (backup) or read (restore)."""
    store: str
    """The store backed up or restored into, without any password."""
    counts: dict[str, dict[str, int]]
    bytes: int
    """Size of the backup file."""
    seconds: float
    schema_version: int | None = None
    """SQLite only: `PRAGMA user_version` of the backup."""
    kept: Path | None = None
    """SQLite restore only: where the replaced store was kept."""
    notes: list[str] = field(default_factory=list)


def store_route(url: str) -> tuple[Route, str]:
    """Which backup route a store URL takes: ("sqlite", file path) or ("neo4j", url), as `open_store` reads it."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        return "sqlite", sqlite_path(url)
    if scheme in NEO4J_SCHEMES:
        return "neo4j", url
    raise InvalidInput(
        f"store URL {redact(url)!r} is not understood: use sqlite:///path.db, neo4j://host:port "
        "or bolt://user:password@host:port"
    )


# --- files ---------------------------------------------------------------------------------------------------------
def _target(dest: str | os.PathLike[str], *, stem: str, suffix: str, overwrite: bool) -> Path:
    """The backup file to write: `dest`, or a time-stamped name inside it when it is a directory."""
    target = Path(dest).expanduser().absolute()
    if target.is_dir():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = target / f"{stem}-{stamp}{suffix}"
    if not target.parent.is_dir():
        raise InvalidInput(f"cannot write backup {target}: directory {target.parent} does not exist")
    if target.exists() and not overwrite:
        raise InvalidInput(f"backup {target} already exists: choose another name, or pass --force to replace it")
    return target


def _temporary(target: Path, purpose: str) -> Path:
    """A new empty file beside `target`, readable by its owner only (backups hold personal data)."""
    tmp = target.with_name(f".{target.name}.{purpose}-{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return tmp


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _file_errors(doing: str) -> Iterator[None]:
    """File-system errors as `graph.errors`: a full disk or a permission problem is said in one line."""
    try:
        yield
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise StoreUnavailable(f"cannot {doing}:{where} {exc.strerror or exc}") from exc


# --- SQLite --------------------------------------------------------------------------------------------------------
def _sqlite_file(path: str | os.PathLike[str], what: str) -> Path:
    """An existing SQLite file, or a clear error (never an empty database created by mistake)."""
    found = Path(path).expanduser().absolute()
    if not found.is_file():
        raise InvalidInput(f"no {what} at {found}")
    with _file_errors(f"read the {what}"), found.open("rb") as handle:
        magic = handle.read(len(_SQLITE_MAGIC))
    if magic.startswith(_GZIP_MAGIC):
        raise InvalidInput(
            f"{found} is a Neo4j dump (gzip JSON Lines), not an SQLite database: restore it into a Neo4j store"
        )
    if magic != _SQLITE_MAGIC:
        raise InvalidInput(f"{found} is not an SQLite database")
    return found


def _sqlite_error(exc: sqlite3.Error, where: str, doing: str) -> AdvocacyError:
    text = str(exc)
    lowered = text.lower()
    if "malformed" in lowered or "not a database" in lowered or "corrupt" in lowered:
        return InvalidInput(f"{where} is corrupt ({text}); cannot {doing}")
    if "locked" in lowered or "busy" in lowered:
        return StoreUnavailable(f"{where} stayed locked while trying to {doing}; try again")
    if "is full" in lowered:
        return StoreUnavailable(f"cannot {doing}: the disk holding {where} is full")
    return StoreUnavailable(f"cannot {doing} ({where}): {text}")


@contextlib.contextmanager
def _sqlite_errors(where: str, doing: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise _sqlite_error(exc, where, doing) from exc


def _connect(path: Path, *, read_only: bool = False, timeout_s: float = 30.0) -> sqlite3.Connection:
    if read_only:
        return sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=timeout_s, isolation_level=None)
    return sqlite3.connect(path, timeout=timeout_s, isolation_level=None)


def _check_integrity(conn: sqlite3.Connection, where: str) -> None:
    problems = [row[0] for row in conn.execute("PRAGMA integrity_check(20)")]
    if problems != ["ok"]:
        shown = "; ".join(str(p) for p in problems[:5])
        raise InvalidInput(f"{where} fails SQLite's integrity check: {shown}")


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def sqlite_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows in every table of the database, by table name."""
    names = [
        str(row[0])
        for row in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
            "ORDER BY name"
        )
    ]
    counts: dict[str, int] = {}
    for name in names:
        if not _IDENTIFIER.match(name):
            raise InvalidInput(f"table {name!r} has a name this program never creates; is this an advocacy store?")
        counts[name] = int(conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])  # noqa: S608 - checked name
    return counts


def _copy_checked(source: Path, tmp: Path, *, where: str, doing: str) -> tuple[int, dict[str, int]]:
    """Copy `source` into `tmp` with the online backup API, as one self-contained file (rollback journal, no `-wal`
    beside it) that passes the integrity check; returns the copy's schema version and its rows by table."""
    with (
        _sqlite_errors(where, doing),
        contextlib.closing(_connect(source, read_only=True)) as src,
        contextlib.closing(_connect(tmp)) as copy,
    ):
        src.backup(copy)
        copy.execute("PRAGMA journal_mode = DELETE")
        _check_integrity(copy, where)
        return _user_version(copy), sqlite_counts(copy)


def backup_sqlite(path: str | os.PathLike[str], dest: str | os.PathLike[str], *, overwrite: bool = False) -> BackupInfo:
    """Copy the SQLite store at `path` into the single file `dest` (or a time-stamped file when it is a directory).

    Safe while the API and the workers write: the copy is one read transaction, a snapshot of one instant. The
    backup API is run in a single step on purpose: stepping it page range by page range would restart it each
    time another connection writes, and it might never finish under steady traffic.
    """
    started = time.perf_counter()
    source = _sqlite_file(path, "SQLite store")
    target = _target(dest, stem=source.stem, suffix=".db", overwrite=overwrite)
    if target.resolve() == source.resolve():
        raise InvalidInput(f"cannot back up {source} onto itself: give another file or a directory")
    where = f"SQLite store {source}"
    with _file_errors("write the backup"):
        tmp = _temporary(target, "backup")
    try:
        version, counts = _copy_checked(source, tmp, where=where, doing="back it up")
        with _file_errors("write the backup"):
            _fsync(tmp)
            os.replace(tmp, target)
            _fsync(target.parent)
            size = target.stat().st_size
    finally:
        tmp.unlink(missing_ok=True)
    return BackupInfo(
        route="sqlite",
        path=target,
        store=f"sqlite:///{source.as_posix()}",
        counts={"table": counts},
        bytes=size,
        seconds=time.perf_counter() - started,
        schema_version=version,
    )


def _sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


@contextlib.contextmanager
def _sole_access(target: Path, *, force: bool) -> Iterator[list[str]]:
    """Hold SQLite's exclusive lock on the store being replaced, with its WAL folded in, for the swap.

    A process with the store open (the API, a worker, a CLI command) holds a shared lock, so the exclusive lock
    is refused: the store is live, and replacing it is refused unless `force`. Yields notes for the report.
    """
    notes: list[str] = []
    if not target.exists():
        stale = [p for p in _sidecars(target) if p.exists()]
        if stale and not force:
            raise PolicyViolation(
                f"{', '.join(map(str, stale))} exist without the store {target}: a process may be using it; "
                "stop it, or pass --force to remove them"
            )
        for leftover in stale:
            leftover.unlink()
        yield notes
        return
    conn = _connect(target, timeout_s=_LOCK_WAIT_S)
    try:
        try:
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            conn.execute("BEGIN EXCLUSIVE")
            conn.execute("COMMIT")
            # Folds any write-ahead log into the file and deletes it, so the kept file stands on its own and
            # closing this connection after the swap cannot delete a log that belongs to the new store.
            mode = str(conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0]).lower()
            if mode != "delete":
                raise StoreUnavailable(f"cannot fold the write-ahead log of {target} into it (journal mode {mode})")
            locked = True
        except sqlite3.Error as exc:
            text = str(exc).lower()
            if "locked" not in text and "busy" not in text:
                raise InvalidInput(
                    f"{target} exists and cannot be opened as an SQLite store ({exc}); move it away first"
                ) from exc
            if not force:
                raise PolicyViolation(
                    f"the store {target} is in use by another process (the API, a worker or another command): "
                    "stop them first, or pass --force to replace it anyway (they must then be restarted)"
                ) from exc
            locked = False
            notes.append(
                f"{target} was in use: processes that still have it open write to {target.name}{BEFORE_RESTORE}; "
                "restart them now"
            )
        yield notes
        if not locked:
            kept = target.with_name(target.name + BEFORE_RESTORE)
            for sidecar, moved in zip(_sidecars(target), _sidecars(kept), strict=True):
                if sidecar.exists():
                    os.replace(sidecar, moved)
    finally:
        conn.close()


def _keep_old(target: Path) -> Path:
    """A second name for the store about to be replaced (a hard link: no copy, and no gap without a store)."""
    kept = target.with_name(target.name + BEFORE_RESTORE)
    for old in (kept, *_sidecars(kept)):
        old.unlink(missing_ok=True)
    try:
        os.link(target, kept)
    except OSError:  # a file system without hard links
        shutil.copy2(target, kept)
    return kept


def restore_sqlite(src: str | os.PathLike[str], path: str | os.PathLike[str], *, force: bool = False) -> BackupInfo:
    """Replace the SQLite store at `path` with the backup `src`, keeping the old file as `<name>.before-restore`.

    The backup must pass the integrity check and come from this schema version or an older one (the store
    migrates it when next opened). A store that a process has open is replaced only with `force`.
    """
    started = time.perf_counter()
    backup = _sqlite_file(src, "backup")
    target = Path(path).expanduser().absolute()
    if target.is_dir():
        raise InvalidInput(f"cannot restore into {target}: it is a directory, not a store file")
    if not target.parent.is_dir():
        raise InvalidInput(f"cannot restore into {target}: directory {target.parent} does not exist")
    where = f"backup {backup}"
    with _file_errors("prepare the restore"):
        tmp = _temporary(target, "restore")
    kept: Path | None = None
    try:
        # The checks run on the copy about to be swapped in: the backup is read once, and what is checked is
        # exactly what replaces the store.
        version, expected = _copy_checked(backup, tmp, where=where, doing="copy it")
        if version > SCHEMA_VERSION:
            raise InvalidInput(
                f"{where} has schema version {version}, newer than this program's {SCHEMA_VERSION}: "
                "restore it with the newer advocacy-network that wrote it"
            )
        if version < 1 or "customers" not in expected:
            raise InvalidInput(
                f"{where} is not an advocacy-network store (schema version {version}, no customers table)"
            )
        with _file_errors("restore the store"):
            if target.exists():
                shutil.copymode(target, tmp)
            _fsync(tmp)
            with _sole_access(target, force=force) as notes:
                if target.exists():
                    kept = _keep_old(target)
                os.replace(tmp, target)
            _fsync(target.parent)
            size = backup.stat().st_size
    finally:
        tmp.unlink(missing_ok=True)
    with _sqlite_errors(f"restored store {target}", "count it"), contextlib.closing(_connect(target)) as restored:
        found = sqlite_counts(restored)
    if found != expected:
        raise StoreUnavailable(f"the restored store {target} does not hold the rows of {where}")
    return BackupInfo(
        route="sqlite",
        path=backup,
        store=f"sqlite:///{target.as_posix()}",
        counts={"table": found},
        bytes=size,
        seconds=time.perf_counter() - started,
        schema_version=version,
        kept=kept,
        notes=notes,
    )


# --- Neo4j values ----------------------------------------------------------------------------------------------------
def encode_value(value: Any) -> Any:
    """A Neo4j property value as exact JSON (see the module docstring for the tags)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, list):
        return [encode_value(item) for item in value]
    if isinstance(value, DateTime):
        local = _local_iso(value)
        tz = value.tzinfo
        if tz is None:
            return {"$localdatetime": local}
        if tz is pytz.utc:  # nearly every time this program writes: skip the driver's slow offset arithmetic
            return {"$datetime": local, "offset": 0, "zone": "UTC"}
        offset = value.utcoffset()
        tagged: dict[str, Any] = {"$datetime": local, "offset": 0 if offset is None else int(offset.total_seconds())}
        zone = getattr(tz, "zone", None)
        if zone:
            tagged["zone"] = zone
        return tagged
    if isinstance(value, Date):
        return {"$date": value.iso_format()}
    if isinstance(value, Time):
        local = value.replace(tzinfo=None).iso_format()
        if value.tzinfo is None:
            return {"$localtime": local}
        offset = value.tzinfo.utcoffset(None)
        return {"$time": local, "offset": 0 if offset is None else int(offset.total_seconds())}
    if isinstance(value, Duration):
        return {"$duration": [value.months, value.days, value.seconds, value.nanoseconds]}
    if isinstance(value, Point):
        return {"$point": list(value), "srid": value.srid}
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    raise InvalidInput(f"cannot back up a property value of type {type(value).__name__}")


def _props_of(var: str) -> str:
    """Cypher for the properties of `var` as `[key, value]` pairs, except that a UTC datetime (nearly every time
    this program writes) comes as `[key, epoch seconds, nanosecond]`: the driver builds a `DateTime` in pure Python
    at some 100 us apiece, half of what a dump cost. (Before 1970 `epochSeconds` rounds toward zero, not down, so
    those go the driver's way.)"""
    value = f"{var}[k]"
    utc = (
        f"valueType({value}) = 'ZONED DATETIME NOT NULL' AND {value}.timezone IN ['Z', 'UTC'] "
        f"AND {value}.epochSeconds > 0 AND {value}.year <= 9999"
    )
    utc_pair = f"[k, {value}.epochSeconds, {value}.nanosecond]"
    return f"[k IN keys({var}) | CASE WHEN {utc} THEN {utc_pair} ELSE [k, {value}] END]"


def _encoded(pairs: list[list[Any]]) -> dict[str, Any]:
    """Properties as `_props_of` returns them, encoded as `encode_value` would encode the values."""
    encoded: dict[str, Any] = {}
    for pair in pairs:
        if len(pair) == 3:
            key, seconds, nanosecond = pair
            local = _wall_clock(_UNIX_EPOCH + timedelta(seconds=seconds), nanosecond)
            encoded[key] = {"$datetime": local, "offset": 0, "zone": "UTC"}
        else:
            encoded[pair[0]] = encode_value(pair[1])
    return encoded


_UNIX_EPOCH: Final = datetime(1970, 1, 1)
"""Naive: the wall clock of UTC, as the tagged value writes it."""


def _local_iso(value: DateTime) -> str:
    """`2024-03-01T12:00:00.123456789`: what `replace(tzinfo=None).iso_format()` gives, at a fifth of the cost."""
    return _wall_clock(value, value.nanosecond)


def _wall_clock(moment: DateTime | datetime, nanosecond: int) -> str:
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{nanosecond:09d}"
    )


_LOCAL_ISO: Final = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{9})")


def _local(text: str, tz: Any = None) -> DateTime:
    """The inverse of `_local_iso` (in `tz`, a zone without daylight saving), or the driver's parser for other forms."""
    found = _LOCAL_ISO.fullmatch(text)
    if found is None:
        parsed = DateTime.from_iso_format(text)
        return parsed if tz is None else parsed.replace(tzinfo=tz)
    year, month, day, hour, minute, second, nanosecond = (int(part) for part in found.groups())
    return DateTime(year, month, day, hour, minute, second, nanosecond, tzinfo=tz)


def _zoned(local: DateTime, zone_name: str, offset_s: int) -> DateTime:
    """The instant in its named zone; in the hour a clock goes back, the offset says which of the two it was."""
    zone = pytz.timezone(zone_name)
    candidates = [zone.localize(local, is_dst=dst) for dst in (False, True)]
    for candidate in candidates:
        if candidate.utcoffset().total_seconds() == offset_s:
            return candidate  # type: ignore[no-any-return]
    return candidates[0]  # type: ignore[no-any-return]


def decode_value(value: Any) -> Any:
    """The inverse of `encode_value`: a tagged JSON value as the driver type Neo4j stores."""
    if isinstance(value, list):
        return [decode_value(item) for item in value]
    if not isinstance(value, dict):
        return value
    try:
        if "$datetime" in value:
            zone = value.get("zone")
            if zone == "UTC":
                return _local(value["$datetime"], pytz.utc)
            local = _local(value["$datetime"])
            if zone:
                return _zoned(local, zone, int(value["offset"]))
            return pytz.FixedOffset(int(value["offset"]) // 60).localize(local)
        if "$localdatetime" in value:
            return _local(value["$localdatetime"])
        if "$date" in value:
            return Date.from_iso_format(value["$date"])
        if "$time" in value:
            return pytz.FixedOffset(int(value["offset"]) // 60).localize(Time.from_iso_format(value["$time"]))
        if "$localtime" in value:
            return Time.from_iso_format(value["$localtime"])
        if "$duration" in value:
            months, days, seconds, nanoseconds = value["$duration"]
            return Duration(months=months, days=days, seconds=seconds, nanoseconds=nanoseconds)
        if "$point" in value:
            return _POINTS[int(value["srid"])](value["$point"])
        if "$bytes" in value:
            return bytearray(base64.b64decode(value["$bytes"], validate=True))
        if "$float" in value:
            return float(value["$float"])
    except (KeyError, TypeError, ValueError, pytz.UnknownTimeZoneError) as exc:
        raise InvalidInput(f"unreadable tagged value {value!r}: {exc!r}") from exc
    raise InvalidInput(f"unknown tagged value {value!r}")


def _load_row(props: dict[str, Any], **keys: Any) -> dict[str, Any]:
    """A node's or relationship's row for the load: UTC datetimes as `[key, epoch seconds, nanosecond]` in `times`
    (Cypher builds them: the driver's own conversion of a `DateTime` costs some 80 us), the rest decoded."""
    decoded: dict[str, Any] = {}
    times: list[list[Any]] = []
    for key, item in props.items():
        utc = _utc_parts(item)
        if utc is None:
            decoded[key] = decode_value(item)
        else:
            times.append([key, *utc])
    return {**keys, "props": decoded, "times": times}


def _utc_parts(value: Any) -> tuple[int, int] | None:
    if not (isinstance(value, dict) and value.get("zone") == "UTC" and isinstance(value.get("$datetime"), str)):
        return None
    found = _LOCAL_ISO.fullmatch(value["$datetime"])
    if found is None:
        return None
    year, month, day, hour, minute, second, nanosecond = (int(part) for part in found.groups())
    try:
        moment = datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None  # the driver's parser says what is wrong with it
    return (moment - _UNIX_EPOCH) // timedelta(seconds=1), nanosecond


_SET_TIMES: Final = "FOREACH (t IN row.times | SET {var}[t[0]] = datetime({{epochSeconds: t[1], nanosecond: t[2]}}))"


def _quoted(name: str, what: str) -> str:
    """A label or relationship type for Cypher text: checked, then back-quoted. Values never go into text."""
    if not _IDENTIFIER.match(name):
        raise InvalidInput(f"{what} {name!r} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*); it cannot be restored")
    return f"`{name}`"


def _silent(task: str, done: int, total: int | None) -> None:
    """No progress display."""


# --- Neo4j dump and load -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _neo4j_errors(where: str, doing: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        translated = translate(exc, where, doing)
        if translated is exc:
            raise
        raise translated from exc


def _driver_of(store: Neo4jStore | Driver, database: str) -> tuple[Driver, str, str]:
    """The driver, database and a printable name. The store's driver is the one it opened and set up."""
    if isinstance(store, Neo4jStore):
        return store.driver, store.database, store.describe()
    return store, database, f"Neo4j database {database!r}"


def _count_query(labels: list[str], types: list[str]) -> str:
    """One statement counting every label and type from the count store: one plan and one round trip, not one
    per name (each new statement costs the server a plan). Names are checked identifiers; rows are told apart by
    their position, so no name travels as a value in the text."""
    parts = ["MATCH (n) RETURN -2 AS i, count(n) AS n", "MATCH ()-[r]->() RETURN -1 AS i, count(r) AS n"]
    parts += [f"MATCH (n:{_quoted(label, 'label')}) RETURN {i} AS i, count(n) AS n" for i, label in enumerate(labels)]
    offset = len(labels)
    parts += [
        f"MATCH ()-[r:{_quoted(kind, 'relationship type')}]->() RETURN {offset + i} AS i, count(r) AS n"
        for i, kind in enumerate(types)
    ]
    return " UNION ALL ".join(parts)


def _live_counts(driver: Driver, database: str) -> dict[str, dict[str, int]]:
    """Nodes by label and relationships by type from the database's count store (no scan)."""

    def work(tx: ManagedTransaction) -> dict[str, dict[str, int]]:
        labels = sorted(str(r["label"]) for r in tx.run("CALL db.labels() YIELD label RETURN label"))
        types = sorted(
            str(r["type"]) for r in tx.run("CALL db.relationshipTypes() YIELD relationshipType AS type RETURN type")
        )
        # Neo4j 5.26 leaves the rows of zero counts out of such a union: absent means zero.
        found = {int(r["i"]): int(r["n"]) for r in tx.run(_count_query(labels, types))}
        return {
            "label": {label: found[i] for i, label in enumerate(labels) if found.get(i)},
            "relationship type": {
                kind: found[len(labels) + i] for i, kind in enumerate(types) if found.get(len(labels) + i)
            },
            "total": {"nodes": found.get(-2, 0), "relationships": found.get(-1, 0)},
        }

    with driver.session(database=database, default_access_mode=READ_ACCESS) as session:
        return session.execute_read(work)


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


def dump_neo4j(
    store: Neo4jStore | Driver,
    dest: str | os.PathLike[str],
    *,
    database: str = "neo4j",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> BackupInfo:
    """Write every node and relationship of the database into a gzip JSON Lines file (format above).

    `database` is used only with a raw driver; a `Neo4jStore` knows its own. Streams in one read transaction,
    so memory stays flat; fails (and writes nothing) if the counts changed while it ran.
    """
    started = time.perf_counter()
    driver, db, where = _driver_of(store, database)
    target = _target(dest, stem=f"neo4j-{db}", suffix=".jsonl.gz", overwrite=overwrite)
    report = progress or _silent
    labels: dict[str, int] = {}
    types: dict[str, int] = {}
    nodes = relationships = 0
    with _file_errors("write the dump"):
        body_path = _temporary(target, "body")
        final_path = _temporary(target, "dump")
    try:
        with _neo4j_errors(where, "dump the database"):
            expected = _live_counts(driver, db)["total"]
            with (
                _file_errors("write the dump"),
                gzip.open(body_path, "wt", encoding="utf-8", compresslevel=6) as body,
                driver.session(database=db, default_access_mode=READ_ACCESS, fetch_size=5_000) as session,
                session.begin_transaction() as tx,
            ):
                result = tx.run(f"MATCH (n) RETURN elementId(n) AS id, labels(n) AS labels, {_props_of('n')} AS props")
                for node_id, node_labels, props in result:
                    for label in node_labels:
                        _quoted(label, "label")
                        labels[label] = labels.get(label, 0) + 1
                    body.write(_line({"node": node_id, "labels": node_labels, "properties": _encoded(props)}))
                    nodes += 1
                    if nodes % 10_000 == 0:
                        report("nodes", nodes, expected["nodes"])
                report("nodes", nodes, expected["nodes"])
                result = tx.run(
                    "MATCH (a)-[r]->(b) RETURN type(r) AS type, elementId(a) AS start, elementId(b) AS end, "
                    f"{_props_of('r')} AS props"
                )
                for kind, start, end, props in result:
                    if kind not in types:
                        _quoted(kind, "relationship type")
                    types[kind] = types.get(kind, 0) + 1
                    encoded = _encoded(props)
                    body.write(_line({"relationship": kind, "start": start, "end": end, "properties": encoded}))
                    relationships += 1
                    if relationships % 10_000 == 0:
                        report("relationships", relationships, expected["relationships"])
                report("relationships", relationships, expected["relationships"])
            after = _live_counts(driver, db)
        counts = {
            "label": dict(sorted(labels.items())),
            "relationship type": dict(sorted(types.items())),
            "total": {"nodes": nodes, "relationships": relationships},
        }
        if after != counts:
            raise StoreUnavailable(
                f"{where} changed while it was dumped (streamed {nodes:,} nodes and {relationships:,} relationships, "
                f"it now holds {after['total']['nodes']:,} and {after['total']['relationships']:,}): pause the "
                "workers and the API, then dump again"
            )
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(),
            "source": where,
            "counts": counts,
        }
        with _file_errors("write the dump"):
            # Two gzip members in one file make one gzip stream: the header (known only now) goes first.
            with final_path.open("wb") as out:
                with gzip.GzipFile(fileobj=out, mode="wb") as head:
                    head.write(_line(header).encode("utf-8"))
                with body_path.open("rb") as streamed:
                    shutil.copyfileobj(streamed, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(final_path, target)
            _fsync(target.parent)
            size = target.stat().st_size
    finally:
        body_path.unlink(missing_ok=True)
        final_path.unlink(missing_ok=True)
    return BackupInfo(
        route="neo4j", path=target, store=where, counts=counts, bytes=size, seconds=time.perf_counter() - started
    )


def read_header(src: str | os.PathLike[str]) -> dict[str, Any]:
    """The header of a Neo4j dump, checked: format, a version this program reads, and counts."""
    path = Path(src).expanduser().absolute()
    with _dump_lines(path) as lines:
        return _header(path, next(lines, (1, "")))


@contextlib.contextmanager
def _dump_lines(path: Path) -> Iterator[Iterator[tuple[int, str]]]:
    if not path.is_file():
        raise InvalidInput(f"no Neo4j dump at {path}")
    with _file_errors("read the dump"), path.open("rb") as raw:
        magic = raw.read(len(_SQLITE_MAGIC))
    if magic == _SQLITE_MAGIC:
        raise InvalidInput(f"{path} is an SQLite backup, not a Neo4j dump: restore it into an SQLite store")
    if not magic.startswith(_GZIP_MAGIC):
        raise InvalidInput(f"{path} is not a Neo4j dump (not gzip)")
    handle: IO[str]
    with _file_errors("read the dump"), gzip.open(path, "rt", encoding="utf-8") as handle:
        try:
            yield enumerate(handle, start=1)
        except (EOFError, gzip.BadGzipFile, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"Neo4j dump {path} is truncated or corrupt: {exc}") from exc


def _header(path: Path, first: tuple[int, str]) -> dict[str, Any]:
    try:
        header = json.loads(first[1])
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InvalidInput(f"{path} is not an advocacy-network Neo4j dump (no {FORMAT} header line)")
    version = header.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InvalidInput(
            f"{path} is dump format version {version}, newer than this program's {FORMAT_VERSION}: "
            "load it with the newer advocacy-network that wrote it"
        )
    counts = header.get("counts")
    if not isinstance(counts, dict) or not isinstance(counts.get("total"), dict):
        raise InvalidInput(f"{path} has no counts in its header")
    return header


def _write_batch(driver: Driver, database: str, query: str, rows: list[dict[str, Any]]) -> int:
    """One bounded write transaction; returns the count the query reports."""

    def work(tx: ManagedTransaction) -> int:
        return int(tx.run(query, rows=rows).single(strict=True)["n"])

    with driver.session(database=database) as session:
        return session.execute_write(work)


def _repeat_until_done(driver: Driver, database: str, query: str, limit: int) -> int:
    """Run a `... LIMIT $limit ... RETURN count(*) AS n` write until it touches nothing: bounded transactions."""

    def work(tx: ManagedTransaction) -> int:
        return int(tx.run(query, limit=limit).single(strict=True)["n"])

    total = 0
    while True:
        with driver.session(database=database) as session:
            done = session.execute_write(work)
        total += done
        if done == 0:
            return total


def load_neo4j(
    src: str | os.PathLike[str],
    store: Neo4jStore,
    *,
    wipe: bool = False,
    batch_size: int = 5_000,
    progress: Progress | None = None,
) -> BackupInfo:
    """Recreate a dump's nodes and relationships in the store's database and check the header's counts.

    An empty database is required; `wipe=True` deletes everything in it first. Nodes are created in batches of
    `batch_size` (one transaction each), grouped by label set; each carries its old element id in a temporary
    property under a temporary unique constraint, relationships find their ends through it, and both are removed
    at the end. A failed load leaves a partial graph: load again with `wipe=True`.
    """
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be at least 1, not {batch_size}")
    started = time.perf_counter()
    path = Path(src).expanduser().absolute()
    header = read_header(path)
    expected: dict[str, dict[str, int]] = header["counts"]
    driver, db, where = _driver_of(store, "neo4j")
    report = progress or _silent
    marker = _quoted(_RESTORE_LABEL, "label")
    with _neo4j_errors(where, "load the dump"):
        occupied = driver.execute_query("MATCH (n) RETURN count(n) > 0 AS any LIMIT 1", database_=db).records
        if occupied and occupied[0]["any"]:
            if not wipe:
                raise PolicyViolation(
                    f"{where} is not empty: load a dump only into an empty database, or pass --force to delete "
                    "everything in it first"
                )
            _repeat_until_done(driver, db, "MATCH (n) WITH n LIMIT $limit DETACH DELETE n RETURN count(*) AS n", 2_000)
        driver.execute_query(
            f"CREATE CONSTRAINT {_RESTORE_CONSTRAINT} IF NOT EXISTS "
            f"FOR (n:{marker}) REQUIRE n.{_RESTORE_KEY} IS UNIQUE",
            database_=db,
        )
        driver.execute_query("CALL db.awaitIndex($name, 300)", {"name": _RESTORE_CONSTRAINT}, database_=db)
        try:
            created = _load_body(path, driver, db, batch_size, expected["total"], report)
            _repeat_until_done(
                driver,
                db,
                f"MATCH (n:{marker}) WITH n LIMIT $limit REMOVE n:{marker} REMOVE n.{_RESTORE_KEY} "
                "RETURN count(*) AS n",
                batch_size,
            )
        finally:
            with contextlib.suppress(Exception):
                driver.execute_query(f"DROP CONSTRAINT {_RESTORE_CONSTRAINT} IF EXISTS", database_=db)
        found = _live_counts(driver, db)
    if created != expected["total"] or found != _normalised(expected):
        raise StoreUnavailable(
            f"{where} does not hold what the dump {path} lists after loading it (expected "
            f"{expected['total']}, created {created}, found {found['total']}); load it again with --force"
        )
    return BackupInfo(
        route="neo4j",
        path=path,
        store=where,
        counts=found,
        bytes=path.stat().st_size,
        seconds=time.perf_counter() - started,
    )


def _normalised(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {
        "label": {k: v for k, v in sorted(counts.get("label", {}).items()) if v},
        "relationship type": {k: v for k, v in sorted(counts.get("relationship type", {}).items()) if v},
        "total": dict(counts["total"]),
    }


def _load_body(
    path: Path,
    driver: Driver,
    database: str,
    batch_size: int,
    totals: dict[str, int],
    report: Progress,
) -> dict[str, int]:
    """Stream the dump's lines into bounded batches; nodes all come before relationships."""
    marker = _quoted(_RESTORE_LABEL, "label")
    node_batches: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    edge_batches: dict[str, list[dict[str, Any]]] = {}
    done = {"nodes": 0, "relationships": 0}

    def flush_nodes(labels: tuple[str, ...]) -> None:
        rows = node_batches.pop(labels, [])
        if not rows:
            return
        text = "".join(f":{_quoted(label, 'label')}" for label in labels)
        query = (
            f"UNWIND $rows AS row CREATE (n:{marker}{text}) SET n = row.props SET n.{_RESTORE_KEY} = row.id "
            f"{_SET_TIMES.format(var='n')} RETURN count(n) AS n"
        )
        done["nodes"] += _write_batch(driver, database, query, rows)
        report("nodes", done["nodes"], totals.get("nodes"))

    def flush_edges(kind: str) -> None:
        rows = edge_batches.pop(kind, [])
        if not rows:
            return
        query = (
            f"UNWIND $rows AS row MATCH (a:{marker} {{{_RESTORE_KEY}: row.start}}) "
            f"MATCH (b:{marker} {{{_RESTORE_KEY}: row.end}}) "
            f"CREATE (a)-[r:{_quoted(kind, 'relationship type')}]->(b) SET r = row.props "
            f"{_SET_TIMES.format(var='r')} RETURN count(r) AS n"
        )
        made = _write_batch(driver, database, query, rows)
        if made != len(rows):
            raise InvalidInput(
                f"Neo4j dump {path}: {len(rows) - made} {kind} relationship(s) name a node the dump does not hold; "
                "the dump is incomplete"
            )
        done["relationships"] += made
        report("relationships", done["relationships"], totals.get("relationships"))

    with _dump_lines(path) as lines:
        next(lines, None)
        for number, text in lines:
            if not text.strip():
                continue
            try:
                record = json.loads(text)
                if "node" in record:
                    labels = tuple(sorted(record["labels"]))
                    batch = node_batches.setdefault(labels, [])
                    batch.append(_load_row(record["properties"], id=record["node"]))
                    if len(batch) >= batch_size:
                        flush_nodes(labels)
                elif "relationship" in record:
                    for labels in list(node_batches):
                        flush_nodes(labels)
                    kind = record["relationship"]
                    edges = edge_batches.setdefault(kind, [])
                    edges.append(_load_row(record["properties"], start=record["start"], end=record["end"]))
                    if len(edges) >= batch_size:
                        flush_edges(kind)
                else:
                    raise InvalidInput("neither a node nor a relationship")
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError, InvalidInput) as exc:
                reason = exc.detail if isinstance(exc, InvalidInput) else repr(exc)
                raise InvalidInput(f"Neo4j dump {path}, line {number}: {reason}") from exc
    for labels in list(node_batches):
        flush_nodes(labels)
    for kind in list(edge_batches):
        flush_edges(kind)
    return done
