"""A request to the pool leaves no reference cycle behind: its memory goes when it ends.

What a request leaves in a cycle waits for Python's cyclic collector, and a
server that looks at its oldest generation seldom (as the deployment page
advises) let such requests pile up between full collections. Each endpoint
is asked a few times through the pool's threads (``serve_pool``), as
production serves it, with the collector saving what it finds instead of
freeing it; nothing made by Django, DRF or taskpool may be among it.

Covered: what devices ask, what masters ask, the devices list a dashboard
polls, and the refusals. Not covered: the admin's pages, which go through
Django's forms (their own cycles), and are asked by staff, not a fleet.
"""

from __future__ import annotations

import gc
import json
import types
from collections import Counter

import pytest
from asgiref.sync import async_to_sync
from django.core.asgi import get_asgi_application
from django.db.backends.base.base import BaseDatabaseWrapper

from taskpool.asgi import serve_pool
from tests.test_asgi_front import call

OURS = {"django", "rest_framework", "rest_framework_simplejwt", "taskpool"}


@pytest.fixture
def front(settings, transactional_db):
    settings.ALLOWED_HOSTS = ["example.com"]
    front = serve_pool(get_asgi_application(), prefix="/pool/", threads=2)
    yield front
    # Its threads end now, with their database connections, not in the next test's count.
    front.threaded.executor.shutdown(wait=True)
    gc.collect()


@pytest.fixture
def pool(front, make_device, make_user):
    """The front, a device ``pi-1``'s token and a master's, and a way to ask."""
    _, device = make_device("pi-1")
    _, master = make_user("boss", role="master")

    def ask(token: str, path: str, method: str = "GET", body=None, query: str = ""):
        data = b"" if body is None else json.dumps(body).encode()
        headers = {"Host": "example.com", "Authorization": f"Bearer {token}"}
        if body is not None:
            headers |= {"Content-Type": "application/json", "Content-Length": str(len(data))}
        status, _, content = async_to_sync(call)(
            front, path, query, headers=headers, method=method, body=data
        )
        assert status < 500, content
        return status, json.loads(content) if content else None

    return ask, device, master


def _made_by_us(thing: object) -> str | None:
    """The name of ``thing``'s type (or function) if Django, DRF or taskpool made it."""
    if isinstance(thing, types.FunctionType):
        module, name = thing.__module__ or "", thing.__qualname__
    else:
        module, name = type(thing).__module__, type(thing).__qualname__
    return f"{module}.{name}" if module.split(".")[0] in OURS else None


def _parts_of_connections(garbage: list) -> set[int]:
    """The ids of what in ``garbage`` a database connection holds, the connection too.

    A connection goes with the thread that held it, and an earlier test's threads
    end when they will (this front's threads keep theirs, which test_asgi_front
    checks), not with a request; its error wrapper, cursors and the like go with it.
    """
    in_garbage = {id(thing): thing for thing in garbage}
    found: set[int] = set()
    todo = [thing for thing in garbage if isinstance(thing, BaseDatabaseWrapper)]
    while todo:
        thing = todo.pop()
        if id(thing) in found:
            continue
        found.add(id(thing))
        todo.extend(
            in_garbage[id(part)] for part in gc.get_referents(thing) if id(part) in in_garbage
        )
    return found


def _one_round(requests) -> Counter[str]:
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(3):
            requests()
        gc.collect()
        connections = _parts_of_connections(gc.garbage)
        return Counter(
            name
            for thing in gc.garbage
            if id(thing) not in connections and (name := _made_by_us(thing))
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def cycles_left_by(requests) -> Counter[str]:
    """What ``requests()`` left for the cyclic collector, by type (ours only).

    What every round leaves: a request's cycles come back each time, while
    something an earlier test left to end on its own (a thread, say) ends once.
    """
    requests()  # caches filled, connections opened: not what a request leaves
    return _one_round(requests) & _one_round(requests)


def test_a_devices_requests_leave_no_cycle(pool):
    ask, device, master = pool
    _, task = ask(master, "/pool/task", "POST", {"to": "device:pi-1", "title": "reboot"})

    def requests():
        assert ask(device, "/pool/heartbeat", "POST", {"meta": {"uptime": 5}})[0] == 201
        assert ask(device, "/pool/pending")[0] == 200
        assert ask(device, "/pool/pending", query="wait=0.05")[0] == 200  # waits in front
        assert ask(device, "/pool/response", "POST", {"parent_id": task["id"], "status": "progress"})[0] == 201  # fmt: skip
        assert ask(device, "/pool/device/token", "POST")[0] == 200

    assert cycles_left_by(requests) == Counter()


def test_a_masters_requests_leave_no_cycle(pool):
    ask, _, master = pool

    def requests():
        status, task = ask(master, "/pool/task", "POST", {"to": "device:pi-1", "title": "x"})
        assert status == 201
        assert ask(master, f"/pool/tasks/{task['id']}")[0] == 200
        assert ask(master, "/pool/tasks")[0] == 200
        assert ask(master, f"/pool/tasks/{task['id']}/cancel", "POST", {})[0] == 201

    assert cycles_left_by(requests) == Counter()


def test_an_any_one_claim_leaves_no_cycle(pool):
    ask, device, master = pool

    def requests():
        body = {"to": "device:[pi-1]", "title": "x", "mode": "any"}
        assert ask(master, "/pool/task", "POST", body)[0] == 201
        assert ask(device, "/pool/claim", "POST", {})[0] == 201

    assert cycles_left_by(requests) == Counter()


def test_the_devices_list_leaves_no_cycle(pool, make_user):
    ask, _, _ = pool
    _, admin = make_user("root", role="admin")

    def requests():
        assert len(ask(admin, "/pool/devices")[1]) == 1
        assert ask(admin, "/pool/devices", query="kind=pi&validated=true")[0] == 200
        assert ask(admin, "/pool/devices", query="validated=maybe")[0] == 400

    assert cycles_left_by(requests) == Counter()


def test_refusals_leave_no_cycle(pool):
    ask, device, _ = pool

    def requests():
        assert ask(device, "/pool/heartbeat", "POST", {"meta": 5})[0] == 400  # a bad field
        assert ask(device, "/pool/pending", query="limit=abc")[0] == 400
        assert ask("not-a-token", "/pool/pending")[0] == 401
        assert ask(device, "/pool/tasks")[0] == 403
        assert ask(device, "/pool/response", "POST", {"parent_id": "msg_nope", "status": "done"})[0] == 404  # fmt: skip

    assert cycles_left_by(requests) == Counter()
