"""Opening a store: engine settings per backend and schema checks through Alembic."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.pool import NullPool

from autocompress.errors import UserError

DEFAULT_STORAGE = "sqlite:///autocompress.db"
MIGRATIONS = Path(__file__).parent / "migrations"


def default_storage() -> str:
    return os.environ.get("AUTOCOMPRESS_STORAGE") or DEFAULT_STORAGE


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def open_engine(url: str, *, create: bool) -> Engine:
    """Engine for `url`, schema at head. With ``create=False`` a missing SQLite file is an error, not made.

    SQLite runs in WAL mode with a busy timeout so a reader never blocks the writing loop.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError("--storage", f"{url!r} is not a database URL; e.g. sqlite:///autocompress.db") from None
    path = sqlite_path(url)
    if path is not None:
        if not path.exists() and not create:
            raise UserError("--storage", f"no study store at {path}; run 'autocompress search' first")
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 60})
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise UserError("--storage", f"cannot use {url!r}: {exc}") from None
    try:
        ensure_schema(engine, create=create)
    except OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        where = parsed.render_as_string(hide_password=True)
        raise UserError("--storage", f"cannot connect to {where}: {reason}") from None
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    dbapi_connection.isolation_level = None  # transactions are begun by `_sqlite_begin`, not the driver
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=60000")
    # Under WAL, NORMAL still survives a killed process (a commit is in the WAL before it returns); only a
    # power cut may lose the last commits. It spares an fsync per transaction.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn) -> None:  # type: ignore[no-untyped-def]
    """Writers take SQLite's write lock when their transaction begins (``BEGIN IMMEDIATE``, waiting up to the
    busy timeout), so two writers queue instead of failing with "database is locked" when a read lock
    cannot be upgraded; readers begin deferred and, under WAL, never wait for a writer."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")


#: execution option that marks a connection as a writer (see `_sqlite_begin`)
WRITE = "autocompress_write"

#: SQLSTATE codes (or classes) of errors that a retry may cure: connection exceptions (08), serialization
#: failure and deadlock (40001, 40P01), server shutting down or starting up (57P01-57P03)
TRANSIENT_SQLSTATES = ("08", "40001", "40P01", "57P01", "57P02", "57P03")
#: SQLite's words for another process holding the lock past the busy timeout
SQLITE_BUSY = ("database is locked", "database is busy", "database table is locked")


def is_transient(exc: BaseException) -> bool:
    """True for database errors that may pass if the same transaction is tried again: the server refused,
    dropped or reset the connection, restarted, or aborted a transaction on a serialization conflict or
    deadlock; SQLite busy. False for everything else (a bad query, a missing table, a constraint)."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if type(orig).__module__.startswith("sqlite3"):
        return any(words in str(orig).lower() for words in SQLITE_BUSY)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state:
        return str(state).startswith(TRANSIENT_SQLSTATES)
    # a driver error without a SQLSTATE never reached the server: connection refused, reset or closed
    return isinstance(exc, OperationalError | InterfaceError)


def ensure_schema(engine: Engine, *, create: bool) -> None:
    """Upgrade an empty or older autocompress database to head; refuse a newer or foreign one."""
    head = head_revision()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        tables = set(inspect(conn).get_table_names())
    if current == head:
        return
    known = {rev.revision for rev in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}
    where = engine.url.render_as_string(hide_password=True)
    if current is None and tables - {"alembic_version"}:
        raise UserError(where, "holds tables that are not an autocompress store; use another database")
    if current is not None and current not in known:
        raise UserError(where, f"schema revision {current!r} is newer than this autocompress ({head}); upgrade it")
    if current is None and not create:
        raise UserError(where, "is empty: no study store yet; run 'autocompress search' first")
    config = _alembic_config()
    if engine.url.get_backend_name() == "sqlite":
        raw = engine.raw_connection()  # outside a transaction, where SQLite can switch to WAL (persistent)
        try:
            raw.cursor().execute("PRAGMA journal_mode=WAL")
        finally:
            raw.close()
    try:
        with engine.execution_options(**{WRITE: True}).begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except IntegrityError:
        # Another process created the schema at the same moment; accept its work if it reached head.
        with engine.connect() as conn:
            if MigrationContext.configure(conn).get_current_revision() != head:
                raise
