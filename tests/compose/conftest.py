"""The compose test runs only when asked for by marker (`-m compose`, as scripts/compose-test does): it takes minutes
and a Docker daemon of its own, so the rest of the suite never pulls it in."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "compose" in (config.option.markexpr or ""):
        return
    deselected = [item for item in items if item.get_closest_marker("compose")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("compose")]
