"""The framework overrides (server/fastpath/): each still mirrors the upstream code it was written against,
`BANK_FASTPATH=false` leaves every one of them out, and no other module reaches into upstream internals.

Pure apart from the two subprocesses that load the settings and the ASGI application; starts no service.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server import fastpath
from server.fastpath import OVERRIDES, Override
from tests.test_layers import ROOT, app_modules


def upstream(dotted: str) -> Any:
    """The function, class or property named `module.attr.attr…` (a cached_property: its function)."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            found = vars(found)[name] if isinstance(found, type) else getattr(found, name)
        return getattr(found, "func", found)
    raise ImportError(dotted)


def source_hash(dotted: str) -> str:
    return hashlib.sha256(inspect.getsource(upstream(dotted)).encode()).hexdigest()


@pytest.mark.parametrize("override", OVERRIDES, ids=[o.name for o in OVERRIDES])
def test_it_mirrors_the_upstream_source_it_was_written_against(override: Override) -> None:
    changed = [name for name, digest in override.mirrors.items() if source_hash(name) != digest]
    assert not changed, (
        f"server/fastpath/{override.name.split('.')[0]}.py ({override.name}) was written against {override.version}, "
        f"and upstream changed {', '.join(changed)}: re-diff {override.upstream_file} against the override, "
        f"adapt it (or drop it), then update its hashes in server/fastpath/__init__.py OVERRIDES"
    )


def test_it_notices_a_changed_upstream_source() -> None:
    """The check above can fail: a hash of another function does not match."""
    digest = source_hash("channels.consumer.AsyncConsumer.dispatch")
    assert digest != source_hash("channels.consumer.AsyncConsumer.__call__")
    assert len(digest) == 64


def test_it_lists_every_module_of_the_package_in_its_table() -> None:
    modules = {p.stem for p in (ROOT / "server" / "fastpath").glob("*.py")} - {"__init__"}
    assert {o.name.split(".")[0] for o in OVERRIDES} == modules
    table = (ROOT / "server" / "fastpath" / "README.md").read_text()
    assert all(f"`{o.name}`" in table for o in OVERRIDES)


def wiring(fastpath_env: str) -> dict[str, Any]:
    """What a web process built from the settings and server.asgi runs, with BANK_FASTPATH=`fastpath_env`."""
    probe = """
import json
from server import asgi
from django.conf import settings
from django.core.cache import caches
app = asgi.application.application_mapping
ws = app["websocket"].application
layers = []
while ws is not None and len(layers) < 10:
    layers.append(f"{type(ws).__module__}.{type(ws).__qualname__}")
    ws = getattr(ws, "inner", None)
router = asgi.application.application_mapping["websocket"].application
while not hasattr(router, "routes"):
    router = router.inner
print(json.dumps({
    "fastpath": settings.FASTPATH,
    "http": f"{type(app['http']).__module__}.{type(app['http']).__qualname__}",
    "middleware": settings.MIDDLEWARE,
    "cache": f"{type(caches['default']).__module__}.{type(caches['default']).__qualname__}",
    "websocket": layers,
    "consumer": [f"{r.callback.consumer_class.__module__}.{r.callback.consumer_class.__qualname__}" for r in router.routes],
}))
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "server.settings", "BANK_FASTPATH": fastpath_env}
    # check_connection would wait for a broker: the probe only builds the application.
    env["KAFKA_BOOTSTRAP_SERVERS"] = env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    probe = "import bank.connection\nbank.connection.check_connection = lambda *a, **k: None\n" + probe
    done = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_it_runs_stock_django_and_channels_with_the_fast_path_off() -> None:
    off = wiring("false")
    assert off["fastpath"] is False
    assert off["http"] == "django.core.handlers.asgi.ASGIHandler"
    assert not [m for m in off["middleware"] if m.startswith("server.fastpath")]
    assert [m for m in off["middleware"] if m in fastpath.MIDDLEWARE] == list(fastpath.MIDDLEWARE)
    assert off["cache"] == "web.cache.RedisCache"
    assert off["websocket"][:3] == [
        "channels.sessions.CookieMiddleware",
        "channels.sessions.SessionMiddleware",
        "channels.auth.AuthMiddleware",
    ]
    assert off["consumer"] == ["live.websocket.LiveConsumer"]


def test_it_runs_every_override_with_the_fast_path_on() -> None:
    on = wiring("true")
    assert on["fastpath"] is True
    assert on["http"] == "server.fastpath.asgi_handler.ASGIHandler"
    assert [m for m in on["middleware"] if m.startswith("server.fastpath")] == list(fastpath.MIDDLEWARE.values())
    assert on["cache"] == "server.fastpath.cache.RedisCache"
    assert on["websocket"][2] == "server.fastpath.middleware.WebsocketAuthMiddleware"
    assert on["consumer"] == ["server.fastpath.websocket.LiveConsumer"]


# Private by name only: Django's model options (documented API) and librdkafka's local error codes.
PUBLIC_PRIVATES = {"_meta"}
PUBLIC_OWNERS = {"KafkaError"}


def private_reaches(path: Path, root: Path = ROOT) -> list[str]:
    """`x._name` where x is not self, cls or one of the few owners whose `_names` are public API."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in {"self", "cls", *PUBLIC_OWNERS}:
            continue
        if node.attr in PUBLIC_PRIVATES:
            continue
        found.append(f"{path.relative_to(root)}:{node.lineno} {ast.unparse(node)}")
    return found


def test_it_reaches_into_no_upstream_internals_outside_the_fast_path() -> None:
    fenced = ROOT / "server" / "fastpath"
    found = [hit for _, path in app_modules() if fenced not in path.parents for hit in private_reaches(path)]
    assert found == [], "move the override into server/fastpath/ and add it to its table"


def test_it_would_find_a_reach_into_internals(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text('scope["user"]._wrapped = None\nrequest._cached_user = None\nself._mine = 1\n')
    assert private_reaches(module, tmp_path) == ["probe.py:1 scope['user']._wrapped", "probe.py:2 request._cached_user"]


UPSTREAM = {"django", "channels", "asgiref", "redis", "daphne"}


def private_overrides(cls: type) -> list[str]:
    """Names `cls` defines that are private members of an upstream base (`_cache`, `__acall__`)."""
    found = []
    for base in cls.__mro__[1:]:
        if base.__module__.split(".")[0] not in UPSTREAM:
            continue
        for name in vars(cls):
            if name.startswith("_") and name not in dir(object) and name in vars(base) and name != "__module__":
                found.append(
                    f"{cls.__module__}.{cls.__qualname__}.{name} overrides {base.__module__}.{base.__qualname__}"
                )
    return found


def test_it_overrides_no_private_upstream_member_outside_the_fast_path() -> None:
    found = []
    for _, path in app_modules():
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if name.startswith("server.fastpath") or ".migrations." in name or name in {"server.asgi"}:
            continue
        module = importlib.import_module(name.removesuffix(".__init__"))
        for cls in vars(module).values():
            if isinstance(cls, type) and cls.__module__ == module.__name__:
                found += private_overrides(cls)
    assert found == [], "move the override into server/fastpath/ and add it to its table"


def test_it_would_find_a_private_override() -> None:
    from django.core.cache.backends.redis import RedisCache

    probe = type("Probe", (RedisCache,), {"_cache": None, "get": None, "__init__": None})
    assert private_overrides(probe) == [
        f"{__name__}.Probe._cache overrides django.core.cache.backends.redis.RedisCache"
    ]
