"""The README's and the docs' instructions for a new site, taken as a new user takes them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
GETTING_STARTED = (ROOT / "docs" / "getting-started.md").read_text()


def settings_snippet(text: str) -> dict:
    """The first Python block of ``text`` (a site's settings), run."""
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    namespace = {"path": lambda *args: args, "include": lambda *args: args}
    exec(code, namespace)  # the page's own example
    return namespace


@pytest.mark.parametrize("page", [README, GETTING_STARTED], ids=["README", "getting-started"])
def test_the_settings_name_the_docs_page_and_the_token_lifetime(page):
    settings = settings_snippet(page)
    assert settings["SPECTACULAR_SETTINGS"]["TITLE"]
    assert settings["SPECTACULAR_SETTINGS"]["VERSION"] != "0.0.0"
    assert settings["SIMPLE_JWT"]["ACCESS_TOKEN_LIFETIME"].total_seconds() > 5 * 60
    assert "taskpool" in settings["INSTALLED_APPS"]


@pytest.mark.parametrize("page", [README, GETTING_STARTED], ids=["README", "getting-started"])
def test_they_say_what_a_new_site_meets(page):
    text = " ".join(page.split())
    assert "default 5 minutes" in text  # without SIMPLE_JWT
    assert "`DATA_DIR` is created on first use" in text


def test_the_docs_say_how_a_user_is_written_and_which_devices_a_task_may_name():
    getting_started = " ".join(GETTING_STARTED.split())
    assert "`user:<username>` when they have no email" in getting_started
    settings = (ROOT / "docs" / "settings.md").read_text()
    assert "`ALLOW_UNREGISTERED_DEVICES`" in settings
