"""Prometheus from Debian's packages, scraping the local bank: the web server and both workers.

Not started by `./run` unless asked (`BANK_PROMETHEUS=true ./run`, or `python -m devservices prometheus`).
The scrape configuration is written from the addresses given, so tests can point it at their
own processes on free ports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devservices.process import ServiceError, apt_install, pid_alive, port_open, read_pid


@dataclass(frozen=True)
class Target:
    job: str
    address: str  # host:port
    path: str = "/metrics"
    bearer_token: str = ""


def scrape_config(targets: list[Target], interval: str = "2s", rules: list[str] | None = None) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = []
    for target in targets:
        job: dict[str, Any] = {
            "job_name": target.job,
            "metrics_path": target.path,
            "static_configs": [{"targets": [target.address]}],
        }
        if target.bearer_token:
            job["authorization"] = {"type": "Bearer", "credentials": target.bearer_token}
        jobs.append(job)
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": jobs,
    }
    if rules:
        config["rule_files"] = rules
    return config


class PrometheusServer:
    def __init__(self, var_dir: Path, port: int, targets: list[Target], rules: list[str] | None = None) -> None:
        self.dir = var_dir
        self.port = port
        self.targets = targets
        self.rules = rules or []
        self.pid_file = var_dir / "prometheus.pid"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def is_up(self) -> bool:
        pid = read_pid(self.pid_file)
        return pid is not None and pid_alive(pid) and port_open("127.0.0.1", self.port)

    def start(self, wait: float = 30.0) -> bool:
        """Install and start Prometheus unless it runs already. Returns True if started now."""
        if self.is_up():
            return False
        apt_install("prometheus")
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config(self.targets, rules=self.rules), sort_keys=False))
        log = open(self.dir / "prometheus.log", "ab")  # noqa: SIM115 - the daemon keeps writing to it
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=2d",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the command that started it, like the other services
        )
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + wait
        while not self._ready():
            if process.poll() is not None:
                raise ServiceError(f"prometheus exited with {process.returncode}; see {self.dir / 'prometheus.log'}")
            if time.monotonic() > deadline:
                raise ServiceError(f"prometheus not ready on port {self.port} after {wait:.0f}s")
            time.sleep(0.2)
        return True

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self, wait: float = 10.0) -> None:
        pid = read_pid(self.pid_file)
        if pid is None or not pid_alive(pid):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant PromQL query over the HTTP API: the result vector."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise ServiceError(f"prometheus query {promql!r} failed: {body}")
        return list(body["data"]["result"])
