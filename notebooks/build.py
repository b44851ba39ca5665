"""Executes every notebook in this folder in place and stores its outputs.

Usage (from anywhere)::

  python notebooks/build.py                 # all notebooks
  python notebooks/build.py 02_spherical_perspective.ipynb

Each notebook runs offline in a fresh ``python3`` kernel whose working directory
is ``notebooks/``; a cell error raises. :data:`TIMEOUT_S` is a safety net against a
hung kernel only (30 minutes for the whole notebook, far beyond any healthy run
even on a loaded machine), not a performance budget: nothing here or in the tests
bounds the notebooks' speed. The executed notebook (with its figures) is written
back to the same file.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

import nbclient
import nbformat

HERE = pathlib.Path(__file__).resolve().parent
TIMEOUT_S = 30 * 60  # safety net for a hung kernel, not a time budget
NOTEBOOKS = sorted(p.name for p in HERE.glob("[0-9][0-9]_*.ipynb"))


def execute(name: str, *, timeout: float = TIMEOUT_S, write: bool = True) -> float:
  """Runs notebook ``name`` top to bottom; returns its wall-clock seconds.

  Raises ``nbclient.exceptions.CellExecutionError`` on a failing cell and
  ``nbclient.exceptions.CellTimeoutError`` when the notebook as a whole runs
  past ``timeout`` seconds (a hung kernel: see :data:`TIMEOUT_S`).
  """
  path = HERE / name
  nb = nbformat.read(path, as_version=4)
  start = time.monotonic()

  def remaining(cell) -> int:
    del cell
    return max(1, int(timeout - (time.monotonic() - start)))

  client = nbclient.NotebookClient(
      nb, timeout_func=remaining, kernel_name="python3",
      resources={"metadata": {"path": str(HERE)}},
  )
  # The kernel runs in notebooks/: put the checkout on its path for `experiments`.
  client.execute(env={**os.environ, "PYTHONPATH": str(HERE.parent)})
  elapsed = time.monotonic() - start
  if write:
    nbformat.write(nb, path)
  return elapsed


def main(argv: list[str]) -> None:
  for name in argv or NOTEBOOKS:
    print(f"{name}: {execute(pathlib.Path(name).name):.1f} s", flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
