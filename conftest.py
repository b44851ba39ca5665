"""Test-session setup shared by tests/ and the doctests in spherax/.

Eight host CPU devices, so the sharding tests can build meshes; this has to be
set before jax initialises its backends. And this checkout on the PYTHONPATH of
subprocesses (the notebooks' kernels run in notebooks/): ``experiments`` is part
of the repository, not of the installed package.
"""

import os

_ROOT = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p)

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
