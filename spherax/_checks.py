"""Argument checks shared by every transform: clear errors at construction or call time.

Numeric hyperparameters are range-checked only when they are Python numbers:
under ``optax.inject_hyperparams`` they arrive as traced arrays, and schedules
are callables. Every check takes ``who``, the name of the factory the user
called: a factory built on another one (``adams`` on ``adamsrt``, an RV
optimizer on ``rotational_wrapper``) passes its own name down, so errors name
what the user wrote.

>>> check_range("adamsrt", "b1", 0.9, 0.0, 1.0)
>>> check_range("adamsrt", "b1", 1.0, 0.0, 1.0)
Traceback (most recent call last):
...
ValueError: adamsrt: b1 must be in [0.0, 1.0), got 1.0
>>> check_learning_rate("adams", "0.1")
Traceback (most recent call last):
...
TypeError: adams: learning_rate must be a number, a scalar array or a schedule (a callable of the step count), got '0.1'
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_range",
    "check_beta",
    "check_nonnegative",
    "check_learning_rate",
    "require_params",
]


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


def check_learning_rate(who: str, value: Any, name: str = "learning_rate") -> None:
  """A float ``>= 0``, a real scalar array (traced under ``inject_hyperparams``) or a schedule.

  Raises ``TypeError`` for anything else (a string, ``None``, a vector).
  """
  if callable(value):
    return
  if isinstance(value, numbers.Real) and not isinstance(value, bool):
    check_nonnegative(who, name, value)
    return
  if isinstance(value, (jax.Array, np.ndarray, np.generic)) and np.ndim(value) == 0 and (
      jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)
  ):
    return
  raise TypeError(
      f"{who}: {name} must be a number, a scalar array or a schedule (a callable of "
      f"the step count), got {value!r}"
  )


def is_static_zero(value: Any) -> bool:
  """Whether ``value`` is a Python or NumPy real number equal to 0 (not an array, not
  a tracer): a static zero coefficient whose term an optimizer leaves out of the
  trace. XLA does not fold ``0·x`` (it must keep ``0·inf = nan``), so the term would
  cost a full-size multiply and add; for finite ``x`` the sums are the same.

  >>> is_static_zero(0.0), is_static_zero(1e-4), is_static_zero(jnp.zeros(()))
  (True, False, False)
  """
  return isinstance(value, numbers.Real) and value == 0


def require_params(who: str, params: Any) -> None:
  """Raises ``ValueError`` when ``update`` was called without ``params``."""
  if params is None:
    raise ValueError(f"{who}: update needs params (call update(updates, state, params))")
