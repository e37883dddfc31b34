"""The environment is exactly the committed lock, and the lock satisfies pyproject.toml's ranges."""

from __future__ import annotations

import importlib.metadata
import re
import sysconfig
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "mediascore"


def _lock() -> dict[str, str]:
    """Canonical name -> pinned version, from requirements.lock."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
            assert match, f"requirements.lock: {line!r} is not an exact 'name==version' pin"
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def _installed() -> dict[str, str]:
    """Canonical name -> version of every distribution pip installed into this environment, the project left out.

    Only the environment's site-packages are read, not all of ``sys.path``: Ray puts its vendored
    ``ray/thirdparty_files`` (colorama, ...) on the path once it is imported, and those are Ray's, not ours.
    """
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    found = {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions(path=site)}
    found.pop(PROJECT, None)
    return found


def _same(installed: str, pinned: str) -> bool:
    """``==pinned`` as pip reads it: a pin without a local label (``+cpu``) accepts any local build of it."""
    if "+" in pinned:
        return Version(installed) == Version(pinned)
    return Version(Version(installed).public) == Version(pinned)


def test_every_installed_distribution_is_in_the_lock_at_its_version():
    lock, installed = _lock(), _installed()
    assert sorted(installed.keys() - lock.keys()) == [], "installed but not locked: run `make lock`"
    assert sorted(lock.keys() - installed.keys()) == [], "locked but not installed: run `make install`"
    wrong = {name: (installed[name], lock[name]) for name in lock if not _same(installed[name], lock[name])}
    assert wrong == {}, "installed version != locked version"


def test_the_lock_satisfies_pyproject_ranges():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    lock = _lock()
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is a dependency but not in requirements.lock"
        assert req.specifier.contains(lock[name], prereleases=True), f"lock has {name}=={lock[name]}, not {req}"


def test_torch_is_the_cpu_build_pinned_in_the_makefile():
    makefile = (ROOT / "Makefile").read_text()
    (torch_pin,) = re.findall(r"^TORCH := (\S+)$", makefile, flags=re.M)
    assert _lock()["torch"] == torch_pin
    import torch

    assert torch.__version__.split("+")[0] == torch_pin
