"""`manage.py message_schemas`: the JSON schema of every message type and version, derived from the specs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from bank.messages import json_schemas


class Command(BaseCommand):
    help = "List the message schemas (from bank.messages' specs), or write them as DIR/<kind>/<Type>.v<N>.json."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--write", metavar="DIR", help="write the schemas under DIR (e.g. docs/schemas)")

    def handle(self, *args: Any, **options: Any) -> None:
        schemas = json_schemas()
        if options["write"] is None:
            self.stdout.write("\n".join(schemas))
            return
        root = Path(options["write"])
        for name, schema in schemas.items():
            path = root / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(schema, indent=2) + "\n")
        self.stdout.write(f"wrote {len(schemas)} schemas under {root}")
