"""Packaging and test-session settings: one version, a changelog entry for it, the
wheel's contents, and the pytest warning filters."""

import pathlib
import re
import tomllib
import warnings

import pytest

import spherax

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_is_pyprojects_and_has_a_changelog_entry():
  version = PYPROJECT["project"]["version"]
  assert spherax.__version__ == version
  changelog = (ROOT / "CHANGELOG.md").read_text()
  assert re.search(rf"^## {re.escape(version)} ", changelog, flags=re.M)
  assert re.search(r"^## Unreleased$", changelog, flags=re.M)


def test_license_is_an_spdx_string_with_its_file():
  assert PYPROJECT["project"]["license"] == "Apache-2.0"
  assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
  assert "Apache License" in (ROOT / "LICENSE").read_text()


def test_wheel_ships_spherax_only():
  # experiments/ is for the checkout; .ci/run also checks the built wheel's files.
  assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == ["spherax*"]


def test_deprecations_from_spherax_are_errors_others_are_shown():
  # `error::DeprecationWarning:spherax` matches the module a warning is attributed
  # to (a regex on the start of its name): spherax and its submodules.
  with pytest.raises(DeprecationWarning, match="from spherax"):
    warnings.warn_explicit("from spherax", DeprecationWarning, "groups.py", 1,
                           module="spherax.groups")
  with pytest.warns(DeprecationWarning, match="from jax"):
    warnings.warn_explicit("from jax", DeprecationWarning, "api.py", 1, module="jax._src.api")
