"""Which database errors the search loop retries (`is_transient`), told from real errors of real drivers:
SQLite busy and a refused PostgreSQL connection are transient; a missing table or a bad query is not."""

from __future__ import annotations

import socket
import sqlite3

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from autocompress.store import is_transient


def error_of(url: str, sql: str, **connect_args) -> DBAPIError:  # type: ignore[no-untyped-def]
    engine = create_engine(url, connect_args=connect_args)
    try:
        with pytest.raises(DBAPIError) as caught, engine.begin() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()
    return caught.value


def test_sqlite_busy_is_transient_and_a_missing_table_is_not(tmp_path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    try:
        busy = error_of(f"sqlite:///{path}", "INSERT INTO t VALUES (1)", timeout=0.1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "database is locked" in str(busy.orig) and is_transient(busy)
    assert not is_transient(error_of(f"sqlite:///{path}", "SELECT * FROM missing"))


def test_refused_postgres_connection_is_transient() -> None:
    pytest.importorskip("psycopg")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused = error_of(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", "SELECT 1", connect_timeout=3)
    assert "refused" in str(refused.orig).lower() and is_transient(refused)
    assert not is_transient(RuntimeError("not a database error"))


@pytest.mark.postgres
def test_a_bad_query_on_postgres_is_not_transient(postgres_url) -> None:
    bad = error_of(postgres_url, "SELEC 1")
    assert getattr(bad.orig, "sqlstate", None) == "42601" and not is_transient(bad)
