"""What operators' commands print: any text from a client or a topic, with its control characters escaped.

An account name (or any record) holding ESC[2J, an OSC title sequence, a newline or a bidi override would
otherwise clear, retitle or fake lines on the operator's terminal. `safe` is the one function for it;
`OperatorCommand` applies it to every line a command writes (one write, one line: a command that means
two lines writes twice).
"""

from __future__ import annotations

import sys
import unicodedata
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from prometheus_client import start_http_server

# Controls (C0, DEL, C1: ESC, CR, LF, ...), format characters (bidi overrides and isolates, zero-width),
# and the line and paragraph separators.
_ESCAPED = {"Cc", "Cf", "Zl", "Zp"}


def safe(text: str) -> str:
    """`text` with every control, format and line-separator character written as a visible escape (\\x1b, \\u202e)."""
    if text.isprintable():
        return text
    return "".join(
        (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}") if unicodedata.category(c) in _ESCAPED else c
        for c in text
    )


class SafeOutput(OutputWrapper):
    def write(self, msg: str = "", style_func: Any = None, ending: str | None = None) -> None:  # type: ignore[override]
        super().write(safe(msg), style_func, ending)


class OperatorCommand(BaseCommand):
    """A management command whose stdout and stderr escape what they print (see `safe`)."""

    def __init__(
        self, stdout: Any = None, stderr: Any = None, no_color: bool = False, force_color: bool = False
    ) -> None:
        super().__init__(stdout, stderr, no_color, force_color)
        safe_stderr = SafeOutput(stderr or sys.stderr)
        safe_stderr.style_func = self.stderr.style_func  # errors in red on a terminal, as BaseCommand styles them
        self.stdout, self.stderr = SafeOutput(stdout or sys.stdout), safe_stderr

    def execute(self, *args: Any, **options: Any) -> Any:
        for name in ("stdout", "stderr"):
            if options.get(name):
                stream = options.pop(name)
                setattr(self, name, SafeOutput(stream))
                options[f"raw_{name}"] = stream  # for what writes its own bytes there (a progress bar)
        return super().execute(*args, **options)

    # What the commands that read the whole log (replay, rebuild) share: which projections, a bar, metrics.

    def add_log_reader_arguments(self, parser: CommandParser, metrics_help: str) -> None:
        from projections import registry  # the registry imports models: only once Django is set up

        parser.add_argument(
            "--projection", choices=list(registry.PROJECTIONS), action="append", help="only this one (repeatable)"
        )
        parser.add_argument("--noinput", "--no-input", action="store_true", help="do not ask for confirmation")
        parser.add_argument("--no-progress", action="store_true")
        parser.add_argument("--metrics-port", type=int, default=0, help=metrics_help)

    def start_metrics(self, options: dict[str, Any]) -> None:
        if options.get("metrics_port"):
            start_http_server(options["metrics_port"])

    def progress_file(self, options: dict[str, Any]) -> Any:
        """Where a progress bar writes: the command's own stderr (call_command's stderr=, or the process's)."""
        return options.get("raw_stderr") or sys.stderr

    def confirm(self, question: str, cancelled: str = "cancelled") -> None:
        """Ask `question` unless --noinput; anything but 'yes' (or no terminal to ask on) cancels."""
        try:
            answer = input(question)
        except EOFError:  # no terminal (a script, CI): say how, instead of a traceback
            raise CommandError(f"{cancelled}: no answer to the confirmation; pass --noinput") from None
        if answer.strip().lower() != "yes":
            raise CommandError(cancelled)
