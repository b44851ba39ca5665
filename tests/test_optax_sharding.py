"""optax's own sharding battery, run against every spherax optimizer (issue 12 point 1).

The test bodies are optax's, from ``optax/_src/sharding_test.py`` as shipped in
optax's wheel (imported, not copied): each ``ShardingTest`` method is
parametrized there over optax's optimizers, and its original function
(``__wrapped__`` of a generated case) is called here with a spherax optimizer
from the registry of ``test_optax_contract.py``:

* ``test_init_with_abstract_input``: ``init`` on a ``jax.ShapeDtypeStruct``;
* ``test_state_sharding_type_init_match_update``: under ``jax.set_mesh`` of an
  8-device mesh with ``AxisType.Explicit`` axes (what ``jax.make_mesh`` gives),
  float16 params ``(2, 8, 4)`` sharded ``P(None, 'x')`` (a reduced axis of the
  default per-output groups): the state's types (shape, dtype, sharding) after
  one eager ``update`` equal those of ``init``;
* ``test_state_sharding_type_preserved_with_jit``: ``init`` and ``update`` give
  the same types with and without ``jax.jit``.

``optax/contrib/_sharding_test.py`` (optax's main branch; not in the 0.2.8
wheel) has these same three bodies over the contrib optimizers, so the cases
here cover it too. ``test_microbatch_with_explicit_sharding`` tests
``optax.microbatching``, not an optimizer, and is not run.

The wheel's bodies skip themselves when ``jax.__version__ < '0.7.2'``, a string
comparison that is true for jax 0.10 (``'0.10.2' < '0.7.2'``); the contrib
copy compares parsed versions. The bodies run here see the same ``jax`` module
with its version string compared as a version (:class:`_Version`).

The root ``conftest.py`` gives the 8 host CPU devices.
"""

import importlib.util
import pathlib
import types

import jax
import pytest
from packaging.version import Version

# optax's sharding battery ships in its wheel from some release after the lowest we
# support (0.2.5 has none; 0.2.8 has it): skip, saying so, where it is absent.
optax_sharding = pytest.importorskip(
    "optax._src.sharding_test",
    reason="this optax wheel ships no optax/_src/sharding_test.py (0.2.8 does)")

_spec = importlib.util.spec_from_file_location(
    "spherax_test_registry", pathlib.Path(__file__).with_name("test_optax_contract.py")
)
contract = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(contract)

TESTS = (
    "test_init_with_abstract_input",
    "test_state_sharding_type_init_match_update",
    "test_state_sharding_type_preserved_with_jit",
)

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs 8 devices (the root conftest sets XLA_FLAGS)"
)


class _Version(str):
  """jax's version string, ordered as a version (``'0.10.2' > '0.7.2'``)."""

  def __lt__(self, other):
    return Version(self) < Version(other)


class _Jax(types.ModuleType):
  """The ``jax`` module as the bodies see it: only ``__version__`` differs."""

  __version__ = _Version(jax.__version__)

  def __getattr__(self, name):
    return getattr(jax, name)


def _optax_body(test: str):
  """optax's undecorated test function (behind its ``_adam`` case)."""
  body = getattr(optax_sharding.ShardingTest, f"{test}_adam").__wrapped__
  return types.FunctionType(
      body.__code__, {**body.__globals__, "jax": _Jax("jax")}, body.__name__)


@pytest.mark.parametrize("test", TESTS)
@pytest.mark.parametrize("name", contract.NAMES)
def test_optax_sharding_battery(name, test):
  case = optax_sharding.ShardingTest(f"{test}_adam")
  _optax_body(test)(case, contract.make(name))
