"""The distributions a site and a device install: built from the files git tracks, as a
release is, and read for what they hold.

A site installs the wheel (or the sdist, which builds it): every module, template,
static file and migration the app loads at run time must be in it, or the installed
site meets an ImportError, a TemplateDoesNotExist or a 404 on its admin's styles that
the editable checkout never shows. Nothing else ships: not the tests, not ``var/``.
The device agent's distribution holds the agent alone, and both carry the licence.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("taskpool/", "taskpool_agent/")

# The PEP 517 hooks, called in the checkout's copy without an isolated environment
# (no index to reach): the test extra installs a setuptools that builds this project.
BUILD = """
import sys
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


def test_the_wheel_holds_every_file_of_the_packages_and_nothing_else(server, package_files):
    files = wheel_files(server["wheel"])
    shipped = {name for name in files if ".dist-info/" not in name}
    assert sorted(package_files - shipped) == []
    assert sorted(shipped - package_files) == []
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


def test_the_sdist_holds_what_builds_the_wheel_and_no_tests(server, package_files, tmp_path):
    files = sdist_files(server["sdist"])
    besides = ["LICENSE", "MANIFEST.in", "README.md", "pyproject.toml"]
    assert sorted(files - package_files) == besides
    assert sorted(package_files - files) == []

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
