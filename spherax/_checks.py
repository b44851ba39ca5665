"""Argument checks shared by every transform: clear errors at construction or call time.

Numeric hyperparameters are checked only when they are Python numbers: under
``optax.inject_hyperparams`` they arrive as traced arrays, and schedules are
callables.

>>> check_range("adamsrt", "b1", 0.9, 0.0, 1.0)
>>> check_range("adamsrt", "b1", 1.0, 0.0, 1.0)
Traceback (most recent call last):
...
ValueError: adamsrt: b1 must be in [0.0, 1.0), got 1.0
"""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["check_range", "check_beta", "check_nonnegative", "require_params"]


def check_range(
    who: str,
    name: str,
    value: Any,
    low: float,
    high: float | None = None,
    *,
    low_open: bool = False,
) -> None:
  """Raises ``ValueError`` unless ``low <= value < high`` (``low < value`` if ``low_open``)."""
  if not isinstance(value, numbers.Real) or isinstance(value, bool):
    return
  too_low = value <= low if low_open else not value >= low  # also catches NaN
  too_high = high is not None and not value < high
  if too_low or too_high:
    interval = ("(" if low_open else "[") + f"{low}, " + (f"{high})" if high is not None else "inf)")
    raise ValueError(f"{who}: {name} must be in {interval}, got {value}")


def check_beta(who: str, name: str, value: Any) -> None:
  """A decay rate: ``0 <= value < 1``."""
  check_range(who, name, value, 0.0, 1.0)


def check_nonnegative(who: str, name: str, value: Any) -> None:
  """``value >= 0``."""
  check_range(who, name, value, 0.0)


def require_params(who: str, params: Any) -> None:
  """Raises ``ValueError`` when ``update`` was called without ``params``."""
  if params is None:
    raise ValueError(f"{who}: update needs params (call update(updates, state, params))")
