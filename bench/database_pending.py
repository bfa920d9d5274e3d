"""What a device's ``GET /pool/pending`` costs through the whole stack on PostgreSQL.

Django's own tables (devices, users) are in the ``default`` database; each
pool is a ``DatabaseStore`` database of its own (``pool_empty``, and
``pool_full`` loaded by ``bench.database_load``). Requests go through
``bench.run.time_requests``: Django's test client (WSGI) and its ASGI
handler, the demo site's middleware, DRF and a real device JWT, each one
interleaved with an authenticated no-op view, the floor no endpoint beats.
A third endpoint answers each device the very tasks the store answered it,
from memory (``bench.database_views``): between it and the no-op lies what
rendering the answer costs, between it and the real endpoint what the store
costs. Rounds visit the pools in turn, so the machine's drift falls evenly
on both.
Beside the requests, ``pending_for`` itself is timed at the store, and the
statements it runs are timed one by one (``EXPLAIN ANALYZE`` on the server),
so a difference between the pools can be traced to what costs it.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

from bench.stats import median, percentile

PATHS = ("/pool/pending", "/bench/noop", "/bench/pending-from-memory")
NAMES = ("pending", "noop", "memory")


def migrate(aliases: list[str]) -> None:
    """Django's tables in ``default``; each pool alias gets the store's tables only."""
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    for alias in aliases:
        with pool_in(alias):
            call_command("migrate", database=alias, verbosity=0)


def register_devices(devices: list[str]) -> dict[str, str]:
    """Validated devices, seen already (no first ``last_seen`` write); their tokens."""
    from django.utils import timezone

    from taskpool.models import DeviceUser
    from taskpool.tokens import DeviceToken

    DeviceUser.objects.bulk_create(
        [
            DeviceUser(id=device_id, kind="bench", validated=True, last_seen=timezone.now())
            for device_id in devices
        ]
    )
    return {device.id: str(DeviceToken.for_device(device)) for device in DeviceUser.objects.all()}


def pool_in(alias: str) -> Any:
    """``override_settings`` pointing the store at the pool database ``alias``."""
    from django.conf import settings
    from django.test.utils import override_settings

    return override_settings(TASKPOOL={**settings.TASKPOOL, "DATABASE": alias})


def measure(
    pools: dict[str, str],
    tokens: dict[str, str],
    *,
    rounds: int,
    requests: int,
    asgi_requests: int,
    store_calls: int,
    progress: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Latency of pending and of the no-op at each pool (label -> alias), in rounds."""
    from bench.database_views import remember
    from bench.run import time_requests
    from taskpool.stores import get_store

    transports = {"wsgi": requests, "asgi": asgi_requests}
    samples: dict[tuple[str, str], dict[str, list[float]]] = {
        (transport, label): {path: [] for path in PATHS}
        for transport in transports
        for label in pools
    }
    store_samples: dict[str, list[float]] = {label: [] for label in pools}
    returned: dict[str, list[int]] = {label: [] for label in pools}
    labels = list(pools)
    devices = sorted(tokens)
    answers = {}
    for label in labels:
        progress(
            f"pending: each device's answer at {label}, for the endpoint that answers from memory"
        )
        with pool_in(pools[label]):
            store = get_store()
            shared: dict[str, Any] = {}
            answers[label] = {
                device_id: [shared.setdefault(t["id"], t) for t in store.pending_for(device_id)]
                for device_id in devices
            }
    for number in range(rounds):
        start = number % len(labels)
        for label in labels[start:] + labels[:start]:
            progress(f"pending: round {number + 1}/{rounds}, {label}")
            with pool_in(pools[label]):
                store = get_store()
                store.pending_for(devices[0])
                remember(answers[label])
                for transport, total in transports.items():
                    time_requests(tokens, PATHS, 20, -1, transport=transport)  # warm-up
                    timed = time_requests(
                        tokens,
                        PATHS,
                        max(1, total // rounds),
                        number * 100 + labels.index(label) * 10 + len(transport),
                        transport=transport,
                    )
                    for path in PATHS:
                        samples[transport, label][path] += timed[path]
                rng = random.Random(number)
                for _ in range(max(1, store_calls // rounds)):
                    device_id = rng.choice(devices)
                    started = time.perf_counter()
                    tasks = store.pending_for(device_id)
                    store_samples[label].append(time.perf_counter() - started)
                    returned[label].append(len(tasks))
    results: dict[str, dict[str, Any]] = {}
    for label in labels:
        figures: dict[str, Any] = {"rounds": rounds}
        for transport in transports:
            prefix = "" if transport == "wsgi" else "asgi_"
            measured = samples[transport, label]
            figures[f"{prefix}requests"] = len(measured[PATHS[0]])
            for path, name in zip(PATHS, NAMES, strict=True):
                figures[f"{prefix}{name}_p50"] = median(measured[path])
                figures[f"{prefix}{name}_p99"] = percentile(measured[path], 0.99)
        figures["store_p50"] = median(store_samples[label])
        figures["store_p99"] = percentile(store_samples[label], 0.99)
        figures["store_calls"] = len(store_samples[label])
        figures["returned_p50"] = median([float(n) for n in returned[label]])
        results[label] = figures
    return results


def statement_profile(
    pools: dict[str, str], devices: list[str], *, calls: int
) -> dict[str, dict[str, float]]:
    """Median milliseconds of each statement ``pending_for`` runs (client side, round trip
    included), per pool (label -> alias), over ``calls`` calls each for random devices, the
    pools taking turns call by call; the key is the statement's start."""
    from django.db import connections

    from taskpool.stores.database import DatabaseStore

    timings: dict[str, dict[str, list[float]]] = {label: {} for label in pools}

    def timer(label: str):  # noqa: ANN202 - Django's wrapper protocol
        def timed(execute, sql, params, many, context):  # noqa: ANN001
            started = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                name = " ".join(sql.split())[:72]
                timings[label].setdefault(name, []).append(time.perf_counter() - started)

        return timed

    stores = {label: DatabaseStore(alias) for label, alias in pools.items()}
    for store in stores.values():
        store.pending_for(devices[0])
    rng = random.Random(17)
    with contextlib.ExitStack() as wrappers:
        for label, alias in pools.items():
            wrappers.enter_context(connections[alias].execute_wrapper(timer(label)))
        for _ in range(calls):
            device_id = rng.choice(devices)
            for store in stores.values():
                store.pending_for(device_id)
    for store in stores.values():
        store.close()
    return {
        label: {name: 1000 * median(values) for name, values in found.items()}
        for label, found in timings.items()
    }


def devices_list(pools: dict[str, str], *, calls: int = 15) -> dict[str, float]:
    """Median seconds of ``GET /pool/devices`` (every registered device with its pending
    count) as a pool admin, through the whole stack, per pool; the pools taking turns."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from rest_framework_simplejwt.tokens import AccessToken

    from taskpool.models import UserRole

    user = get_user_model().objects.create_user("bench-admin", is_staff=True)
    UserRole.objects.create(user=user, role="admin")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
    timings: dict[str, list[float]] = {label: [] for label in pools}
    for number in range(calls + 2):
        for label, alias in pools.items():
            with pool_in(alias):
                started = time.perf_counter()
                answer = client.get("/pool/devices")
                elapsed = time.perf_counter() - started
            if answer.status_code != 200:
                raise RuntimeError(f"GET /pool/devices answered {answer.status_code}")
            if number >= 2:  # the first two warm the caches
                timings[label].append(elapsed)
    return {label: median(values) for label, values in timings.items()}


def explain_pending(alias: str, device_id: str) -> str:
    """``EXPLAIN ANALYZE`` of the statement ``pending_for`` reads the device's tasks with (the
    one that returns lines), as the store ran it; the plan as text."""
    from django.db import connections

    from taskpool.stores import get_store

    seen: list[tuple[str, Any]] = []

    def keep(execute, sql, params, many, context):  # noqa: ANN001 - Django's wrapper protocol
        seen.append((sql, params))
        return execute(sql, params, many, context)

    with pool_in(alias):
        with connections[alias].execute_wrapper(keep):
            get_store().pending_for(device_id)
        sql, params = next((sql, p) for sql, p in seen if sql.startswith("SELECT m.line"))
        with connections[alias].cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
            return "\n".join(row[0] for row in cursor.fetchall())
