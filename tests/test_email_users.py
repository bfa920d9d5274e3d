"""A site whose user model has no username field, its email being the login: taskpool's
checks pass, its commands and the pool roles' admin pages work, and users log in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import manage_py

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

CHECK_AS_STAFF = """
from django.contrib.auth import get_user_model
from django.test import Client

get_user_model().objects.create_superuser("root@example.com", "root-password-1x")
staff = Client()
staff.force_login(get_user_model().objects.get(email="root@example.com"))
for page in ("/admin/taskpool/userrole/", "/admin/taskpool/userrole/?q=ops",
             "/admin/taskpool/userrole/add/"):
    answer = staff.get(page)
    assert answer.status_code == 200, (page, answer.status_code)
assert b"ops@example.com" in staff.get("/admin/taskpool/userrole/?q=ops").content
login = Client().post("/pool/auth/token", {"email": "ops@example.com", "password": "ops-password-1x"},
                      content_type="application/json")
assert login.status_code == 200, login.content
print("OK")
"""


def test_a_site_whose_users_log_in_by_email_runs_taskpool(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TASKPOOL_STORE")},
        "DJANGO_SETTINGS_MODULE": "tests.email_users.settings",
        "TASKPOOL_VAR_DIR": str(tmp_path / "var"),
        "EMAIL_USERS_DB": str(tmp_path / "db.sqlite3"),
        "DJANGO_ALLOWED_HOSTS": "testserver",
    }
    checked = manage_py("check", env=env)
    assert checked.returncode == 0, checked.stderr
    assert manage_py("migrate", "--run-syncdb", env=env).returncode == 0
    role = manage_py(
        "taskpool_role", "ops@example.com", "master", "--password", "ops-password-1x", env=env
    )
    assert role.returncode == 0, role.stderr
    assert "with role master" in role.stdout
    staff = manage_py("shell", "-c", CHECK_AS_STAFF, env=env)
    assert staff.returncode == 0 and staff.stdout.strip().endswith("OK"), staff.stderr
