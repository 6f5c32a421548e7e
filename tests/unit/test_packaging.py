"""Packaging: the declared licence is shipped, the lock pins what is tested, and every supported Python is tested."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
LOCK = ROOT / "requirements.lock"
SUPPORTED = ("3.11", "3.12", "3.13")
# The Apache License 2.0 as published (http://www.apache.org/licenses/LICENSE-2.0.txt, identical to Debian's
# /usr/share/common-licenses/Apache-2.0), hashed over its words so that line endings do not matter.
APACHE_2_0_SHA256 = "0ffddef9e48f8a09aed5caf2d44f7ba1c1be2d9b8e0a6f693b1635b2d5566645"
# A lock line: `name==version` and an optional `; marker`. Comments and blank lines are skipped.
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;]+)\s*(?:;\s*(?P<marker>.+))?$")


def environment(python: str) -> dict[str, str]:
    """Marker environment of a Linux CPython `python` ("3.12")."""
    return {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": "x86_64",
        "extra": "",
    }


def lock_pins() -> dict[str, list[tuple[Version, Marker | None]]]:
    """Lock entries by canonical name; a name appears more than once when the version differs by marker."""
    pins: dict[str, list[tuple[Version, Marker | None]]] = {}
    for raw in LOCK.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{LOCK.name}: not an exact pin (name==version): {raw!r}"
        marker = Marker(match["marker"]) if match["marker"] else None
        pins.setdefault(canonicalize_name(match["name"]), []).append((Version(match["version"]), marker))
    return pins


def pinned(pins: dict[str, list[tuple[Version, Marker | None]]], name: str, python: str) -> list[Version]:
    """The versions the lock installs for `name` on `python`: exactly one when the lock is right."""
    env = environment(python)
    entries = pins.get(canonicalize_name(name), [])
    return [version for version, marker in entries if marker is None or marker.evaluate(env)]


def declared() -> list[Requirement]:
    """Runtime and dev dependencies of pyproject.toml."""
    reqs = [*PROJECT["dependencies"], *PROJECT["optional-dependencies"]["dev"]]
    return [Requirement(r) for r in reqs]


# Item 12: the licence


def test_license_file_is_the_declared_apache_2_0_text() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT.get("license-files") == ["LICENSE"], "the wheel and sdist must ship LICENSE"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    digest = hashlib.sha256(" ".join(text.split()).encode()).hexdigest()
    assert digest == APACHE_2_0_SHA256, "LICENSE is not the unmodified Apache License 2.0 text"


# Item 12: the lock


def test_lock_pins_every_dependency_within_pyproject_ranges_on_every_supported_python() -> None:
    pins = lock_pins()
    problems = []
    for python in SUPPORTED:
        for req in declared():
            if req.marker and not req.marker.evaluate(environment(python)):
                continue
            versions = pinned(pins, req.name, python)
            if len(versions) != 1:
                problems.append(f"Python {python}: {req.name} pinned {len(versions)} times (want 1)")
            elif not req.specifier.contains(versions[0], prereleases=True):
                problems.append(f"Python {python}: {req.name}=={versions[0]} is outside pyproject's {req}")
    assert not problems, "\n".join(problems)


def test_pyproject_keeps_ranges_and_leaves_the_exact_versions_to_the_lock() -> None:
    exact = [str(r) for r in declared() if any(s.operator in {"==", "==="} for s in r.specifier)]
    assert not exact, f"pin exact versions in {LOCK.name}, not in pyproject.toml: {exact}"


def test_this_environment_has_exactly_the_locked_versions_and_the_lock_is_complete() -> None:
    """What bootstrap installed (here: the running venv) is what the lock says, and nothing it needs is unlocked."""
    pins = lock_pins()
    python = "{}.{}".format(*sys.version_info[:2])
    wrong, unlocked = [], set()
    for name in pins:
        versions = pinned(pins, name, python)
        if not versions:
            continue  # not for this platform or Python
        try:
            installed = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name}: locked {versions[0]}, not installed")
            continue
        if Version(installed.version) != versions[0]:
            wrong.append(f"{name}: locked {versions[0]}, installed {installed.version}")
        for dep in map(Requirement, installed.requires or []):
            if (dep.marker is None or dep.marker.evaluate({"extra": ""})) and not pinned(pins, dep.name, python):
                unlocked.add(f"{dep.name} (needed by {name})")
    assert not wrong, f"re-run scripts/bootstrap.sh, or regenerate {LOCK.name} (see the script): {wrong}"
    assert not unlocked, f"{LOCK.name} misses dependencies: {sorted(unlocked)}"


# Item 13: Python 3.11-3.13


def test_requires_python_admits_exactly_the_supported_versions() -> None:
    spec = SpecifierSet(PROJECT["requires-python"])
    for python in SUPPORTED:
        assert spec.contains(f"{python}.0") and spec.contains(f"{python}.99"), f"requires-python excludes {python}"
    assert not spec.contains("3.10.99"), "3.10 is not tested"
    assert not spec.contains("3.14.0"), "3.14 is not tested (the lock is resolved for <3.14)"
    classified = {c.rsplit(" :: ", 1)[1] for c in PROJECT["classifiers"] if re.fullmatch(r".* :: 3\.\d+", c)}
    assert classified == set(SUPPORTED)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_test_runs_unit_and_agent_tests_on_3_12_and_3_13() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONS_EXTRA", "MAKEFLAGS", "MFLAGS"}}
    plan = subprocess.run(
        ["make", "--no-print-directory", "-n", "test"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    # test-pythons: for each version, bootstrap its venv and run the fast tests with it
    loop = re.search(r"for v in (?P<versions>[\d. ]+); do(?P<body>.*?)done", plan, re.DOTALL)
    assert loop, f"`make test` runs no per-version loop:\n{plan}"
    assert loop["versions"].split() == ["3.12", "3.13"]
    assert "PYTHON_VERSION=$v scripts/bootstrap.sh" in loop["body"]
    assert ".venv-$v/bin/python -m pytest -q -m 'not integration and not slow' tests/unit tests/agents" in loop["body"]
    # the whole suite still runs on the main venv, last
    assert plan.rstrip().splitlines()[-1] == ".venv/bin/python -m pytest -q"
