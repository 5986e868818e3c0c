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
from collections.abc import Iterator
from contextlib import contextmanager
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
        import psycopg2  # noqa: F401
    except ImportError:
        return "the PostgreSQL driver psycopg2 is not installed (pip install psycopg2-binary)"
    return None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server (as the postgres user when run as root: initdb and pg_ctl refuse root) and yield its SQLAlchemy
    URL; stop it and delete its files afterwards."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    folder = Path(tempfile.mkdtemp(prefix="autocomp-postgres-"))  # pytest's own temp root is private to this user
    data, port = folder / "data", free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    try:
        subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "autocomp"], check=True,
                       capture_output=True)
        options = f"-h 127.0.0.1 -p {port} -k {folder} -c max_connections=100"
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg2://autocomp@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _binary(name: str) -> str | None:
    """The newest Debian-installed PostgreSQL's ``name`` (versions compared as numbers), else the one on PATH."""
    found = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    newest = max(found, key=lambda path: [int(part) for part in re.findall(r"\d+", Path(path).parts[-3])], default=None)
    return newest or shutil.which(name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
