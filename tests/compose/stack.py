"""docker-compose.yml run for real on a machine without an image registry (the `compose` test and
`scripts/compose-test`).

What it needs it makes once and keeps in ~/.cache/bank/compose/: Debian's docker.io and debootstrap (apt, when
missing), Docker Compose v2 built from the Go module proxy, a Debian base made by debootstrap and, on it, stand-ins
for every image the compose file names but Grafana (Python, PostgreSQL, Redis, Kafka from Maven Central's jars,
Prometheus), each rebuilt only when its inputs change. The Docker daemon is its own, on a socket under var/compose/,
started for the run and stopped after it. The stack runs as project `bank-compose-test` on free ports of
127.0.0.1, never on the ports a developer's `./run` uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
IMAGES = Path(__file__).resolve().parent / "images"
CACHE = Path(os.environ.get("BANK_COMPOSE_CACHE", Path.home() / ".cache" / "bank" / "compose"))
STATE = ROOT / "var" / "compose"
COMPOSE_VERSION = "v2.29.7"
KAFKA_VERSION = "4.1.1"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
PROJECT = "bank-compose-test"
SUITE = "bookworm"
# The stand-ins: compose variable -> (folder under images/, tag).
STAND_INS = {
    "PYTHON_IMAGE": ("python", "localhost/bank-standin/python:3.11"),
    "POSTGRES_IMAGE": ("postgres", "localhost/bank-standin/postgres:15"),
    "REDIS_IMAGE": ("redis", "localhost/bank-standin/redis:7"),
    "KAFKA_IMAGE": ("kafka", f"localhost/bank-standin/kafka:{KAFKA_VERSION}"),
    "PROMETHEUS_IMAGE": ("prometheus", "localhost/bank-standin/prometheus:2"),
}
BASE_IMAGE = f"localhost/bank-standin/debian:{SUITE}"
NOT_RUN = {"grafana"}  # no image of it can be had here; its provisioning is checked by tests/test_grafana.py
STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[compose {time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


class StackError(AssertionError):
    """A step of the run failed; the message says which and why."""


def run(argv: list[str], timeout: float, what: str, **options: Any) -> subprocess.CompletedProcess[str]:
    """`argv`, bounded by `timeout`; a failure raises with the end of its output."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **options)
    except subprocess.TimeoutExpired as error:
        raise StackError(f"{what}: no answer after {timeout:.0f} s ({' '.join(argv[:4])} ...)") from error
    if done.returncode != 0:
        raise StackError(f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    say(f"waiting for {what} (at most {timeout:.0f} s)")
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except Exception as error:  # a service not up yet answers with all kinds of errors
            last, result = error, None
        if result:
            return result
        time.sleep(interval)
    raise StackError(f"gave up waiting for {what} after {timeout:.0f} s (last error: {last!r})")


# --- tools -----------------------------------------------------------------------------------------------------


def ensure_packages() -> None:
    """Debian's docker.io (dockerd, containerd, runc), iptables and debootstrap."""
    wanted = {"dockerd": "docker.io", "iptables": "iptables", "debootstrap": "debootstrap"}
    missing = sorted({package for binary, package in wanted.items() if shutil.which(binary) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        raise StackError(f"compose test: {', '.join(missing)} missing, and installing them needs root (apt-get)")
    say(f"installing {', '.join(missing)} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(install, capture_output=True, text=True, env=env, timeout=600).returncode != 0:
        run(["apt-get", "update", "-q"], 300, "apt-get update", env=env)
        run(install, 600, f"apt-get install {' '.join(missing)}", env=env)


def ensure_compose() -> Path:
    """Docker Compose v2, built once from the Go module proxy (Debian's docker-compose 1.29 has no `up --wait`)."""
    binary = CACHE / f"docker-compose-{COMPOSE_VERSION}"
    if binary.exists():
        return binary
    if shutil.which("go") is None:
        raise StackError("compose test: Go is needed to build Docker Compose v2 from the Go module proxy")
    say(f"building Docker Compose {COMPOSE_VERSION} from the Go module proxy (once; a few minutes)")
    module = f"github.com/docker/compose/v2@{COMPOSE_VERSION}"
    source = json.loads(run(["go", "mod", "download", "-json", module], 900, f"go mod download {module}").stdout)["Dir"]
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(".partial")
    run(
        ["go", "build", "-trimpath", "-o", str(partial), "./cmd"],
        1800,
        "building docker compose",
        cwd=source,
        env={**os.environ, "CGO_ENABLED": "0"},
    )
    partial.rename(binary)
    return binary


# --- the daemon ----------------------------------------------------------------------------------------------------


class Docker:
    """The `docker` and `docker compose` commands against our own daemon."""

    def __init__(self, socket: Path, compose: Path) -> None:
        plugins = STATE / "cli-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        link = plugins / "docker-compose"
        link.unlink(missing_ok=True)
        link.symlink_to(compose)
        (STATE / "config.json").write_text(json.dumps({"cliPluginsExtraDirs": [str(plugins)]}))
        self.env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{socket}",
            "DOCKER_CONFIG": str(STATE),
            "DOCKER_BUILDKIT": "0",  # the classic builder: dockerd 20.10 without buildx
            "COMPOSE_PROJECT_NAME": PROJECT,
        }

    def __call__(self, *args: str, timeout: float = 120, what: str = "") -> subprocess.CompletedProcess[str]:
        return run(["docker", *args], timeout, what or f"docker {args[0]}", env=self.env)

    def ok(self, *args: str, timeout: float = 30) -> bool:
        try:
            return subprocess.run(["docker", *args], capture_output=True, env=self.env, timeout=timeout).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def label(self, image: str) -> str | None:
        done = subprocess.run(
            ["docker", "image", "inspect", "-f", '{{index .Config.Labels "bank.inputs"}}', image],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=30,
        )
        return done.stdout.strip() if done.returncode == 0 else None


@contextlib.contextmanager
def dockerd(compose: Path) -> Iterator[Docker]:
    """Our own dockerd for the length of the block (images kept in the cache between runs), then stopped.

    One run at a time uses the cache: a second waits (bounded) for the first."""
    CACHE.mkdir(parents=True, exist_ok=True)
    STATE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "dockerd.lock", "w") as lock:
        deadline = time.monotonic() + 1800
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StackError("another compose test run has held the image cache for 30 minutes") from None
                say(f"waiting for another compose test run to finish (lock {CACHE / 'dockerd.lock'})")
                time.sleep(15)
        socket, pid_file = STATE / "docker.sock", STATE / "dockerd.pid"
        _stop_leftover(pid_file)
        socket.unlink(missing_ok=True)
        say(f"starting dockerd on {socket} (log {STATE / 'dockerd.log'})")
        with open(STATE / "dockerd.log", "a") as log:
            daemon = subprocess.Popen(
                [
                    "dockerd",
                    "--host",
                    f"unix://{socket}",
                    "--pidfile",
                    str(pid_file),
                    "--exec-root",
                    str(STATE / "exec"),
                    "--data-root",
                    str(CACHE / "docker"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            docker = Docker(socket, compose)
            wait_until(lambda: daemon.poll() is None and docker.ok("version"), 60, "dockerd to answer", 0.5)
            yield docker
        finally:
            say("stopping dockerd")
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                say("dockerd did not stop in 60 s: killing it")
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait(10)


def _stop_leftover(pid_file: Path) -> None:
    """A dockerd of an earlier run of this work tree that was itself killed: stop it (it is ours, by its pid file)."""
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        pid = int(pid_file.read_text())
        if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"dockerd"):
            say(f"stopping the dockerd a killed run left (pid {pid})")
            os.kill(pid, signal.SIGTERM)
            for _ in range(60):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.5)


# --- images --------------------------------------------------------------------------------------------------------


def apt_mirror() -> str:
    """The Debian mirror apt uses here (debootstrap fetches from it)."""
    for sources in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        with contextlib.suppress(FileNotFoundError):
            for line in sources.read_text().splitlines():
                words = line.split()
                if words[:1] == ["URIs:"] or words[:1] == ["deb"]:
                    uri = words[1] if words[0] == "URIs:" else next(w for w in words[1:] if "://" in w)
                    if "security" not in uri:
                        return uri
    return "http://deb.debian.org/debian"


def ensure_base(docker: Docker) -> str:
    """A minimal Debian from the mirror (debootstrap), imported as an image; made once."""
    mirror = apt_mirror()
    key = digest([f"debootstrap minbase {SUITE} {mirror}".encode()])
    if docker.label(BASE_IMAGE) == key:
        return key
    rootfs = CACHE / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    say(f"making the Debian {SUITE} base with debootstrap from {mirror} (once; ~1-2 minutes)")
    run(["debootstrap", "--variant=minbase", SUITE, str(rootfs), mirror], 900, "debootstrap")
    # No service starts during package installs, and no recommends: as in Debian's own container images.
    (rootfs / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
    (rootfs / "usr/sbin/policy-rc.d").chmod(0o755)
    (rootfs / "etc/apt/apt.conf.d/90standin").write_text('APT::Install-Recommends "false";\n')
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    try:
        run(
            ["docker", "import", "--change", f"LABEL bank.inputs={key}", "-", BASE_IMAGE],
            300,
            "docker import",
            stdin=tar.stdout,
            env=docker.env,
        )
    finally:
        tar.wait(60)
    shutil.rmtree(rootfs, ignore_errors=True)
    return key


def digest(parts: list[bytes]) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(hashlib.sha256(part).digest())
    return hasher.hexdigest()[:32]


def kafka_libs() -> Path:
    """The stand-in Kafka image's jars (images/kafka/pom.xml) from Maven Central, resolved once per pom."""
    pom = IMAGES / "kafka" / "pom.xml"
    libs = CACHE / f"kafka-libs-{digest([pom.read_bytes()])}"
    if (libs / ".complete").exists():
        return libs
    if shutil.which("mvn") is None:
        raise StackError("compose test: Maven (mvn) is needed to fetch Kafka's jars from Maven Central")
    say("fetching Kafka's jars from Maven Central (once)")
    shutil.rmtree(libs, ignore_errors=True)
    run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ],
        900,
        "fetching Kafka's jars",
    )
    (libs / ".complete").write_text(KAFKA_VERSION)
    return libs


def context_of(name: str) -> Path:
    """The build folder of one stand-in: its files in images/<name>/, and what comes from this machine."""
    context = CACHE / "contexts" / name
    shutil.rmtree(context, ignore_errors=True)
    shutil.copytree(IMAGES / name, context)
    if name == "python":
        (context / "ca").mkdir()
        for cert in Path("/usr/local/share/ca-certificates").glob("*.crt"):
            shutil.copy(cert, context / "ca" / cert.name)
    if name == "kafka":
        shutil.copytree(kafka_libs(), context / "libs", ignore=shutil.ignore_patterns(".complete"))
    return context


def ensure_stand_ins(docker: Docker) -> dict[str, str]:
    """Each stand-in built on the base unless an image built from the same inputs is there; {variable: tag}."""
    base = ensure_base(docker)
    images = {}
    for variable, (name, tag) in STAND_INS.items():
        context = context_of(name)
        files = sorted(p for p in context.rglob("*") if p.is_file())
        key = digest([base.encode(), *(str(p.relative_to(context)).encode() + p.read_bytes() for p in files)])
        if docker.label(tag) != key:
            say(f"building the stand-in for {variable}: {tag}")
            started = time.monotonic()
            docker(
                "build",
                "-q",
                "--label",
                f"bank.inputs={key}",
                "--build-arg",
                f"BASE={BASE_IMAGE}",
                "-t",
                tag,
                str(context),
                timeout=1200,
                what=f"building {tag}",
            )
            say(f"built {tag} in {time.monotonic() - started:.0f} s")
        images[variable] = tag
    return images


# --- the stack -----------------------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Stack:
    """docker-compose.yml as a user runs it (`scripts/compose-env`, then `docker compose up --build --wait`), with
    the stand-in images and free ports of 127.0.0.1 given by variables."""

    def __init__(self, docker: Docker, images: dict[str, str]) -> None:
        self.docker = docker
        self.env_file = STATE / "compose.env"
        self.env_file.unlink(missing_ok=True)
        run([str(ROOT / "scripts" / "compose-env"), str(self.env_file)], 30, "scripts/compose-env")
        self.ports = {
            name: free_port()
            for name in ("WEB_PORT", "PROMETHEUS_PORT", "GRAFANA_PORT", "KAFKA_1_PORT", "KAFKA_2_PORT", "KAFKA_3_PORT")
        }
        docker.env.update({**images, **{k: str(v) for k, v in self.ports.items()}, "BIND_ADDRESS": "127.0.0.1"})
        self.web = f"http://127.0.0.1:{self.ports['WEB_PORT']}"
        self.prometheus = f"http://127.0.0.1:{self.ports['PROMETHEUS_PORT']}"

    def compose(self, *args: str, timeout: float = 120, what: str = "") -> subprocess.CompletedProcess[str]:
        return self.docker(
            "compose",
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(self.env_file),
            *args,
            timeout=timeout,
            what=what or f"docker compose {args[0]}",
        )

    def services(self) -> list[str]:
        names = self.compose("config", "--services").stdout.split()
        return [name for name in names if name not in NOT_RUN]

    def up(self) -> float:
        """`up --build --wait` of every service but Grafana; returns the seconds until all were healthy."""
        say(
            f"docker compose up --build --wait (web on {self.web}, Prometheus on {self.prometheus}; "
            f"Kafka on 127.0.0.1:{self.ports['KAFKA_1_PORT']},{self.ports['KAFKA_2_PORT']},{self.ports['KAFKA_3_PORT']})"
        )
        started = time.monotonic()
        self.compose("build", timeout=1200, what="docker compose build (the app image, from the project's Dockerfile)")
        built = time.monotonic()
        say(f"app image built in {built - started:.0f} s; waiting for every service to be healthy (at most 600 s)")
        self.compose(
            "up", "--wait", "--wait-timeout", "600", *self.services(), timeout=660, what="docker compose up --wait"
        )
        healthy = time.monotonic() - built
        say(f"all services healthy {healthy:.0f} s after `up`")
        return healthy

    def diagnose(self) -> None:
        """What a failed run needs to be understood: the containers' states and the last lines of each log."""
        with contextlib.suppress(Exception):
            print(self.compose("ps", "-a").stdout, flush=True)
            print(self.compose("logs", "--no-color", "--tail", "80").stdout[-30000:], flush=True)

    def down(self) -> None:
        say("docker compose down -v")
        self.compose("down", "-v", "--remove-orphans", "--timeout", "20", timeout=180)

    def kill(self, service: str) -> None:
        say(f"killing the {service} container (SIGKILL)")
        self.compose("kill", "-s", "SIGKILL", service)


@contextlib.contextmanager
def stack() -> Iterator[Stack]:
    """Tools, daemon, images, the stack up; `down -v` and the daemon stopped afterwards, whatever happened (a SIGTERM,
    as from a CI's time-out, too)."""
    signal.signal(signal.SIGTERM, _terminated)
    ensure_packages()
    compose = ensure_compose()
    with dockerd(compose) as docker:
        images = ensure_stand_ins(docker)
        running = Stack(docker, images)
        try:
            with contextlib.suppress(StackError):
                running.down()  # what a killed run left behind
            running.healthy_after = running.up()  # type: ignore[attr-defined]
            yield running
        except BaseException:
            running.diagnose()
            raise
        finally:
            running.down()


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(f"compose test: stopped by signal {signum}")
