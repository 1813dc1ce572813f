"""PostgreSQL from Debian's packages: installed, started and given the app's role and database."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from devservices.process import ServiceError, apt_install, port_open


def _cluster_version() -> str:
    versions = sorted((p.name for p in Path("/etc/postgresql").glob("*") if p.name.isdigit()), key=int)
    if not versions:
        raise ServiceError("postgres: no cluster under /etc/postgresql after installing postgresql")
    return versions[-1]


def _psql(sql: str) -> str:
    result = subprocess.run(
        ["su", "postgres", "-c", f"psql -XAtq -v ON_ERROR_STOP=1 -c {_shell_quote(sql)}"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ServiceError(f"postgres: {sql!r} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def _shell_quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def _ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def _literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def ensure(database_url: str) -> bool:
    """Install and start the local cluster, create role and database. Returns True if started now."""
    url = urlsplit(database_url)
    host, port = url.hostname or "127.0.0.1", url.port or 5432
    if host not in ("127.0.0.1", "localhost"):
        return False  # not ours to manage
    started = False
    if not port_open(host, port):
        apt_install("postgresql")
        version = _cluster_version()
        result = subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 and "already running" not in result.stderr:
            raise ServiceError(f"postgres: could not start cluster {version}/main: {result.stderr.strip()}")
        deadline = time.monotonic() + 30
        while not port_open(host, port):
            if time.monotonic() > deadline:
                raise ServiceError(f"postgres: not accepting connections on {host}:{port} after 30s")
            time.sleep(0.2)
        started = True
    user, password = unquote(url.username or "bank"), unquote(url.password or "")
    dbname = url.path.lstrip("/") or "bank"
    if _psql(f"SELECT 1 FROM pg_roles WHERE rolname = {_literal(user)}") != "1":
        # CREATEDB lets the test runner create its own test database.
        _psql(f"CREATE ROLE {_ident(user)} LOGIN CREATEDB PASSWORD {_literal(password)}")
    if _psql(f"SELECT 1 FROM pg_database WHERE datname = {_literal(dbname)}") != "1":
        _psql(f"CREATE DATABASE {_ident(dbname)} OWNER {_ident(user)}")
    return started


def version(database_url: str) -> str | None:
    import psycopg

    try:
        with psycopg.connect(database_url, connect_timeout=2) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else None
    except psycopg.Error:
        return None
