"""Test-session setup shared by tests/ and the doctests in spherax/.

Eight host CPU devices, so the sharding tests can build meshes; this has to be
set before jax initialises its backends.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
