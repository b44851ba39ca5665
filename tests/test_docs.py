"""The docs site lists every public name: each name in the ``__all__`` of every public
spherax module is on an API page of docs/ (an ``autosummary`` entry), like optax's
check. Parses the docs sources, so it needs no Sphinx build."""

import importlib
import pathlib
import pkgutil
import re
import types

import spherax

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


def _documented():
  """The objects named by the autosummary entries of docs/*.rst."""
  objects, names = [], []
  for page in sorted(DOCS.glob("*.rst")):
    module, in_summary = None, False
    for line in page.read_text().splitlines():
      if m := re.match(r"\.\. currentmodule:: (\S+)", line):
        module = m[1]
      if line.startswith(".. autosummary::"):
        in_summary = True
        continue
      if in_summary and line and not line.startswith(" "):
        in_summary = False
      entry = line.strip()
      if in_summary and entry and not entry.startswith(":"):
        names.append(f"{module}.{entry}")
  for name in names:
    obj, parts = importlib.import_module("spherax"), name.split(".")
    assert parts[0] == "spherax", name
    for part in parts[1:]:
      assert hasattr(obj, part), f"docs name {name} does not exist"
      obj = getattr(obj, part)
    objects.append(obj)
  return objects


def _public_modules():
  yield spherax
  for info in pkgutil.walk_packages(spherax.__path__, "spherax."):
    if not any(part.startswith("_") for part in info.name.split(".")):
      yield importlib.import_module(info.name)


def test_every_name_in_every_all_is_documented():
  documented = _documented()
  missing = []
  for module in _public_modules():
    for name in getattr(module, "__all__", ()):
      obj = getattr(module, name)
      if isinstance(obj, types.ModuleType):
        continue  # submodules have their own pages and __all__
      if not any(obj is d for d in documented):
        missing.append(f"{module.__name__}.{name}")
  assert not missing, f"add to an API page under docs/: {missing}"


def test_every_page_is_in_the_index():
  index = (DOCS / "index.rst").read_text()
  for page in DOCS.glob("*.rst"):
    if page.stem != "index":
      assert re.search(rf"^   {page.stem}$", index, flags=re.M), page.name
