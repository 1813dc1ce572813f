"""The bank's processes under supervisord: N daphne processes sharing one socket, the processor, the projector.

`python -m server.supervise` writes `var/supervisor/supervisord.conf` and runs supervisord in the
foreground (what `./run` does); `--only web` runs just the web processes (the web container).

- Web: supervisor's `[fcgi-program]` opens the listening socket once and hands it to every
  daphne as fd 0 (`daphne --fd 0`), as Channels' deployment documentation does: the kernel
  spreads connections over the processes, and websockets need no stickiness because the
  channel layer (Redis) is shared. WEB_PROCESSES processes, by default one per core.
- Workers: a worker that exits is started again. One that dies within `startsecs` of its
  start is retried with supervisor's back-off (1 s, 2 s, 3 s, ... longer each time) instead
  of a tight crash loop; every exit and spawn is a line in supervisord's log.
- Ctrl-C (SIGINT) or SIGTERM to supervisord stops every process with SIGTERM (they finish
  their batch) and waits for them; the children run in their own process groups.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bank.config import env_int

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ("web", "processor", "projector")


def default_web_processes() -> int:
    """WEB_PROCESSES, or one per core when it is 0 or unset."""
    return env_int("WEB_PROCESSES", 0, minimum=0) or os.cpu_count() or 1


def config(
    var: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    web_processes: int = 1,
    only: tuple[str, ...] = PROGRAMS,
    python: str = sys.executable,
    startsecs: int = 10,
    logs: Path | None = None,
    env_dir: Path | None = None,
) -> str:
    """The text of a supervisord.conf; its socket and pid file under `var`.

    Every process logs to supervisord's stdout (the terminal, the container's log), or with
    `logs` to a file of its own there.
    """
    state = var / "supervisor"
    common = (
        f"directory={ROOT}\nautostart=true\nautorestart=true\nstartsecs={startsecs}\nstartretries=100\n"
        "stopsignal=TERM\nstopwaitsecs=15\nstopasgroup=true\nkillasgroup=true\nredirect_stderr=true\n"
        + (f"stdout_logfile={logs}/%(program_name)s.log" if logs else "stdout_logfile=/dev/stdout")
        + "\nstdout_logfile_maxbytes=0"
    )
    sections = [
        "[supervisord]",
        "nodaemon=true",
        f"logfile={state / 'supervisord.log'}",  # and stdout, in the foreground
        "logfile_maxbytes=10MB",
        f"pidfile={state / 'supervisord.pid'}",
        f"childlogdir={state}",
        "",
        "[unix_http_server]",
        f"file={state / 'supervisor.sock'}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{state / 'supervisor.sock'}",
        "",
    ]
    if "web" in only:
        sections += [
            "[fcgi-program:web]",
            f"socket=tcp://{host}:{port}",
            f"command={python} -m daphne --fd 0 --proxy-headers server.asgi:application",
            "process_name=web-%(process_num)d",
            f"numprocs={web_processes}",
            common,
            *_environment(env_dir, "web"),
            "",
        ]
    for name, command in (("processor", "run_processor"), ("projector", "run_projector")):
        if name in only:
            sections += [
                f"[program:{name}]",
                f"command={python} manage.py {command}",
                common,
                *_environment(env_dir, name),
                "",
            ]
    return "\n".join(sections)


def _environment(env_dir: Path | None, program: str) -> list[str]:
    """`environment=` from `<env_dir>/<program>.env` (KEY=value lines): each process as its own Kafka principal
    (`./run --cluster`, whose files `python -m devservices up` writes)."""
    if env_dir is None:
        return []
    pairs = [line.split("=", 1) for line in (env_dir / f"{program}.env").read_text().splitlines() if "=" in line]
    quoted = ",".join(f'{key}="{value.replace("%", "%%")}"' for key, value in pairs)
    return [f"environment={quoted}"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--web-processes", type=int, default=None, help="default: WEB_PROCESSES, else the core count")
    parser.add_argument("--only", nargs="+", choices=PROGRAMS, default=list(PROGRAMS))
    parser.add_argument("--var", type=Path, default=ROOT / "var")
    parser.add_argument("--env-dir", type=Path, help="per-program environment files <program>.env (./run --cluster)")
    args = parser.parse_args(argv)
    web_processes = args.web_processes or default_web_processes()
    (args.var / "supervisor").mkdir(parents=True, exist_ok=True)
    path = args.var / "supervisor" / "supervisord.conf"
    path.write_text(config(args.var, args.host, args.port, web_processes, tuple(args.only), env_dir=args.env_dir))
    supervisord = Path(sys.executable).with_name("supervisord")
    os.execv(supervisord, [str(supervisord), "-c", str(path)])


if __name__ == "__main__":
    main()
