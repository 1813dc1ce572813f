"""Redis from Debian's packages, started as a daemon on the port of REDIS_URL."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

from devservices.process import ServiceError, apt_install, port_open


def ensure(redis_url: str, var_dir: Path) -> bool:
    """Install and start Redis unless it answers already. Returns True if started now."""
    url = urlsplit(redis_url)
    host, port = url.hostname or "127.0.0.1", url.port or 6379
    if host not in ("127.0.0.1", "localhost") or port_open(host, port):
        return False
    apt_install("redis-server")
    var_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            # A password in REDIS_URL (redis://:password@host:port/0) is required of every client.
            *(["--requirepass", url.password] if url.password else []),
            "--pidfile",
            str(var_dir / f"redis-{port}.pid"),
            "--logfile",
            str(var_dir / f"redis-{port}.log"),
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ServiceError(f"redis: could not start on port {port}: {result.stderr.strip()}")
    deadline = time.monotonic() + 10
    while not port_open(host, port):
        if time.monotonic() > deadline:
            raise ServiceError(f"redis: not answering on {host}:{port} after 10s; see {var_dir}/redis-{port}.log")
        time.sleep(0.05)
    return True


def version(redis_url: str) -> str | None:
    import redis

    try:
        info = redis.Redis.from_url(redis_url, socket_connect_timeout=1).info("server")
    except redis.RedisError:
        return None
    return str(info.get("redis_version"))
