"""Run a throwaway local PostgreSQL server (for the database tests), without Docker.

Uses an installed PostgreSQL's server programs (``make postgres`` installs Debian's):
``initdb``, ``pg_ctl`` and ``postgres`` from PATH, else from the newest
``/usr/lib/postgresql/<version>/bin``.

    python -m tools.postgres_local run [--port N]   # foreground server until Ctrl-C

``PostgresServer`` makes a new cluster in a temp dir (``trust`` auth, superuser ``postgres``),
starts it on 127.0.0.1 on a free port with its unix socket in that dir, and creates the
database ``relayer_test``; ``url`` is its SQLAlchemy URL (psycopg 3). PostgreSQL refuses to
run as root: as root, the temp dir is given to the ``postgres`` OS user and the server
programs run as that user (``runuser``, else ``su``).

``external_database_url`` reads ``$RELAYER_TEST_DATABASE_URL`` (an existing server to use
instead); ``create_database`` / ``drop_database`` make and remove the tests' databases.

Standard library only, except the functions that connect (SQLAlchemy 2 and psycopg 3,
imported when called).
"""

from __future__ import annotations

import argparse
import atexit
import glob
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

ENV_URL = "RELAYER_TEST_DATABASE_URL"
DEFAULT_DATABASE = "relayer_test"
SUPERUSER = "postgres"  # the database superuser initdb creates (trust auth: no password)
OS_USER = "postgres"  # who runs the server when we are root (Debian's package creates it)
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
# Durability off (a throwaway cluster), and quiet: the fastest start and the fastest tests.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",  # failed statements are the tests' business
}
NOT_FOUND = (
    "PostgreSQL's server programs (initdb, pg_ctl, postgres) were not found on PATH or in "
    f"{DEBIAN_BINDIRS}: run `make postgres` (installs Debian's postgresql package), "
    f"or set {ENV_URL} to an existing server, e.g. postgresql+psycopg://user:password@host:5432/db"
)


class Binaries(NamedTuple):
    """The server programs of one PostgreSQL installation."""

    initdb: Path
    pg_ctl: Path
    postgres: Path


def _version_key(bindir: str) -> tuple[int, ...]:
    """``/usr/lib/postgresql/9.6/bin`` -> ``(9, 6)``; unparsable versions sort first."""
    name = Path(bindir).parent.name
    return tuple(map(int, name.split("."))) if re.fullmatch(r"\d+(\.\d+)*", name) else (-1,)


def find_binaries(path: str | None = None, pattern: str = DEBIAN_BINDIRS) -> Binaries:
    """``initdb``, ``pg_ctl`` and ``postgres``: all three from ``path`` (default: ``$PATH``),
    else from the newest directory matching ``pattern`` that has all three.

    Raises RuntimeError (saying to run ``make postgres``) when there are none.
    """
    on_path = [shutil.which(name, path=path) for name in Binaries._fields]
    if all(on_path):
        return Binaries(*(Path(p) for p in on_path if p))
    for bindir in sorted(glob.glob(pattern), key=_version_key, reverse=True):
        found = [Path(bindir) / name for name in Binaries._fields]
        if all(p.is_file() and os.access(p, os.X_OK) for p in found):
            return Binaries(*found)
    raise RuntimeError(NOT_FOUND)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (``start`` retries if it is taken)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def external_database_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The URL in ``$RELAYER_TEST_DATABASE_URL`` (None if unset or empty).

    It must be a PostgreSQL URL: anything else raises ValueError, so that the PostgreSQL
    tests never run on another database by mistake. Without a driver (``postgresql://``)
    it gets psycopg 3's (``postgresql+psycopg://``), the one the test extras install.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    raw = (os.environ if environ is None else environ).get(ENV_URL, "").strip()
    if not raw:
        return None
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise ValueError(f"{ENV_URL} is not a database URL: {exc}") from None
    if url.get_backend_name() != "postgresql":
        raise ValueError(
            f"{ENV_URL} must be a PostgreSQL URL (postgresql+psycopg://user:password@host:port/"
            f"database), not a {url.get_backend_name()!r} one: {url!r}"
        )
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def with_database(url: str, database: str) -> str:
    """``url`` with its database replaced by ``database``."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return repr(make_url(url))  # the password masked


def wait_ready(url: str, timeout: float = 30.0, logs: Sequence[Path] = ()) -> None:
    """Wait until the server at ``url`` answers ``SELECT 1``, at most ``timeout`` seconds;
    else raise RuntimeError with the last connection error and the tail of ``logs``."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 5})
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return
            except OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL at {_safe(url)} not answering after {timeout:.0f} s: "
                        f"{exc.orig}\n{log_tail(*logs)}"
                    ) from None
            time.sleep(0.1)
    finally:
        engine.dispose()


def _autocommit(url: str, statement: str, name: str) -> None:
    """Run ``statement``, with ``{name}`` the quoted database name, over an
    autocommit connection to ``url`` (CREATE and DROP DATABASE cannot run in a
    transaction)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            quoted = engine.dialect.identifier_preparer.quote(name)
            conn.execute(text(statement.format(name=quoted)))
    finally:
        engine.dispose()


def create_database(url: str, name: str | None = None) -> str:
    """Create the database ``name`` (default: a new ``t_<32 hex>``) on the server of ``url``,
    over an autocommit connection to ``url``'s own database; return ``url`` with it."""
    name = name or f"t_{uuid.uuid4().hex}"
    _autocommit(url, "CREATE DATABASE {name}", name)
    return with_database(url, name)


def drop_database(url: str, maintenance_url: str) -> None:
    """Drop ``url``'s database if it exists, from a connection to ``maintenance_url`` (another
    database on the same server). ``WITH (FORCE)`` (PostgreSQL 13+) ends the sessions still
    open on it; dispose of your engines first all the same."""
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    if not name or name == make_url(maintenance_url).database:
        raise ValueError(f"will not drop {name!r} over a connection to itself")
    _autocommit(maintenance_url, "DROP DATABASE IF EXISTS {name} WITH (FORCE)", name)


def log_tail(*paths: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of each existing file."""

    def tail(path: Path) -> str:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    text = "\n".join(f"--- {p} ---\n{tail(p)}" for p in map(Path, paths) if p.is_file())
    return text or ("(no server log yet)" if paths else "")


def as_server_user(argv: list[str]) -> list[str]:
    """``argv`` as it must run to start or stop a server: unchanged, or, when we are root,
    through ``runuser -u postgres --`` (else ``su postgres -s /bin/sh -c``)."""
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
    if runuser:
        return [runuser, "-u", OS_USER, "--", *argv]
    su = shutil.which("su") or "/bin/su"
    return [su, OS_USER, "-s", "/bin/sh", "-c", shlex.join(argv)]


def _server_user_ids() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam(OS_USER)
    except KeyError:
        raise RuntimeError(
            f"PostgreSQL refuses to run as root, and there is no {OS_USER!r} OS user to run it "
            f"as: run `make postgres` (Debian's postgresql package creates it), or set {ENV_URL}"
        ) from None
    return entry.pw_uid, entry.pw_gid


_RUNNING: set[PostgresServer] = set()  # stopped at interpreter exit


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop(timeout=10)


class PostgresServer:
    """A throwaway PostgreSQL cluster in a temp dir, served on 127.0.0.1 (see the module doc).

    The port is chosen at construction (``url`` can be handed out before ``start()``);
    ``stop()`` shuts the server down and removes the temp dir, data and log included.
    """

    def __init__(
        self,
        port: int | None = None,
        database: str = DEFAULT_DATABASE,
        *,
        binaries: Binaries | None = None,
        base_dir: Path | None = None,
    ):
        self.port = port or free_port()
        self._fixed_port = port is not None
        self.database = database
        self.binaries = binaries  # found by start() if None
        self.base_dir = base_dir  # where the temp dir goes (default: $TMPDIR)
        self.dir: Path | None = None  # the temp dir: data/, server.log and the unix socket
        self.start_seconds: float | None = None  # how long the last start() took

    @property
    def url(self) -> str:
        """``postgresql+psycopg://postgres@127.0.0.1:PORT/relayer_test``."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def data_dir(self) -> Path:
        assert self.dir is not None, "not started"
        return self.dir / "data"

    @property
    def log_file(self) -> Path:
        assert self.dir is not None, "not started"
        return self.dir / "server.log"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs (from ``postmaster.pid``), else None."""
        if self.dir is None:
            return None
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    def _run(self, argv: list[str], timeout: float, what: str) -> str:
        """Run a server program (as the server's OS user); its output, or RuntimeError."""
        cmd = as_server_user(argv)
        try:
            res = subprocess.run(
                cmd,
                cwd=self.dir,  # readable by the server user, unlike the caller's directory
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"{what} did not finish in {timeout:.0f} s: {shlex.join(cmd)}\n"
                f"{log_tail(self.log_file)}"
            ) from exc
        if res.returncode != 0:
            raise RuntimeError(
                f"{what} failed (exit code {res.returncode}): {shlex.join(cmd)}\n"
                f"{res.stdout}{res.stderr}{log_tail(self.log_file)}"
            )
        return res.stdout

    def start(self, timeout: float = 60.0) -> PostgresServer:
        """initdb, start and wait (at most ``timeout`` seconds) until the server accepts
        connections, then create the database. On failure everything is stopped and removed,
        and RuntimeError says why (with the tail of the server log)."""
        if self.running:
            return self
        t0 = time.monotonic()
        deadline = t0 + timeout
        binaries = self.binaries = self.binaries or find_binaries()
        self.dir = Path(tempfile.mkdtemp(prefix="relayer-postgres-", dir=self.base_dir))
        _RUNNING.add(self)
        try:
            if os.geteuid() == 0:
                os.chown(self.dir, *_server_user_ids())
            self._run(
                [
                    str(binaries.initdb),
                    f"--pgdata={self.data_dir}",
                    "--auth=trust",
                    f"--username={SUPERUSER}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                timeout=max(deadline - time.monotonic(), 1),
                what="initdb",
            )
            for attempt in range(3):  # the free port may have been taken in the meantime
                try:
                    self._pg_ctl_start(deadline)
                    break
                except RuntimeError:
                    in_use = "could not bind" in log_tail(self.log_file, lines=5)
                    if self._fixed_port or not in_use or attempt == 2:
                        raise
                    self.port = free_port()
            wait_ready(
                self.url_for("postgres"),
                timeout=max(deadline - time.monotonic(), 1),
                logs=[self.log_file],
            )
            create_database(self.url_for("postgres"), self.database)
        except BaseException:
            self.stop(timeout=10)
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _pg_ctl_start(self, deadline: float) -> None:
        assert self.binaries is not None and self.dir is not None
        settings = {
            **SERVER_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": str(self.dir),
        }
        options = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        wait = max(int(deadline - time.monotonic()), 1)
        self._run(
            [
                str(self.binaries.pg_ctl),
                "start",
                f"--pgdata={self.data_dir}",
                f"--log={self.log_file}",
                "--wait",
                f"--timeout={wait}",
                "-p",
                str(self.binaries.postgres),
                "-o",
                shlex.join(options),  # pg_ctl runs postgres through /bin/sh
            ],
            timeout=wait + 10,
            what=f"pg_ctl start (port {self.port})",
        )

    def stop(self, timeout: float = 30.0) -> None:
        """``pg_ctl stop -m immediate`` (SIGKILL after ``timeout`` seconds), then remove the
        temp dir. Safe to call twice, or after a failed start."""
        if self.binaries is not None and self.running:
            pid = self.pid
            try:
                self._run(
                    [
                        str(self.binaries.pg_ctl),
                        "stop",
                        f"--pgdata={self.data_dir}",
                        "--mode=immediate",
                        "--wait",
                        f"--timeout={max(int(timeout), 1)}",
                    ],
                    timeout=timeout + 5,
                    what="pg_ctl stop",
                )
            except RuntimeError:
                if pid is not None and self.running:
                    os.kill(pid, signal.SIGKILL)  # its backends exit when they see it gone
        _RUNNING.discard(self)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.postgres_local", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a throwaway server in the foreground until Ctrl-C")
    run.add_argument("--port", type=int)
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # like Ctrl-C
    with PostgresServer(args.port) as server:
        print(
            f"PostgreSQL ready in {server.start_seconds:.1f} s: {server.url} "
            f"(data: {server.data_dir}). Ctrl-C to stop.",
            flush=True,
        )
        try:
            while server.running:
                time.sleep(0.5)
            print(f"PostgreSQL exited\n{log_tail(server.log_file)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
            return 0


if __name__ == "__main__":
    sys.exit(main())
