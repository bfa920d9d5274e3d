"""Who may open each admin page and take each action (the rules are in taskpool/admin/access.py).

Pages of the pool need a staff login, then a pool role: master for tasks,
admin for day files. Devices: masters see them, admins manage them; roles:
admins manage them; staff without a pool role get Django's model permissions.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from taskpool.days import day_of
from taskpool.models import DeviceUser, UserRole

LOGIN = "/admin/login/"


@pytest.fixture
def login(db):
    """``login("name", role=..., staff=..., superuser=..., perms=[...])`` -> a logged-in client."""

    def make(username, *, role=None, staff=True, superuser=False, perms=()):
        user = get_user_model().objects.create_user(
            username, email=f"{username}@example.com", password="pw", is_staff=staff
        )
        user.is_superuser = superuser
        user.save()
        if role:
            UserRole.objects.create(user=user, role=role)
        for codename in perms:
            user.user_permissions.add(Permission.objects.get(codename=codename))
        client = Client()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def pool(store, db):
    """A task with a response, and the URLs of every pool page that shows them."""
    DeviceUser.objects.create(id="pi-1", validated=True)
    task = store.post_task(sender="user:someone", to="device:pi-1", title="Check").message
    store.post_response(device_id="pi-1", parent_id=task["id"], status="progress")
    day = day_of(store.now())
    entry = store.day_page(day).entries[0]
    return {
        "task": task,
        "day pages": [
            "/admin/taskpool/dayfile/",
            f"/admin/taskpool/dayfile/{day.isoformat()}/",
            f"/admin/taskpool/dayfile/{day.isoformat()}/?type=task&after={entry.cursor}",
            f"/admin/taskpool/dayfile/{day.isoformat()}/raw/",
            f"/admin/taskpool/dayfile/{day.isoformat()}/{entry.cursor}/",
        ],
        "task pages": [
            "/admin/taskpool/task/",
            "/admin/taskpool/task/add/",
            f"/admin/taskpool/task/{task['id']}/",
        ],
    }


def status_of(client, url):
    response = client.get(url)
    if response.status_code == 302:
        return "login" if response["Location"].startswith(LOGIN) else response["Location"]
    return response.status_code


WHO = {
    "staff without a role": {},
    "staff with role user": {"role": "user"},
    "master": {"role": "master"},
    "admin": {"role": "admin"},
    "superuser without a role row": {"superuser": True},
    "admin who is not staff": {"role": "admin", "staff": False},
}
EXPECTED = {  # who: (day pages, task pages)
    "staff without a role": (403, 403),
    "staff with role user": (403, 403),
    "master": (403, 200),
    "admin": (200, 200),
    "superuser without a role row": (200, 200),
    "admin who is not staff": ("login", "login"),
}


@pytest.mark.parametrize("who", list(WHO))
def test_each_page_is_open_to_the_right_role(login, pool, who):
    client = login("someone-" + who.replace(" ", "-"), **WHO[who])
    day_status, task_status = EXPECTED[who]
    assert {url: status_of(client, url) for url in pool["day pages"]} == dict.fromkeys(
        pool["day pages"], day_status
    )
    assert {url: status_of(client, url) for url in pool["task pages"]} == dict.fromkeys(
        pool["task pages"], task_status
    )


def test_anonymous_is_sent_to_the_admin_login(pool, client):
    for url in pool["day pages"] + pool["task pages"]:
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(f"{LOGIN}?next=/admin/taskpool/")
    cancel = client.post(f"/admin/taskpool/task/{pool['task']['id']}/cancel/")
    assert cancel.status_code == 302 and cancel["Location"].startswith(LOGIN)


def index_entries(client) -> dict[str, dict[str, bool]]:
    """The pool's models on the admin index, with the links shown for each."""
    response = client.get("/admin/")
    assert response.status_code == 200
    apps = {app["app_label"]: app for app in response.context["app_list"]}
    if "taskpool" not in apps:
        return {}
    return {
        model["object_name"]: {"view": bool(model["admin_url"]), "add": bool(model["add_url"])}
        for model in apps["taskpool"]["models"]
    }


def test_the_index_shows_each_role_its_pages(login, db):
    assert index_entries(login("plain")) == {}
    assert index_entries(login("lowly", role="user")) == {}
    assert index_entries(login("master", role="master")) == {
        "Dashboard": {"view": True, "add": False},
        "DeviceUser": {"view": True, "add": False},
        "Task": {"view": True, "add": True},
    }
    assert index_entries(login("boss", role="admin")) == {
        "Dashboard": {"view": True, "add": False},
        "DayFile": {"view": True, "add": False},
        "DeviceUser": {"view": True, "add": True},
        "Task": {"view": True, "add": True},
        "UserRole": {"view": True, "add": True},
    }
    everything = index_entries(login("root", superuser=True))
    assert set(everything) == {"Dashboard", "DayFile", "DeviceUser", "Task", "UserRole"}


def test_sending_and_cancelling_need_the_master_role(login, pool, snapshot):
    task_id = pool["task"]["id"]
    before = snapshot()
    for who in ("plain", "lowly"):
        client = login(who, role=None if who == "plain" else "user")
        sent = client.post("/admin/taskpool/task/add/", {"to": "device:pi-1", "title": "x"})
        assert sent.status_code == 403
        assert client.post(f"/admin/taskpool/task/{task_id}/cancel/").status_code == 403
    assert snapshot() == before

    master = login("master", role="master")
    assert master.get(f"/admin/taskpool/task/{task_id}/cancel/").status_code == 405
    assert snapshot() == before
    cancelled = master.post(f"/admin/taskpool/task/{task_id}/cancel/", {"reason": "enough"})
    assert cancelled.status_code == 302
    assert cancelled["Location"] == f"/admin/taskpool/task/{task_id}/"
    assert snapshot() != before


def test_device_actions_need_the_change_permission(login, make_device):
    make_device("new-1", validated=False)
    viewer = login("viewer", perms=["view_deviceuser"])
    assert viewer.get("/admin/taskpool/deviceuser/").status_code == 200
    response = viewer.post(
        "/admin/taskpool/deviceuser/",
        {"action": "validate", "_selected_action": ["new-1"], "index": "0"},
    )
    assert response.status_code == 200  # the changelist again, with "No action selected."
    assert DeviceUser.objects.get(pk="new-1").validated is False
    session = DeviceUser.objects.get(pk="new-1").user_session
    assert viewer.get("/admin/taskpool/deviceuser/new-1/token/").status_code == 403
    assert viewer.post("/admin/taskpool/deviceuser/new-1/token/").status_code == 403
    assert DeviceUser.objects.get(pk="new-1").user_session == session

    changer = login("changer", perms=["view_deviceuser", "change_deviceuser"])
    response = changer.post(
        "/admin/taskpool/deviceuser/",
        {"action": "validate", "_selected_action": ["new-1"], "index": "0"},
    )
    assert response.status_code == 302
    assert DeviceUser.objects.get(pk="new-1").validated is True


def test_a_devices_messages_are_for_masters_and_admins(login, store, make_device):
    make_device("pi-1")
    store.post_task(sender="user:x", to="device:pi-1", title="secret plan")
    viewer = login("viewer", perms=["view_deviceuser"])
    page = viewer.get("/admin/taskpool/deviceuser/pi-1/change/")
    assert page.status_code == 200
    assert "recent_messages" not in page.context and "pending_tasks" not in page.context
    assert "secret plan" not in page.content.decode()
    master = login("master", role="master", perms=["view_deviceuser"])
    page = master.get("/admin/taskpool/deviceuser/pi-1/change/")
    assert [row.message["title"] for row in page.context["recent_messages"]] == ["secret plan"]
    assert "secret plan" in page.content.decode()


def test_a_pool_admin_manages_devices_and_roles_without_model_permissions(login, make_device, db):
    make_device("new-1", validated=False)
    boss = login("opsadmin", role="admin")
    assert boss.get("/admin/taskpool/deviceuser/").status_code == 200
    assert boss.get("/admin/taskpool/deviceuser/?online=no&q=new").status_code == 200
    page = boss.get("/admin/taskpool/deviceuser/new-1/change/")
    assert page.status_code == 200 and page.context["can_issue_token"] is True
    response = boss.post(
        "/admin/taskpool/deviceuser/",
        {"action": "validate", "_selected_action": ["new-1"], "index": "0"},
    )
    assert response.status_code == 302
    assert DeviceUser.objects.get(pk="new-1").validated is True
    session = DeviceUser.objects.get(pk="new-1").user_session
    issued = boss.post("/admin/taskpool/deviceuser/new-1/token/", follow=True)
    assert issued.status_code == 200 and issued.context["token"]
    assert DeviceUser.objects.get(pk="new-1").user_session != session
    added = boss.post("/admin/taskpool/deviceuser/add/", {"id": "pi-9", "kind": "pi"})
    assert added.status_code == 302 and DeviceUser.objects.filter(pk="pi-9").exists()

    assert boss.get("/admin/taskpool/userrole/").status_code == 200
    someone = get_user_model().objects.create_user("someone", email="someone@example.com")
    form = boss.get("/admin/taskpool/userrole/add/")
    assert form.status_code == 200
    added = boss.post(
        "/admin/taskpool/userrole/add/", {"user": someone.pk, "role": "master"}, follow=True
    )
    assert added.status_code == 200
    assert UserRole.objects.get(user=someone).role == "master"
    # As taskpool_role does: the role's pages are in the admin, which needs a staff account.
    someone.refresh_from_db()
    assert someone.is_staff
    shown = [str(message) for message in added.context["messages"]]
    assert "someone is now staff, so they can log in to the admin." in shown
    plain = get_user_model().objects.create_user("plain-user", email="plain@example.com")
    boss.post("/admin/taskpool/userrole/add/", {"user": plain.pk, "role": "user"})
    plain.refresh_from_db()
    assert UserRole.objects.get(user=plain).role == "user" and not plain.is_staff


def user_page_data(page, **changes) -> dict[str, str]:
    """What the user admin's change form posts back as it is, with ``changes``."""
    form = page.context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    for name in ("groups", "user_permissions", "last_login", "password"):
        data.pop(name, None)
    joined = form.initial["date_joined"]
    data.update(
        date_joined_0=joined.strftime("%Y-%m-%d"),
        date_joined_1=joined.strftime("%H:%M:%S"),
        **{
            "taskpool_role-TOTAL_FORMS": "1",
            "taskpool_role-INITIAL_FORMS": "0",
            "taskpool_role-MIN_NUM_FORMS": "0",
            "taskpool_role-MAX_NUM_FORMS": "1",
        },
    )
    for name in ("is_active", "is_staff", "is_superuser"):
        if data.get(name) is False:
            del data[name]  # an unticked box is not posted
    data.update(changes)
    return data


@pytest.mark.parametrize(("role", "staff"), [("master", True), ("admin", True), ("user", False)])
def test_a_role_given_on_the_users_page_lets_them_into_the_admin(login, role, staff):
    """As ``taskpool_role`` does: a master's or an admin's pages are in the admin."""
    root = Client()
    root.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    someone = get_user_model().objects.create_user(
        "someone", email="someone@example.com", password="their-pw"
    )
    url = f"/admin/auth/user/{someone.pk}/change/"
    page = root.get(url)
    assert "Giving admin or master also makes the user staff" in page.content.decode()
    data = user_page_data(
        page, **{"taskpool_role-0-user": str(someone.pk), "taskpool_role-0-role": role}
    )
    saved = root.post(url, data, follow=True)
    assert saved.status_code == 200 and "adminform" not in saved.context, saved.context.get(
        "errors"
    )
    assert UserRole.objects.get(user=someone).role == role
    someone.refresh_from_db()
    assert someone.is_staff is staff
    shown = [str(message) for message in saved.context["messages"]]
    assert ("someone is now staff, so they can log in to the admin." in shown) is staff

    # Through the admin's own login page, with their password.
    them = Client()
    them.post(LOGIN, {"username": "someone", "password": "their-pw", "next": "/admin/"})
    tasks = them.get("/admin/taskpool/task/")
    assert tasks.status_code == (200 if staff else 302)


def test_a_role_left_as_it_was_does_not_make_staff_again(login):
    """Staff who take a master's staff status away on their page, role unchanged, keep it so."""
    root = Client()
    root.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    someone = get_user_model().objects.create_user("someone", is_staff=True)
    role = UserRole.objects.create(user=someone, role="master")
    url = f"/admin/auth/user/{someone.pk}/change/"
    data = user_page_data(
        root.get(url),
        **{
            "taskpool_role-INITIAL_FORMS": "1",
            "taskpool_role-0-id": str(role.pk),
            "taskpool_role-0-user": str(someone.pk),
            "taskpool_role-0-role": "master",
        },
    )
    del data["is_staff"]
    assert root.post(url, data).status_code == 302
    someone.refresh_from_db()
    assert not someone.is_staff


def test_a_master_sees_devices_but_does_not_change_them(login, make_device, db):
    make_device("new-1", validated=False)
    master = login("master", role="master")
    assert master.get("/admin/taskpool/deviceuser/").status_code == 200
    page = master.get("/admin/taskpool/deviceuser/new-1/change/")
    assert page.status_code == 200 and page.context["can_issue_token"] is False
    master.post(
        "/admin/taskpool/deviceuser/",
        {"action": "validate", "_selected_action": ["new-1"], "index": "0"},
    )
    assert DeviceUser.objects.get(pk="new-1").validated is False
    master.post("/admin/taskpool/deviceuser/new-1/change/", {"kind": "x", "validated": "on"})
    assert DeviceUser.objects.get(pk="new-1").validated is False
    assert master.post("/admin/taskpool/deviceuser/new-1/token/").status_code == 403
    assert master.get("/admin/taskpool/deviceuser/add/").status_code == 403
    assert master.get("/admin/taskpool/userrole/").status_code == 403


def test_model_permissions_still_open_roles_to_staff_without_a_pool_role(login, db):
    assert login("plain").get("/admin/taskpool/userrole/").status_code == 403
    viewer = login("viewer", perms=["view_userrole"])
    assert viewer.get("/admin/taskpool/userrole/").status_code == 200
    assert viewer.get("/admin/taskpool/userrole/add/").status_code == 403


@pytest.mark.parametrize(
    ("who", "url", "sentence"),
    [
        ({}, "/admin/taskpool/task/", "needs the pool role master"),
        ({"role": "user"}, "/admin/taskpool/task/add/", "needs the pool role master"),
        ({"role": "master"}, "/admin/taskpool/dayfile/", "needs the pool role admin"),
        ({}, "/admin/taskpool/deviceuser/", "the pool role master"),
        ({"role": "master"}, "/admin/taskpool/deviceuser/pi-1/token/", "the pool role admin"),
        ({"role": "master"}, "/admin/taskpool/userrole/", "the pool role admin"),
    ],
)
def test_a_refusal_is_an_admin_page_that_names_the_role_needed(login, pool, who, url, sentence):
    response = login("someone", **who).get(url)
    assert response.status_code == 403
    html = response.content.decode()
    assert sentence in html
    assert 'id="site-name"' in html and 'class="breadcrumbs"' in html  # the admin's frame
    assert 'href="/admin/"' in html  # a way back


@pytest.mark.parametrize("value", ["abc", "1.5", "99999999999999999999", "\x00"])
def test_a_role_form_given_a_user_that_is_no_id_is_refused_as_a_form_error(login, value):
    """The user search box looked the value up as it was, and failed with a server error."""
    root = Client()
    root.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    shown = root.get("/admin/taskpool/userrole/add/", {"user": value})
    assert shown.status_code == 200
    posted = root.post("/admin/taskpool/userrole/add/", {"user": value, "role": "admin"})
    assert posted.status_code == 200 and posted.context["adminform"].form.errors["user"]
    assert not UserRole.objects.exists()


def test_a_role_given_on_the_add_user_page_keeps_one_pool_identity_per_user(login):
    """The new user is not saved while the role is checked: it was let through."""
    root = Client()
    root.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    puser = get_user_model().objects.create_user("puser", email="puser@example.com")
    UserRole.objects.create(user=puser, role="user")
    data = {
        "username": "puser@example.com",
        "password1": "a-long-password-1",
        "password2": "a-long-password-1",
        "usable_password": "true",
        "taskpool_role-TOTAL_FORMS": "1",
        "taskpool_role-INITIAL_FORMS": "0",
        "taskpool_role-MIN_NUM_FORMS": "0",
        "taskpool_role-MAX_NUM_FORMS": "1",
        "taskpool_role-0-role": "master",
    }
    refused = root.post("/admin/auth/user/add/", data)
    assert refused.status_code == 200
    assert "cannot have a pool role while puser is user:puser@example.com" in (
        refused.content.decode()
    )
    assert not get_user_model().objects.filter(username="puser@example.com").exists()
