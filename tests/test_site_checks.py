"""The site's own settings: the system checks on those the pool depends on, and those that
are for the site's API alone (the pool's endpoints keep their own)."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle
from rest_framework.views import APIView

from taskpool.checks import check_site_settings, check_taskpool_settings
from tests.conftest import client_with, post_json


def ids(problems):
    return [problem.id for problem in problems]


def test_a_site_set_as_the_docs_say_has_no_problem(settings):
    assert check_site_settings() == []


def test_naive_times_are_an_error_that_says_what_to_set(settings):
    settings.USE_TZ = False
    (problem,) = check_site_settings()
    assert problem.id == "taskpool.E006" and problem.is_serious()
    assert "USE_TZ = True" in problem.hint


def test_a_schema_class_the_pools_schema_cannot_use_is_a_warning(settings):
    settings.REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "rest_framework.schemas.openapi.AutoSchema"}
    assert ids(check_site_settings()) == ["taskpool.W002"]
    del settings.REST_FRAMEWORK  # DRF's own default is the same class
    (problem,) = check_site_settings()
    assert problem.id == "taskpool.W002" and not problem.is_serious()
    assert "drf_spectacular.openapi.AutoSchema" in problem.hint


@pytest.mark.parametrize("missing", ["drf_spectacular", "drf_spectacular_sidecar"])
def test_an_app_the_api_docs_page_is_drawn_with_is_a_warning_when_missing(settings, missing):
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != missing]
    (problem,) = check_site_settings()
    assert problem.id == "taskpool.W005" and not problem.is_serious()
    assert repr(missing) in problem.msg and "/pool/docs" in problem.msg


def test_the_sidecar_is_not_asked_for_when_the_docs_page_takes_its_assets_elsewhere(settings):
    settings.INSTALLED_APPS = [
        app for app in settings.INSTALLED_APPS if app != "drf_spectacular_sidecar"
    ]
    settings.SPECTACULAR_SETTINGS = {"TITLE": "taskpool"}  # drf-spectacular's CDN defaults
    assert check_site_settings() == []


@pytest.mark.parametrize(
    "key, value",
    [
        ("TASK_TTL", "7d"),
        ("DEVICE_TOKEN_LIFETIME", "30 days"),
        ("LONG_POLL_MAX", None),
        ("ONLINE_WINDOW", True),
        ("TASK_TTL", -5),
        ("TASK_TTL", 0),
        ("LAST_SEEN_INTERVAL", float("inf")),
        ("MAX_MESSAGE_BYTES", "64k"),
        ("MAX_MESSAGE_BYTES", 0),
        # Read from the environment, "False" would count as on.
        ("ENROLLMENT", "False"),
        ("FSYNC", 0),
        ("ALLOW_UNREGISTERED_DEVICES", "no"),
        ("METRICS_TOKEN", 12345),
        ("ENROLLMENT_KEY", ""),
        ("STORE", None),
        ("DATABASE", ""),
        ("ARCHIVE_DIR", 7),
    ],
)
def test_a_pool_setting_that_does_not_read_is_an_error_naming_it(settings, key, value):
    settings.TASKPOOL = {**settings.TASKPOOL, key: value}
    (problem,) = check_taskpool_settings()
    assert problem.id == "taskpool.E007" and problem.is_serious()
    assert f"TASKPOOL[{key!r}]" in problem.msg
    with pytest.raises(SystemCheckError, match="taskpool.E007"):  # not a traceback
        call_command("taskpool_verify", "--no-progress", skip_checks=False)


def test_a_data_dir_that_is_not_a_path_is_one_error_not_a_traceback(settings):
    settings.TASKPOOL = {**settings.TASKPOOL, "DATA_DIR": 5}
    (problem,) = check_taskpool_settings()
    assert problem.id == "taskpool.E007" and "TASKPOOL['DATA_DIR'] is 5" in problem.msg


def test_a_data_dir_that_cannot_be_made_is_an_error_naming_what_is_in_the_way(settings, tmp_path):
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a directory\n")
    settings.TASKPOOL = {**settings.TASKPOOL, "DATA_DIR": str(in_the_way / "taskpool" / "pool")}
    (problem,) = check_taskpool_settings()
    assert problem.id == "taskpool.E004" and problem.is_serious()
    assert problem.msg == (
        f"TASKPOOL['DATA_DIR'] cannot be made: {in_the_way} is not a writable directory."
    )
    # One that does not exist yet under a writable directory is made at the first start.
    settings.TASKPOOL = {**settings.TASKPOOL, "DATA_DIR": str(tmp_path / "later" / "pool")}
    assert check_taskpool_settings() == []


def test_durations_read_as_the_settings_page_says(settings):
    settings.TASKPOOL = {
        **settings.TASKPOOL,
        "TASK_TTL": 3 * 86400,
        "LONG_POLL_MAX": 30.5,
        "TICK_INTERVAL": 0,  # left to taskpool_tick
        "MAX_MESSAGE_BYTES": 1024,
    }
    assert check_taskpool_settings() == []


@pytest.fixture
def site_throttles_everything(monkeypatch):
    """A site whose REST_FRAMEWORK throttles every view: DRF reads DEFAULT_THROTTLE_CLASSES
    and their rates into its classes when it is imported, so they are set there."""
    rates = {"anon": "1/minute", "user": "1/minute"}
    monkeypatch.setattr(APIView, "throttle_classes", [AnonRateThrottle, UserRateThrottle])
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)


def test_the_sites_throttles_are_not_the_pools(site_throttles_everything, make_device, make_user):
    device = client_with(make_device("pi-1")[1])
    master = client_with(make_user("ops", role="master")[1])
    anonymous = client_with(None)
    for _ in range(3):
        assert device.get("/pool/pending").status_code == 200
        assert post_json(device, "/pool/heartbeat", {}).status_code == 201
        assert master.get("/pool/tasks").status_code == 200
        assert anonymous.get("/pool/health").status_code == 200
        assert anonymous.get("/pool/schema").status_code == 200


def test_a_missing_taskpool_setting_is_said_to_be_missing_not_to_be_the_wrong_type(settings):
    del settings.TASKPOOL
    (problem,) = check_taskpool_settings()
    assert (problem.id, problem.msg) == ("taskpool.E001", "settings.TASKPOOL is not set.")
    settings.TASKPOOL = ["DATA_DIR"]
    (problem,) = check_taskpool_settings()
    assert problem.msg == "settings.TASKPOOL is ['DATA_DIR']: it must be a dict."
    del settings.REST_FRAMEWORK
    (warning,) = check_site_settings()
    assert warning.msg.startswith("REST_FRAMEWORK['DEFAULT_SCHEMA_CLASS'] is not set: ")


def test_a_cache_that_keeps_nothing_is_a_warning_since_the_throttles_count_there(settings, db):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    (problem,) = check_site_settings()
    assert problem.id == "taskpool.W006" and not problem.is_serious()
    assert "throttles" in problem.msg
    # What it warns of: wrong logins are never refused as too many.
    statuses = {
        post_json(
            client_with(None), "/pool/auth/token", {"username": "x", "password": "y"}
        ).status_code
        for _ in range(40)
    }
    assert statuses == {401}
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    assert check_site_settings() == []


def test_a_user_admin_registered_after_taskpools_is_a_warning_until_it_has_the_role():
    """A site whose own user app comes after taskpool in INSTALLED_APPS replaces the user
    admin taskpool gave the pool role to: the role silently leaves the user's page."""
    from django.contrib import admin
    from django.contrib.auth import get_user_model
    from django.contrib.auth.admin import UserAdmin

    from taskpool.admin.roles import add_role_inline

    user_model = get_user_model()
    kept = type(admin.site.get_model_admin(user_model))
    admin.site.unregister(user_model)
    admin.site.register(user_model, UserAdmin)  # as a site's own admin module would
    try:
        (problem,) = check_site_settings()
        assert problem.id == "taskpool.W007" and "INSTALLED_APPS" in problem.hint
        add_role_inline()  # what the hint's other way does
        assert check_site_settings() == []
    finally:
        admin.site.unregister(user_model)
        admin.site.register(user_model, kept)
    assert check_site_settings() == []
