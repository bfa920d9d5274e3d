"""Waiting devices woken together ask together whether their tokens still hold."""

from __future__ import annotations

import asyncio

import pytest

from taskpool.api import admission
from taskpool.models import DeviceUser

pytestmark = pytest.mark.django_db(transaction=True)


def test_devices_asking_together_share_one_look_and_get_their_own_answers(monkeypatch):
    DeviceUser.objects.bulk_create(
        DeviceUser(pk=f"d-{n:04d}", validated=n % 7 != 0) for n in range(2500)
    )
    sessions = dict(DeviceUser.objects.values_list("pk", "user_session"))
    rotated = {f"d-{n:04d}" for n in range(0, 2500, 5)}
    for device_id in rotated:
        DeviceUser.objects.get(pk=device_id).rotate_session()
    looks = []
    real = admission.sessions_holding
    monkeypatch.setattr(
        admission, "sessions_holding", lambda asked: looks.append(len(asked)) or real(asked)
    )

    async def ask_all() -> list[bool]:
        checks = admission.admissions()
        asking = [checks.holds(device, session) for device, session in sessions.items()]
        asking.append(checks.holds("nobody", "x"))
        return await asyncio.gather(*asking)

    answers = asyncio.run(ask_all())
    assert looks == [2501]  # one look (in queries of a thousand), not one per device
    expected = [device not in rotated and int(device[2:]) % 7 != 0 for device in sessions] + [False]
    assert answers == expected


def test_a_waiter_that_leaves_does_not_cancel_the_others_answer():
    DeviceUser.objects.create(pk="d-1", validated=True)
    DeviceUser.objects.create(pk="d-2", validated=True)
    sessions = dict(DeviceUser.objects.values_list("pk", "user_session"))

    async def scenario() -> bool:
        checks = admission.admissions()
        leaving = asyncio.ensure_future(checks.holds("d-1", sessions["d-1"]))
        staying = asyncio.ensure_future(checks.holds("d-2", sessions["d-2"]))
        await asyncio.sleep(0)
        leaving.cancel()
        return await staying

    assert asyncio.run(scenario()) is True
