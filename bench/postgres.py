"""Fresh databases on the benchmark's PostgreSQL server, each dropped at the end.

The server is shared (other people's tests use it), so every database the
benchmark makes has a unique name, ``taskpool_bench_<random>_<role>``, and
is dropped with ``FORCE`` when the run ends, whatever happens.
"""

from __future__ import annotations

import os
import secrets
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

#: The environment variables that may name the server, in order.
SERVER_VARIABLES = ("TASKPOOL_BENCH_POSTGRES", "TASKPOOL_TEST_POSTGRES")


def server_url() -> str | None:
    """``postgresql://…`` of the server to use, or ``None`` when none is configured."""
    for name in SERVER_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return None


class Databases:
    """The databases of one run: ``create(role)`` makes one and gives its URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"taskpool_bench_{secrets.token_hex(4)}"
        self.names: list[str] = []
        self._admin = psycopg.connect(url, autocommit=True, connect_timeout=10)

    def create(self, role: str) -> str:
        name = f"{self.prefix}_{role}"
        self._admin.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return self.url_of(name)

    def url_of(self, name: str) -> str:
        return urlunsplit(urlsplit(self.url)._replace(path=f"/{name}"))

    def setting(self, name: str) -> str:
        """A server setting, as ``SHOW`` gives it."""
        return self._admin.execute(f"SHOW {name}").fetchone()[0]

    def version(self) -> str:
        return self._admin.execute("SHOW server_version").fetchone()[0]

    def drop_all(self) -> None:
        for name in reversed(self.names):
            self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.names.clear()
        self._admin.close()


def connection_params(alias: str) -> dict[str, Any]:
    """What ``psycopg.connect`` needs to reach the database of Django's ``alias``."""
    from django.db import connections

    params = connections[alias].get_connection_params()
    return {k: v for k, v in params.items() if isinstance(v, (str, int)) and v != ""}
