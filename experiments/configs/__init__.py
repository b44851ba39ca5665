"""Experiment configs: one module per paper protocol, each with ``runs(quick)``.

``PROTOCOLS`` maps a protocol name to its module; ``runs(name, quick=False)``
returns that protocol's list of run configs (``ml_collections.ConfigDict``, see
:mod:`experiments.configs.base`). Modules with a results table also define
``METHODS``, ``COLUMNS`` and ``PAPER`` (``{(method, column): top-1 %}``), which
:mod:`experiments.runner` prints next to the measured numbers.
"""

from __future__ import annotations

import importlib

PROTOCOLS = (
    "seed001_table2",
    "seed004_tables",
    "seed004_figures",
    "seed000_fig2",
    "seed002_multistep",
    "quick",
)


def module(name: str):
  """The protocol module ``name``."""
  if name not in PROTOCOLS:
    raise ValueError(f"unknown protocol {name!r}; known: {PROTOCOLS}")
  return importlib.import_module(f"experiments.configs.{name}")


def runs(name: str, quick: bool = False) -> list:
  """The run configs of protocol ``name``."""
  return module(name).runs(quick=quick)
