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

from django.core.management.base import BaseCommand, OutputWrapper

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
