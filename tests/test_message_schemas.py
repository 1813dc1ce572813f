"""`manage.py message_schemas`: the specs' JSON schemas, listed or written on request."""

from __future__ import annotations

import io
import json
from pathlib import Path

from django.core.management import call_command

from bank.messages import json_schemas


def test_it_lists_a_schema_per_message_type_and_version() -> None:
    out = io.StringIO()
    call_command("message_schemas", stdout=out)
    assert out.getvalue().split() == list(json_schemas())


def test_it_writes_the_schemas_only_where_it_is_told(tmp_path: Path) -> None:
    call_command("message_schemas", "--write", str(tmp_path), stdout=io.StringIO())
    written = {
        p.relative_to(tmp_path).with_suffix("").as_posix(): json.loads(p.read_text()) for p in tmp_path.rglob("*.json")
    }
    assert written == json_schemas()
    assert "events/AccountOpened.v1" in written
