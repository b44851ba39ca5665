"""Citations a reader can follow: no file of the repository (docstrings, comments, tests,
README and docs lines, notebook cells) cites the project's private notes ("REFERENCE §5",
"REFERENCE.md", files under /work/shared) or papers by a "seed 000"-style number; cite
the paper by authors, title, venue and its own section/equation (docs/references.rst).

The word "seed" for a random seed is fine: only a three-digit number starting with 0
after it ("seed 004", "seeds 000/001", "seed001 Table 2") is a paper id."""

import json
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BANNED = re.compile(r"\bREFERENCE\b|/work/shared|\b[Ss]eeds?\s*0\d\d\b")
SUFFIXES = {".py", ".md", ".rst", ".toml", ".txt", ".cfg", ".ipynb", ""}


def _files():
  try:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    paths = [ROOT / p for p in listed]
  except (OSError, subprocess.CalledProcessError):  # not a git checkout
    paths = [p for p in ROOT.rglob("*") if ".git" not in p.parts]
  here = pathlib.Path(__file__).resolve()
  return [p for p in paths
          if p.is_file() and not p.is_symlink() and p.suffix in SUFFIXES and p != here
          and "_build" not in p.parts]


def _lines(path):
  """(line label, text) pairs; for a notebook, its cells' sources (not outputs)."""
  if path.suffix == ".ipynb":
    cells = json.loads(path.read_text())["cells"]
    for i, cell in enumerate(cells):
      for j, line in enumerate("".join(cell["source"]).splitlines(), 1):
        yield f"cell {i} line {j}", line
  else:
    try:
      text = path.read_text()
    except UnicodeDecodeError:
      return
    for j, line in enumerate(text.splitlines(), 1):
      yield str(j), line


def test_the_pattern_flags_paper_ids_not_random_seeds():
  for bad in ("REFERENCE §5", "see REFERENCE.md", "seed 004 App. J", "seeds 000/001",
              "Seed 002", "seed001 Table 2", "/work/shared/seeds/000_x.txt"):
    assert BANNED.search(bad), bad
  for fine in ("seed 0", "seed=42", "random seed 7", "five seeds", "seed000_fig2",
               "--seed 1", "seeds (0, 1, 2)", "reference code", "_REFERENCE_GRID"):
    assert not BANNED.search(fine), fine


def test_no_file_cites_private_notes_or_seed_numbers():
  offending = [f"{path.relative_to(ROOT)}:{where}: {line.strip()[:100]}"
               for path in _files() for where, line in _lines(path) if BANNED.search(line)]
  assert not offending, "\n".join(offending)
