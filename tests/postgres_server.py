"""A PostgreSQL server of its own on 127.0.0.1, for the tests and benchmarks that need a real one."""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def missing() -> str | None:
    """Why no server can be started here (None when one can)."""
    if _binary("initdb") is None or _binary("pg_ctl") is None:
        return "PostgreSQL is not installed (initdb/pg_ctl not found; Debian: apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no postgres user to run initdb and pg_ctl as"
    try:
        import psycopg  # noqa: F401  (the driver SQLAlchemy uses for postgresql:// URLs)
    except ImportError:
        return "the PostgreSQL driver psycopg is not installed (pip install 'autocomp[postgres]')"
    return None


@dataclass(frozen=True)
class PostgresServer:
    """A running server: its SQLAlchemy URL, and how to stop and start it again on the same port and data."""

    url: str
    folder: Path
    port: int
    as_user: tuple[str, ...]
    """The command prefix that runs pg_ctl as the postgres user when this process is root (pg_ctl refuses root)."""

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c max_connections=100"
        self.pg_ctl("-o", options, "-l", str(self.folder / "log"), "-w", "start")

    def restart(self, down_seconds: float) -> None:
        """Stop the server (its connections ended, their open transactions rolled back), leave it down
        ``down_seconds`` (connections refused), and start it again."""
        self.pg_ctl("-m", "fast", "-w", "stop")
        time.sleep(down_seconds)
        self.start()

    def pg_ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run(
            [*self.as_user, _binary("pg_ctl"), "-D", str(self.folder / "data"), *args], check=check, capture_output=True
        )


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a server (as the postgres user when run as root: initdb and pg_ctl refuse root) with a plain
    postgresql:// URL (SQLAlchemy's default driver, psycopg); stop it and delete its files afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="autocomp-postgres-"))  # pytest's own temp root is private to this user
    port = free_port()
    as_user: tuple[str, ...] = ()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        as_user = ("runuser", "-u", "postgres", "--")
    server = PostgresServer(f"postgresql://autocomp@127.0.0.1:{port}/postgres", folder, port, as_user)
    try:
        subprocess.run(
            [*as_user, _binary("initdb"), "-D", str(folder / "data"), "-A", "trust", "-U", "autocomp"],
            check=True,
            capture_output=True,
        )
        server.start()
        yield server
    finally:
        if (folder / "data" / "postmaster.pid").exists():
            server.pg_ctl("-m", "immediate", "stop", check=False)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """A `running_postgres` server's SQLAlchemy URL."""
    with running_postgres() as server:
        yield server.url


def _binary(name: str) -> str | None:
    """The newest Debian-installed PostgreSQL's ``name`` (versions compared as numbers), else the one on PATH."""
    found = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    newest = max(found, key=lambda path: [int(part) for part in re.findall(r"\d+", Path(path).parts[-3])], default=None)
    return newest or shutil.which(name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
