"""The database test harness: a real local PostgreSQL server, fresh databases per test, and
the SQLite side of ``database_url`` (tools/postgres_local.py, tests/integration/conftest.py)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect, make_url, text
from sqlalchemy.exc import OperationalError

from tools import postgres_local
from tools.postgres_local import ENV_URL, PostgresServer

POSTGRES_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

# --- the URL of an existing server: $RELAYER_TEST_DATABASE_URL ------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "sqlite:///tmp/outbox.db",
        "sqlite://",
        "mysql+pymysql://user:secret@127.0.0.1/db",
        "mssql+pyodbc://user@dsn",
    ],
)
def test_external_url_must_be_postgresql(value: str) -> None:
    with pytest.raises(ValueError, match=f"{ENV_URL} must be a PostgreSQL URL") as info:
        postgres_local.external_database_url({ENV_URL: value})
    assert "secret" not in str(info.value)  # the password masked


def test_external_url_that_is_no_url() -> None:
    with pytest.raises(ValueError, match=f"{ENV_URL} is not a database URL"):
        postgres_local.external_database_url({ENV_URL: "localhost:5432"})


def test_external_url_postgresql() -> None:
    pick = postgres_local.external_database_url
    assert pick({}) is None
    assert pick({ENV_URL: "  "}) is None
    url = "postgresql+psycopg://u:p%40ss@db.example:5433/app"
    assert pick({ENV_URL: url}) == url
    # no driver: psycopg 3's (SQLAlchemy's default would be psycopg2, not installed)
    assert pick({ENV_URL: "postgresql://u@h/app"}) == "postgresql+psycopg://u@h/app"
    assert pick({ENV_URL: "postgresql+psycopg2://u@h/app"}) == "postgresql+psycopg2://u@h/app"


def test_session_uses_the_external_url(
    postgres_server: PostgresServer | None, postgres_url: str
) -> None:
    external = postgres_local.external_database_url()
    if external is None:
        assert postgres_server is not None and postgres_url == postgres_server.url
    else:
        assert postgres_server is None and postgres_url == external


# --- finding the server programs ------------------------------------------------------------


def _fake_bindir(
    root: Path, version: str, names: tuple[str, ...] = ("initdb", "pg_ctl", "postgres")
) -> Path:
    bindir = root / version / "bin"
    bindir.mkdir(parents=True)
    for name in names:
        prog = bindir / name
        prog.write_text("#!/bin/sh\n")
        prog.chmod(prog.stat().st_mode | stat.S_IXUSR)
    return bindir


def test_binaries_newest_version(tmp_path: Path) -> None:
    _fake_bindir(tmp_path, "9.6")
    _fake_bindir(tmp_path, "12")
    _fake_bindir(tmp_path, "16", names=("initdb", "pg_ctl"))  # no postgres: not a server
    found = postgres_local.find_binaries(path="", pattern=str(tmp_path / "*" / "bin"))
    assert found.initdb == tmp_path / "12" / "bin" / "initdb"
    assert {p.parent for p in found} == {tmp_path / "12" / "bin"}


def test_binaries_on_path_come_first(tmp_path: Path) -> None:
    on_path = _fake_bindir(tmp_path / "path", "x")
    _fake_bindir(tmp_path / "lib", "17")
    found = postgres_local.find_binaries(path=str(on_path), pattern=str(tmp_path / "lib/*/bin"))
    assert found.pg_ctl == on_path / "pg_ctl"


def test_binaries_missing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="make postgres") as info:
        postgres_local.find_binaries(path=str(tmp_path), pattern=str(tmp_path / "*" / "bin"))
    assert ENV_URL in str(info.value)


# --- the server -----------------------------------------------------------------------------


def test_server_answers(postgres_url: str, postgres_server: PostgresServer | None) -> None:
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SELECT version()")).scalar_one()
            database = conn.execute(text("SELECT current_database()")).scalar_one()
            fsync = conn.execute(text("SHOW fsync")).scalar_one()
    finally:
        engine.dispose()
    assert version.startswith("PostgreSQL "), version
    if postgres_server is not None:  # the local server, as tools/postgres_local.py sets it up
        assert database == "relayer_test"
        assert fsync == "off"
        assert postgres_server.running
        assert postgres_server.url == (
            f"postgresql+psycopg://postgres@127.0.0.1:{postgres_server.port}/relayer_test"
        )
        assert postgres_server.start_seconds is not None
        assert postgres_server.start_seconds < 30, postgres_server.start_seconds
        if os.geteuid() == 0:  # PostgreSQL will not run as root
            assert postgres_server.data_dir.stat().st_uid != 0


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie does not: pg_ctl's postmaster is reparented to pid 1,
    which may reap it a while after it exits."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"


def test_server_start_stop() -> None:
    """A second server of its own: start, answer, stop; nothing left running or on disk."""
    server = PostgresServer(database="other")
    with server:
        pid, temp_dir = server.pid, server.dir
        assert pid is not None and temp_dir is not None
        engine = create_engine(server.url)
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SELECT current_database()")).scalar_one() == "other"
        finally:
            engine.dispose()
    assert not server.running
    assert not temp_dir.exists() and server.dir is None
    assert not _alive(pid)
    server.stop()  # twice: a no-op


# --- a fresh database per test --------------------------------------------------------------

_seen: dict[str, list[str]] = {}  # database_url's param -> the URLs of the runs so far


@pytest.mark.parametrize("run", [1, 2])
def test_database_is_fresh(
    run: int,
    database_url: str,
    engine_factory: Callable[..., Engine],
    request: pytest.FixtureRequest,
) -> None:
    """Runs twice per backend: each run must find no table, though each leaves one behind."""
    engine = engine_factory()
    assert inspect(engine).get_table_names() == []
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE leftover (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO leftover (id) VALUES (1)"))
    assert inspect(engine).get_table_names() == ["leftover"]

    backend = engine.dialect.name
    previous = _seen.setdefault(backend, [])
    assert database_url not in previous
    if backend == "postgresql":
        name = engine.url.database
        assert name is not None and name.startswith("t_") and len(name) == 2 + 32
        with engine.connect() as conn:  # the earlier runs' databases were dropped
            names = conn.execute(text("SELECT datname FROM pg_database")).scalars().all()
        for url in previous:
            assert make_url(url).database not in names
    previous.append(database_url)


def test_insert_select(
    database_url: str, engine_factory: Callable[..., Engine], tmp_path: Path
) -> None:
    engine = engine_factory()
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE outbox (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)"))
        conn.execute(
            text("INSERT INTO outbox (id, payload) VALUES (:id, :payload)"),
            [{"id": i, "payload": f"event-{i}"} for i in range(1, 4)],
        )
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, payload FROM outbox ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [(1, "event-1"), (2, "event-2"), (3, "event-3")]
    if engine.dialect.name == "sqlite":
        assert database_url == f"sqlite:///{tmp_path / 'outbox.db'}"
        assert (tmp_path / "outbox.db").is_file()
    else:
        assert engine.dialect.name == "postgresql"


# --- row locks: SELECT ... FOR UPDATE SKIP LOCKED ----------------------------------------------

CLAIM = text("SELECT id FROM jobs ORDER BY id LIMIT 5 FOR UPDATE SKIP LOCKED")


@POSTGRES_ONLY
def test_skip_locked(database_url: str, engine_factory: Callable[..., Engine]) -> None:
    """Two workers claim rows at once: neither gets a row the other holds locked."""
    engine = engine_factory(pool_size=3)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE jobs (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO jobs (id) SELECT generate_series(1, 10)"))

    with engine.connect() as a, engine.connect() as b, engine.connect() as c:
        with a.begin():
            claimed_a = a.execute(CLAIM).scalars().all()
            with b.begin():
                claimed_b = b.execute(CLAIM).scalars().all()
                # a third worker finds nothing free, and a's and b's locks are real ones
                with c.begin():
                    assert c.execute(CLAIM).scalars().all() == []
                    for held in (claimed_a[0], claimed_b[0]):
                        with pytest.raises(OperationalError, match="could not obtain lock"):
                            with c.begin_nested():
                                c.execute(
                                    text("SELECT id FROM jobs WHERE id = :id FOR UPDATE NOWAIT"),
                                    {"id": held},
                                )
            # b committed: its rows are free again, a's still are not
            with c.begin():
                assert c.execute(CLAIM).scalars().all() == claimed_b

    assert claimed_a == [1, 2, 3, 4, 5]
    assert sorted(claimed_b) == [6, 7, 8, 9, 10]
    assert not set(claimed_a) & set(claimed_b)
