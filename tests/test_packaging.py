"""The distributions a site and a device install: built from the files git tracks, as a
release is, and read for what they hold.

A site installs the wheel (or the sdist, which builds it): every module, template,
static file and migration the app loads at run time must be in it, or the installed
site meets an ImportError, a TemplateDoesNotExist or a 404 on its admin's styles that
the editable checkout never shows. Nothing else ships: not the tests, not ``var/``.
The device agent's distribution holds the agent alone, the server's leaves it out (the
two own no file in common), and both carry the licence.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("taskpool/", "taskpool_agent/")
SERVER_PACKAGE = "taskpool/"

# The PEP 517 hooks, called in the checkout's copy without an isolated environment
# (no index to reach): the test extra installs a setuptools that builds this project.
BUILD = """
import sys
import sysconfig
from setuptools import build_meta
kind, out = sys.argv[1], sys.argv[2]
print(build_meta.build_wheel(out) if kind == "wheel" else build_meta.build_sdist(out))
"""


def tracked_files() -> list[str]:
    """What git tracks: what a release is built from (no var/, caches or local files)."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the packaging tests build from what git tracks")
    return [name for name in listing.decode().split("\0") if name]


def build(kind: str, source: Path, out: Path) -> Path:
    """Builds a wheel or an sdist of the project at ``source`` into ``out``."""
    done = subprocess.run(
        [sys.executable, "-c", BUILD, kind, str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


def wheel_files(wheel: Path) -> set[str]:
    return set(zipfile.ZipFile(wheel).namelist())


def sdist_files(sdist: Path) -> set[str]:
    """The sdist's files, without its top directory and what setuptools writes itself."""
    with tarfile.open(sdist) as archive:
        names = {member.name.split("/", 1)[1] for member in archive if member.isfile()}
    return {
        name for name in names if name not in ("PKG-INFO", "setup.cfg") and ".egg-info/" not in name
    }


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> tuple[Path, list[str]]:
    """A copy of the tracked files (symbolic links kept, as the agent's project has one)."""
    tracked = tracked_files()
    copy = tmp_path_factory.mktemp("checkout")
    for name in tracked:
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target, follow_symlinks=False)
    return copy, tracked


@pytest.fixture(scope="module")
def package_files(checkout) -> set[str]:
    """Every tracked file of the two packages: code, templates, static files, migrations."""
    _, tracked = checkout
    return {name for name in tracked if name.startswith(PACKAGES)}


@pytest.fixture(scope="module")
def server_files(package_files) -> set[str]:
    """The app's tracked files: what the server's distributions ship (not the agent)."""
    return {name for name in package_files if name.startswith(SERVER_PACKAGE)}


@pytest.fixture(scope="module")
def server(checkout, tmp_path_factory) -> dict[str, Path]:
    copy, _ = checkout
    out = tmp_path_factory.mktemp("server-dist")
    return {"wheel": build("wheel", copy, out), "sdist": build("sdist", copy, out)}


@pytest.fixture(scope="module")
def agent(checkout, tmp_path_factory) -> dict[str, Path]:
    copy, _ = checkout
    out = tmp_path_factory.mktemp("agent-dist")
    project = copy / "agent"
    return {"wheel": build("wheel", project, out), "sdist": build("sdist", project, out)}


def test_the_wheel_holds_every_file_of_the_app_and_nothing_else(server, server_files):
    files = wheel_files(server["wheel"])
    shipped = {name for name in files if ".dist-info/" not in name}
    assert sorted(server_files - shipped) == []
    assert sorted(shipped - server_files) == []
    # The kinds of file a run needs and the editable checkout hides when missing.
    for needed in (
        "taskpool/py.typed",
        "taskpool/templates/admin/taskpool/base.html",
        "taskpool/static/taskpool/admin.css",
        "taskpool/migrations/0001_initial.py",
        "taskpool/stores/database/migrations/0001_initial.py",
    ):
        assert needed in files
    assert "taskpool-0.1.0.dist-info/licenses/LICENSE" in files


def test_the_sdist_holds_what_builds_the_wheel_and_no_tests(server, server_files, tmp_path):
    files = sdist_files(server["sdist"])
    besides = ["DESCRIPTION.md", "LICENSE", "MANIFEST.in", "README.md", "pyproject.toml"]
    assert sorted(files - server_files) == besides
    assert sorted(server_files - files) == []

    # What a site installing the sdist gets: the same files as from the wheel.
    with tarfile.open(server["sdist"]) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    (tmp_path / "dist").mkdir()
    rebuilt = build("wheel", unpacked, tmp_path / "dist")
    assert wheel_files(rebuilt) == wheel_files(server["wheel"])


def test_the_agent_distributions_hold_the_agent_alone_and_its_licence(agent, package_files):
    agent_files = {name for name in package_files if name.startswith("taskpool_agent/")}
    files = wheel_files(agent["wheel"])
    assert {name for name in files if ".dist-info/" not in name} == agent_files
    assert "taskpool_agent-0.1.0.dist-info/licenses/LICENSE" in files

    sources = sdist_files(agent["sdist"])
    assert sources == agent_files | {"LICENSE", "README.md", "pyproject.toml"}


def test_the_agent_says_what_it_is_on_the_page_its_index_shows(agent):
    """A device owner's index (or ``pip show``) shows the long description: how to run it."""
    wheel = zipfile.ZipFile(agent["wheel"])
    metadata = wheel.read("taskpool_agent-0.1.0.dist-info/METADATA").decode()
    headers, _, description = metadata.partition("\n\n")
    assert "Description-Content-Type: text/markdown" in headers
    assert "taskpool-agent enroll --server" in description
    assert "taskpool-agent run" in description


def installed_files(wheel: Path) -> set[str]:
    """What installing ``wheel`` puts in site-packages and its scripts directory."""
    files = {name for name in wheel_files(wheel) if ".dist-info/" not in name}
    entry_points = next(
        (name for name in wheel_files(wheel) if name.endswith(".dist-info/entry_points.txt")), None
    )
    if entry_points is not None:
        text = zipfile.ZipFile(wheel).read(entry_points).decode()
        scripts = text.partition("[console_scripts]")[2].split("\n[")[0]
        files |= {
            "bin/" + line.split("=")[0].strip() for line in scripts.splitlines() if "=" in line
        }
    return files


def test_the_two_wheels_own_no_file_in_common(server, agent):
    """Installed side by side, neither may own a file of the other: uninstalling one would
    take it from the other, and installing one would write over the other's."""
    assert sorted(installed_files(server["wheel"]) & installed_files(agent["wheel"])) == []
    assert not any(name.startswith("taskpool_agent/") for name in installed_files(server["wheel"]))
    assert "bin/taskpool-agent" in installed_files(agent["wheel"])


class Environment:
    """A throwaway virtual environment the built wheels are installed in, from the wheel files
    alone (no index). The server's own dependencies (Django and the rest) are the test run's,
    put on ``PYTHONPATH`` for the checks that need them: its site-packages as a plain path, so
    that the checkout's editable installs there (``.pth`` files) are not read."""

    def __init__(self, path: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
        self.path = path
        self.python = path / "bin" / "python"

    def pip(self, *arguments: str) -> None:
        done = subprocess.run(
            [str(self.python), "-m", "pip", "--disable-pip-version-check", *arguments],
            capture_output=True,
            text=True,
            timeout=300,
            env=without_python_path(),
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    def install(self, *wheels: Path) -> None:
        self.pip(
            "install", "--no-index", "--no-deps", "--find-links", str(wheels[0].parent),
            *map(str, wheels),
        )  # fmt: skip

    def uninstall(self, name: str) -> None:
        self.pip("uninstall", "--yes", name)

    def run(self, *command: str, with_dependencies: bool = False) -> str:
        env = without_python_path()
        if with_dependencies:
            env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]
        done = subprocess.run(
            command, cwd=self.path, capture_output=True, text=True, timeout=120, env=env
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    def missing(self, wheel: Path) -> list[str]:
        """The files ``wheel`` installed that are no longer there."""
        site_packages = Path(
            self.run(
                str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
            ).strip()
        )
        return sorted(
            name
            for name in installed_files(wheel)
            if not (self.path / name if name.startswith("bin/") else site_packages / name).exists()
        )


def without_python_path() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


# Loads the app with its URLs (the views, serializers and stores they import) and says where
# the two packages come from (the agent's: nowhere, once it is uninstalled).
SERVER_LOADS = """
import importlib.util, sys, tempfile
import django
from django.conf import settings
settings.configure(
    SECRET_KEY="packaging-test",
    INSTALLED_APPS=[
        "django.contrib.auth", "django.contrib.contenttypes", "rest_framework",
        "django_filters", "drf_spectacular", "taskpool",
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    TASKPOOL={"DATA_DIR": tempfile.mkdtemp()},
    REST_FRAMEWORK={"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"},
)
django.setup()
import taskpool, taskpool.urls
print(taskpool.__file__)
print(importlib.util.find_spec("taskpool_agent"))
"""


def test_uninstalling_either_distribution_leaves_the_other_whole(server, agent, tmp_path):
    """A site with the agent installed too (a server that is also a device) removes one and
    keeps the other working: the server without the agent, the agent without the server."""
    environment = Environment(tmp_path / "venv")
    environment.install(server["wheel"], agent["wheel"])

    environment.uninstall("taskpool-agent")
    assert environment.missing(server["wheel"]) == []
    where, agent_found = environment.run(
        str(environment.python), "-c", SERVER_LOADS, with_dependencies=True
    ).splitlines()
    assert where.startswith(str(environment.path))
    assert agent_found == "None"  # the agent went with its own distribution

    environment.install(agent["wheel"])
    environment.uninstall("taskpool")
    assert environment.missing(agent["wheel"]) == []
    usage = environment.run(str(environment.path / "bin" / "taskpool-agent"), "--help")
    assert "enroll" in usage and "run" in usage
    where = environment.run(
        str(environment.python), "-I", "-c", "import taskpool_agent; print(taskpool_agent.__file__)"
    )
    assert where.startswith(str(environment.path))


def description(wheel: Path) -> str:
    """The long description an index (or ``pip show``) shows: the metadata's body."""
    (name,) = [name for name in wheel_files(wheel) if name.endswith(".dist-info/METADATA")]
    return zipfile.ZipFile(wheel).read(name).decode().partition("\n\n")[2]


@pytest.mark.parametrize("which", ["server", "agent"])
def test_the_description_an_index_shows_has_no_link_into_the_repository(which, server, agent):
    """An index shows the description away from the repository: a link relative to it
    (``docs/fleet.md``, ``LICENSE``) leads nowhere there."""
    text = description({"server": server, "agent": agent}[which]["wheel"])
    targets = re.findall(r"\]\(([^)\s]*)", text) + re.findall(r"^\[[^]]+\]:\s*(\S+)", text, re.M)
    assert [target for target in targets if not re.match(r"[a-z]+:|#", target)] == []
    assert "docs/" in text  # where the documentation is, said in words
