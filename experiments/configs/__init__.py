"""Experiment configs: one module per paper protocol, each with ``runs(quick)``.

``PROTOCOLS`` names every module of this package that defines
``runs(quick=False) -> list[ml_collections.ConfigDict]`` (built with
:func:`experiments.configs.base.run`); ``runs(name, quick=False)`` returns that
protocol's run configs. Modules with a results table also define ``METHODS``,
``COLUMNS`` and ``PAPER`` (``{(method, column): top-1 %}``), which
:mod:`experiments.runner` prints next to the measured numbers.

Every run has a stable name, :func:`run_id` (its ``name``, completed with its
``column``, ``method`` and ``seed`` where the name leaves them out), by which
the runner addresses it: unlike a list position it does not shift when a
protocol gains or loses runs. :func:`apply_overrides` applies command-line
``--config.a.b=value`` overrides to a run config.

Example:

>>> from experiments.configs import base
>>> cfg = base.run(method='sgdm', column='c10', seed=2, learning_rate=0.1)
>>> run_id(cfg)
'sgdm/c10/seed2'
>>> cfg = apply_overrides(cfg, {'learning_rate': '0.5', 'schedule.kind': 'cosine',
...                             'hparams': '{"momentum": 0.9}'})
>>> cfg.learning_rate, cfg.schedule.kind, cfg.hparams.momentum
(0.5, 'cosine', 0.9)
"""

from __future__ import annotations

import ast
import importlib
import pkgutil

__all__ = ["PROTOCOLS", "apply_overrides", "module", "run_id", "runs", "select"]

# the order of the tables in the README first, then any other protocol module
_FIRST = (
    "seed001_table2",
    "seed004_tables",
    "seed004_figures",
    "seed000_fig2",
    "seed002_multistep",
    "quick",
)
_NOT_PROTOCOLS = ("base",)


def _discover() -> tuple[str, ...]:
  names = [m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_PROTOCOLS]
  names = [n for n in names if hasattr(importlib.import_module(f"{__name__}.{n}"), "runs")]
  return tuple(n for n in _FIRST if n in names) + tuple(
      sorted(n for n in names if n not in _FIRST))


PROTOCOLS = _discover()


def module(name: str):
  """The protocol module ``name``."""
  if name not in PROTOCOLS:
    raise ValueError(f"unknown protocol {name!r}; known: {PROTOCOLS}")
  return importlib.import_module(f"{__name__}.{name}")


def run_id(cfg) -> str:
  """The stable name of a run: the ``/``-separated parts of ``cfg.name``
  (default ``cfg.method``), followed by ``cfg.method`` and ``cfg.column`` where
  the name does not already contain them, and ``seed<cfg.seed>`` last."""
  seed = f"seed{cfg.get('seed', 0)}"
  parts = [p for p in str(cfg.get("name") or cfg.method).split("/") if p and p != seed]
  for extra in (cfg.method, cfg.get("column", "")):
    if extra and extra not in parts:
      parts.append(extra)
  return "/".join(parts + [seed])


def runs(name: str, quick: bool = False) -> list:
  """The run configs of protocol ``name`` (checked to have distinct :func:`run_id`)."""
  out = module(name).runs(quick=quick)
  ids = [run_id(c) for c in out]
  if len(set(ids)) != len(ids):
    dup = sorted({i for i in ids if ids.count(i) > 1})
    raise ValueError(f"protocol {name!r}: several runs share the names {dup}")
  return out


def select(name: str, quick: bool = False, *, run: str | None = None,
           index: int | None = None) -> list:
  """The runs of protocol ``name``: all, the one whose :func:`run_id` is ``run``,
  or the one at position ``index``; a clear ``ValueError`` for an unknown name or
  an index out of range (listing what exists)."""
  configs = runs(name, quick)
  if run is not None and index is not None:
    raise ValueError("give a run name or an index, not both")
  if run is not None:
    by_id = {run_id(c): c for c in configs}
    if run not in by_id:
      raise ValueError(f"protocol {name!r} has no run {run!r}; its runs: "
                       + ", ".join(by_id))
    return [by_id[run]]
  if index is not None:
    if not 0 <= index < len(configs):
      raise ValueError(f"protocol {name!r}{' --quick' if quick else ''} has {len(configs)} "
                       f"runs (indices 0..{len(configs) - 1}); got index {index}")
    return [configs[index]]
  return configs


def _parse(text: str, current):
  """``text`` as the type of the value it replaces (Python literal syntax for
  numbers, tuples, lists, dicts and None; ``true``/``false`` for booleans)."""
  if isinstance(current, bool):
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
      return True
    if lowered in ("false", "0", "no"):
      return False
    raise ValueError(f"expected a boolean, got {text!r}")
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if isinstance(current, str) or current is None:
      return text  # a bare word: a string
    raise ValueError(f"cannot parse {text!r} as a {type(current).__name__}") from None
  if isinstance(current, str) and not isinstance(value, str):
    return text
  if isinstance(current, float) and isinstance(value, int):
    return float(value)
  return value


def apply_overrides(cfg, overrides: dict[str, str]):
  """A copy of ``cfg`` with ``{'a.b': 'value'}`` applied (each value parsed as
  the type of the value it replaces, see ``_parse``); an unknown key raises."""
  import ml_collections

  out = ml_collections.ConfigDict(cfg.to_dict())
  for key, text in overrides.items():
    *parents, leaf = key.split(".")
    node = out
    for p in parents:
      if p not in node:
        raise KeyError(f"--config.{key}: no config key {p!r}")
      node = node[p]
    if leaf not in node and not parents:
      raise KeyError(f"--config.{key}: no config key {leaf!r} (keys: {sorted(out)})")
    current = node[leaf] if leaf in node else None
    value = _parse(text, current)
    if isinstance(value, dict):
      node[leaf] = ml_collections.ConfigDict(value)
    else:
      node[leaf] = value
  out.lock()
  return out
