"""A throw-away PostgreSQL server for the storage tests and benchmarks.

A cluster in a temporary folder (``initdb --auth=trust``), listening on 127.0.0.1 only on a free
port, removed afterwards. PostgreSQL refuses to run as root, so as root it runs as the
'postgres' user (Debian's ``postgresql`` package creates it) through ``runuser``. The server
binaries are found on PATH or in ``/usr/lib/postgresql/*/bin``; the client is psycopg 3, the
driver SQLAlchemy 2.1 loads for ``postgresql://``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["postgres_missing", "postgres_server"]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).is_file():
            return str(d / name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_missing() -> str | None:
    """Why a throw-away PostgreSQL server cannot be started here (None: it can)."""
    if not (_pg_bin("initdb") and _pg_bin("pg_ctl")):
        return "PostgreSQL server binaries (initdb, pg_ctl; Debian's postgresql) not found"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the psycopg driver is not installed (pip install 'psycopg[binary]')"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root without runuser to start the server as 'postgres'"
    return None


@contextlib.contextmanager
def postgres_server() -> Iterator[dict[str, Any]]:
    """Start the server with one database ``studies``; yields its URL, the server and driver
    versions and how it was set up. Check :func:`postgres_missing` first."""
    import psycopg

    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    prefix = [shutil.which("runuser"), "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="nas-prune-pg-"))
    data, port = root / "data", _free_port()
    if prefix:
        shutil.chown(root, "postgres")
        os.chmod(root, 0o700)
    try:
        subprocess.run([*prefix, initdb, "-D", str(data), "-U", "nas", "--auth=trust", "-E",
                        "UTF8"], check=True, capture_output=True, timeout=180)
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                        f"-p {port} -c listen_addresses=127.0.0.1 -k {root} "
                        f"-c max_connections=300", "start"],
                       check=True, capture_output=True, timeout=180)
        try:
            with psycopg.connect(host="127.0.0.1", port=port, user="nas", dbname="postgres",
                                 autocommit=True) as conn:
                conn.execute("CREATE DATABASE studies")
                version = conn.execute("SHOW server_version").fetchone()[0]
            yield {"url": f"postgresql://nas@127.0.0.1:{port}/studies",
                   "server_version": version, "psycopg": psycopg.__version__,
                   "setup": "initdb --auth=trust, default settings (fsync on), TCP on "
                            "127.0.0.1, max_connections=300"}
        finally:
            subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=180)
    finally:
        shutil.rmtree(root, ignore_errors=True)
